"""FP8 quantization (``quantize(mode=FP8_E4M3 | FP8_E5M2)``): OpenVINO FakeConvert semantics, once,
for numpy arrays and torch tensors.

``y = (fp8(x * scale - shift) + shift) / scale`` where ``fp8`` rounds to the nearest value of the
format (ties to even) and saturates at its largest finite value (448 for E4M3, 57344 for E5M2).
Parameters (reference section 1.3): ``scale = fp8_max / max(|low|, |high|, eps)``; a per-tensor
activation scale is halved (headroom for values beyond the calibrated range); ``shift = 0``.
ONNX writes the same quantizer as QuantizeLinear/DequantizeLinear with ``y_scale = 1 / scale`` and a
float8 zero point.
"""

from __future__ import annotations

import numpy as np

from nncompress.numerics import grids, xp
from nncompress.numerics.xp import Array

DESTINATIONS = ("f8e4m3", "f8e5m2")
FP8_MAX = {"f8e4m3": grids.E4M3_MAX, "f8e5m2": grids.E5M2_MAX}
EPS = np.float32(2.0**-30)


def check_destination(destination: str) -> str:
    if destination not in DESTINATIONS:
        raise ValueError(f"FP8 destination type must be one of {DESTINATIONS}; got {destination!r}")
    return destination


def fp8_scale(low: np.ndarray, high: np.ndarray, destination: str, per_tensor_activation: bool) -> np.ndarray:
    """The FakeConvert scale of a calibrated range (float32, the shape of ``low``)."""
    amax = np.maximum(np.abs(np.asarray(low, np.float32)), np.abs(np.asarray(high, np.float32)))
    scale = np.float32(FP8_MAX[check_destination(destination)]) / np.maximum(amax, EPS)
    return (scale * np.float32(0.5) if per_tensor_activation else scale).astype(np.float32)


def fp8_codes(values: np.ndarray, destination: str) -> np.ndarray:
    """The FP8 bit patterns (uint8) of already scaled ``values`` (round half to even, saturating)."""
    nearest = grids.nearest_e4m3 if check_destination(destination) == "f8e4m3" else grids.nearest_e5m2
    return nearest(np.asarray(values, np.float32))


def fp8_round(values: Array, destination: str) -> Array:
    """``values`` rounded to the FP8 format (float32; saturating at the largest finite value)."""
    if xp.is_torch(values):
        import torch

        dtype = torch.float8_e4m3fn if destination == "f8e4m3" else torch.float8_e5m2
        limit = FP8_MAX[destination]
        return values.clamp(-limit, limit).to(dtype).to(values.dtype)
    levels = grids.E4M3_LEVELS if destination == "f8e4m3" else grids.E5M2_LEVELS
    return levels[fp8_codes(values, destination)]


def fake_convert(x: Array, scale: Array, shift: Array | None, destination: str) -> Array:
    """``(fp8(x * scale - shift) + shift) / scale`` (``scale``/``shift`` broadcast against ``x``)."""
    scaled = x * scale
    if shift is not None:
        scaled = scaled - shift
    rounded = fp8_round(scaled, check_destination(destination))
    if shift is not None:
        rounded = rounded + shift
    return rounded / scale
