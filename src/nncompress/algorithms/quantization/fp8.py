"""FP8 quantization (``quantize(mode=FP8_E4M3 | FP8_E5M2)``): the INT8 placement and calibrated ranges,
with every quantizer turned into an FP8 fake conversion (``graph.edits.FakeConvertParams``).

Scales follow the reference (``numerics.fp8.fp8_scale``): ``fp8_max / max|range|``, halved for
per-tensor activations; shift 0. Weights are per output channel as in INT8 mode.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nncompress.graph.edits import FakeConvertParams, FakeQuantParams, QuantizeActivation, QuantizeWeight
from nncompress.numerics.fp8 import fp8_scale


def fake_convert_params(params: FakeQuantParams, destination: str, activation: bool) -> FakeConvertParams:
    """The FP8 parameters of a calibrated quantizer range."""
    scale = fp8_scale(params.low, params.high, destination, activation and params.axis is None)
    return FakeConvertParams(scale, np.zeros_like(scale), destination, params.axis)


def fake_convert_edits(edits: list, activations: str, weights: str) -> list:
    """``edits`` with each quantizer's range replaced by FP8 parameters (``activations``/``weights``:
    the FP8 formats, 'f8e4m3' or 'f8e5m2'); other edits unchanged."""
    converted = []
    for edit in edits:
        if isinstance(edit, QuantizeActivation) and isinstance(edit.params, FakeQuantParams):
            edit = dataclasses.replace(edit, params=fake_convert_params(edit.params, activations, True))
        elif isinstance(edit, QuantizeWeight) and isinstance(edit.params, FakeQuantParams):
            edit = dataclasses.replace(edit, params=fake_convert_params(edit.params, weights, False))
        converted.append(edit)
    return converted
