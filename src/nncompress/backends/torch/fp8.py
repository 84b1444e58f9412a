"""The PyTorch FP8 fake quantizer of ``quantize(mode=FP8_E4M3 | FP8_E5M2)``.

``forward`` is ``numerics.fp8.fake_convert``: ``x * scale`` clamped to the format's largest value,
cast to ``torch.float8_e4m3fn`` / ``torch.float8_e5m2`` and back, divided by ``scale`` (OpenVINO's
FakeConvert). Weights quantizers recompute on every call (no cache), which keeps the module a plain
function of its input for tracing and export.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nncompress.graph.edits import FakeConvertParams
from nncompress.numerics.fp8 import fake_convert


class FP8Quantizer(nn.Module):
    """FP8 fake conversion, per tensor (``axis`` None) or per channel on ``axis``."""

    def __init__(self, params: FakeConvertParams):
        super().__init__()
        self.destination = params.destination
        self.axis = params.axis
        self.register_buffer("scale", torch.tensor(np.asarray(params.scale, dtype=np.float32)))
        self.register_buffer("shift", torch.tensor(np.asarray(params.shift, dtype=np.float32)))
        self.on_constant = False

    def _shaped(self, value: torch.Tensor, ndim: int) -> torch.Tensor:
        if self.axis is None:
            return value
        shape = [1] * ndim
        shape[self.axis % ndim] = -1
        return value.reshape(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self._shaped(self.scale, x.ndim)
        shift = self._shaped(self.shift, x.ndim) if bool(torch.any(self.shift != 0)) else None
        y = fake_convert(x.float(), scale, shift, self.destination)
        return y if y.dtype is x.dtype else y.to(x.dtype)

    def extra_repr(self) -> str:
        granularity = "per-tensor" if self.axis is None else f"per-channel axis {self.axis}"
        return f"{self.destination}, {granularity}"
