"""Fake-quantizer modules in pure PyTorch (no compiled extension).

Forward: the integer-grid form of FakeQuantize, computed by ``nncompress.numerics.fake_quant`` (the
function behind ``numerics.qparams.fake_quantize``, as ONNX QuantizeLinear→DequantizeLinear computes it):
``q = clamp(round(x / scale) + zero_point, level_low, level_high)``, ``y = (q - zero_point) * scale``,
with ``scale``/``zero_point`` from ``numerics.qparams.scale_zero_point``.

Without autograd (``torch.no_grad()`` or nothing requiring gradients) the same values are computed in
one temporary, and weight quantizers keep their result until the weight or the range changes (one
quantized copy of each weight in memory; ``strip`` bakes the weights instead).

Backward: straight-through rounding (``round`` has gradient 1), so inputs inside the range get
gradient 1 and inputs outside get 0; ``scale`` gets the LSQ derivative (``round(x/s) - x/s`` inside,
the clamped level outside). Ranges live in ``nn.Parameter``s created with ``requires_grad=False``
(PTQ); set ``requires_grad`` to train them (quantization-aware training):

- ``SymmetricQuantizer`` (zero point 0): ``scale``. Its range is ``[level_low, level_high] · scale``.
- ``AsymmetricQuantizer``: ``scale`` and ``zero_point`` (rounded with a straight-through estimator);
  ``input_low``/``input_range`` give the equivalent FakeQuantize range.

Traced for conversion (``torch.jit.trace`` as ``ov.convert_model(q, example_input=x)`` does,
``torch.export.export``, ``torch.onnx.export(dynamo=True)``) a quantizer is one standard op,
``torch.fake_quantize_per_{tensor,channel}_affine`` on its grid (FakeQuantize in OpenVINO), with no
cache: the traced graph is the same on every call. Under ``torch.compile`` the eager form runs (its
gradients train the ranges), without the weight cache.

During the TorchScript ``torch.onnx.export`` an activation quantizer emits
``torch.fake_quantize_per_{tensor,channel}_affine``
(written as QuantizeLinear/DequantizeLinear; a Clip first when the grid is narrower than int8/uint8)
and a weight quantizer an int8/uint8 constant followed by DequantizeLinear.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from torch import nn

from nncompress.errors import UnsupportedBackendError
from nncompress.graph.edits import FakeQuantParams
from nncompress.numerics.fake_quant import fake_quantize as grid_fake_quantize
from nncompress.numerics.fake_quant import quantize_levels
from nncompress.numerics.qparams import scale_zero_point
from nncompress.numerics.xp import round_ste

TINY = float(np.finfo(np.float32).tiny)
# quantized weights for inference (no autograd), per weight quantizer; not part of state_dict or copies
_WEIGHT_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, level_low: int,
                  level_high: int) -> torch.Tensor:
    """Quantize-dequantize float32 ``x`` on the integer grid with a straight-through gradient."""
    return grid_fake_quantize(x, scale, zero_point, level_low, level_high, ste=True)


def is_tracing() -> bool:
    """Whether the model runs to be traced (``torch.jit.trace``, ``torch.export``, ``torch.compile``, the
    ONNX exporters) rather than eagerly: traced code must be the same on every call."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


def _channel_shape(ndim: int, axis: int | None) -> tuple[int, ...]:
    if axis is None:
        return ()
    shape = [1] * ndim
    shape[axis] = -1
    return tuple(shape)


def _frozen(values) -> nn.Parameter:
    return nn.Parameter(torch.tensor(np.asarray(values, dtype=np.float32)), requires_grad=False)


class FakeQuantizer(nn.Module):
    """Base class: integer grid ``[level_low, level_high]``, per-tensor (``axis`` None) or per channel."""

    def __init__(self, levels: int, level_low: int, level_high: int, axis: int | None, signed: bool, narrow: bool):
        super().__init__()
        self.levels = int(levels)
        self.level_low, self.level_high = int(level_low), int(level_high)
        self.axis = axis
        self.signed, self.narrow = bool(signed), bool(narrow)
        self.on_constant = False  # set for weight quantizers: export writes an integer constant

    def grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero_point) as float32 tensors of shape [] or [C]."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export() and not torch.compiler.is_compiling():
            return self._export_forward(x)  # TorchScript ONNX exporter: QuantizeLinear/DequantizeLinear
        if torch.jit.is_tracing() or torch.compiler.is_exporting():  # to convert: not torch.compile's training
            return self._traced_forward(x)
        scale, zero_point = self.grid()
        shape = _channel_shape(x.ndim, self.axis)
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
        if not isinstance(self, AsymmetricQuantizer):
            zero_point = None  # a symmetric grid adds no zero point
        value = x if x.dtype is torch.float32 else x.float()
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())):
            y = fake_quantize(value, scale, zero_point, self.level_low, self.level_high)
        elif self.on_constant and not torch.compiler.is_compiling():
            y = self._cached(x, value, scale, zero_point)
        else:
            y = grid_fake_quantize(value, scale, zero_point, self.level_low, self.level_high)
        return y if y.dtype is x.dtype else y.to(x.dtype)

    def _cached(self, x: torch.Tensor, value, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
        """The quantized weight, recomputed only when the weight or the range changed (inference).

        The cache holds the weight object weakly: a constant computed afresh in each forward is a new
        object every time and never hits a stale entry.
        """
        versions = (x._version, x.dtype, x.device) + tuple((p.data_ptr(), p._version) for p in self.parameters())
        cached = _WEIGHT_CACHE.get(self)
        if cached is not None and cached[0]() is x and cached[1] == versions:
            return cached[2]
        y = grid_fake_quantize(value, scale, zero_point, self.level_low, self.level_high)
        _WEIGHT_CACHE[self] = (weakref.ref(x), versions, y)
        return y

    def params(self) -> FakeQuantParams:
        """The equivalent FakeQuantize range as ``FakeQuantParams``."""
        scale, zero_point = (t.detach().cpu().numpy().astype(np.float32) for t in self.grid())
        low = (self.level_low - zero_point) * scale
        high = (self.level_high - zero_point) * scale
        return FakeQuantParams(low, high, self.levels, self.axis, self.signed, self.narrow)

    def integers(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(int8/uint8 levels, scale, zero point) of ``values``: what ``forward`` dequantizes."""
        scale, zero_point = (t.detach().cpu().numpy().astype(np.float32) for t in self.grid())
        return integer_levels(values, scale, zero_point, self.level_low, self.level_high, self.axis)

    def _traced_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same grid as one standard op, ``torch.fake_quantize_per_{tensor,channel}_affine``, for
        ``torch.jit.trace`` (``ov.convert_model``) and ``torch.export``: no cache, no Python-side state,
        and converters turn it into FakeQuantize / QuantizeLinear→DequantizeLinear. Its rounding
        (``x * (1/scale)``) can differ from the eager ``x / scale`` by one step at exact ties."""
        scale, zero_point = self.grid()
        zero_t = zero_point.round().to(torch.int32)
        y = x if x.dtype is torch.float32 else x.float()
        if self.axis is None:
            y = torch.fake_quantize_per_tensor_affine(y, scale, zero_t, self.level_low, self.level_high)
        else:
            axis = self.axis % x.ndim
            y = torch.fake_quantize_per_channel_affine(y, scale, zero_t, axis, self.level_low, self.level_high)
        return y if y.dtype is x.dtype else y.to(x.dtype)

    def _export_forward(self, x: torch.Tensor) -> torch.Tensor:
        """QuantizeLinear/DequantizeLinear form of the quantizer for the ONNX exporter."""
        scale, zero_point = (t.detach().float() for t in self.grid())
        return export_qdq(x, scale, zero_point, self.level_low, self.level_high, self.axis, self.on_constant)

    def extra_repr(self) -> str:
        axis = "per-tensor" if self.axis is None else f"axis={self.axis}"
        return f"levels={self.levels}, grid=[{self.level_low}, {self.level_high}], {axis}"


class SymmetricQuantizer(FakeQuantizer):
    """Zero point 0; ``scale`` (the grid step) is the trainable parameter."""

    def __init__(self, scale, levels: int, level_low: int, level_high: int, axis: int | None = None,
                 signed: bool = True, narrow: bool = False):
        super().__init__(levels, level_low, level_high, axis, signed, narrow)
        self.scale = _frozen(scale)

    def grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = torch.clamp_min(self.scale.abs(), TINY)
        return scale, torch.zeros_like(scale)


class AsymmetricQuantizer(FakeQuantizer):
    """``scale`` and ``zero_point`` (integer-valued, rounded straight-through) are trainable."""

    def __init__(self, scale, zero_point, levels: int, level_low: int, level_high: int, axis: int | None = None,
                 signed: bool = False, narrow: bool = False):
        super().__init__(levels, level_low, level_high, axis, signed, narrow)
        self.scale = _frozen(scale)
        self.zero_point = _frozen(zero_point)

    def grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = torch.clamp_min(self.scale.abs(), TINY)
        zero_point = torch.clamp(round_ste(self.zero_point), self.level_low, self.level_high)
        return scale, zero_point

    @property
    def input_low(self) -> torch.Tensor:
        scale, zero_point = self.grid()
        return (self.level_low - zero_point) * scale

    @property
    def input_range(self) -> torch.Tensor:
        return (self.level_high - self.level_low) * self.grid()[0]


def integer_levels(values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, level_low: int, level_high: int,
                   axis: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int8/uint8 levels, scale, zero point) of ``values`` on ``[level_low, level_high]`` (scale and
    zero point of shape [] or [C] over ``axis``)."""
    shape = _channel_shape(values.ndim, axis)
    q = quantize_levels(values, scale.reshape(shape), zero_point.reshape(shape), level_low, level_high)
    dtype = np.int8 if level_low < 0 else np.uint8
    return q.astype(dtype), scale, zero_point.astype(dtype)


def export_qdq(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, level_low: int, level_high: int,
               axis: int | None, on_constant: bool) -> torch.Tensor:
    """The ONNX form of fake quantization on ``[level_low, level_high]`` (``scale``/``zero_point`` of shape
    [] or [C] over ``axis``): QuantizeLinear→DequantizeLinear, a Clip first when the grid is narrower
    than int8/uint8; ``on_constant`` (a weight): an int8/uint8 constant followed by DequantizeLinear."""
    dtype_low, dtype_high = (-128, 127) if level_low < 0 else (0, 255)
    if level_low < dtype_low or level_high > dtype_high:
        raise UnsupportedBackendError(
            f"ONNX QuantizeLinear export supports at most 8-bit grids; this quantizer's grid is "
            f"[{level_low}, {level_high}]. Keep it in fake-quantize form or use 8 bits"
        )
    shape = _channel_shape(x.ndim, axis)
    axis = None if axis is None else axis % x.ndim
    if on_constant:  # a weight: integer constant + DequantizeLinear
        arrays = (x.detach().float().cpu().numpy(), scale.cpu().numpy(), zero_point.cpu().numpy())
        q, scale, zero_point = integer_levels(*arrays, level_low, level_high, axis)
        y = DequantizeConstant.apply(*(torch.from_numpy(a) for a in (q, scale, zero_point)), axis)
        return y if y.dtype is x.dtype else y.to(x.dtype)
    y = x if x.dtype is torch.float32 else x.float()
    if (level_low, level_high) != (dtype_low, dtype_high):  # narrower grid: clip first
        low = ((level_low - zero_point) * scale).reshape(shape)
        high = ((level_high - zero_point) * scale).reshape(shape)
        y = torch.minimum(torch.maximum(y, low), high)
    zero_t = zero_point.round().to(torch.int32)
    if axis is None:
        y = torch.fake_quantize_per_tensor_affine(y, scale, zero_t, dtype_low, dtype_high)
    else:
        y = torch.fake_quantize_per_channel_affine(y, scale, zero_t, axis, dtype_low, dtype_high)
    return y if y.dtype is x.dtype else y.to(x.dtype)


def quantizer_from_params(params: FakeQuantParams) -> FakeQuantizer:
    """The quantizer module computing exactly ``numerics.qparams.fake_quantize(., params)``."""
    scale, zero_point, level_low, level_high = scale_zero_point(params)
    common = (params.levels, level_low, level_high, params.axis, params.signed, params.narrow)
    if not np.any(zero_point):
        return SymmetricQuantizer(scale, *common)
    return AsymmetricQuantizer(scale, zero_point.astype(np.float32), *common)


class Multiply(nn.Module):
    """Multiplies its input by a constant ``scale`` (SmoothQuant's activation rescaling)."""

    def __init__(self, scale):
        super().__init__()
        self.register_buffer("scale", torch.tensor(np.asarray(scale, dtype=np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype)


class Replace(nn.Module):
    """Returns a stored constant instead of its input (a replaced weight or bias that is shared)."""

    def __init__(self, value):
        super().__init__()
        self.register_buffer("value", torch.tensor(np.asarray(value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value.to(dtype=x.dtype, device=x.device)


class DequantizeConstant(torch.autograd.Function):
    """``(q - zero_point) * scale`` of an integer constant; exports as one ONNX DequantizeLinear."""

    @staticmethod
    def forward(ctx, q, scale, zero_point, axis):
        shape = _channel_shape(q.ndim, axis)
        return (q.float() - zero_point.float().reshape(shape)) * scale.reshape(shape)

    @staticmethod
    def symbolic(g, q, scale, zero_point, axis):
        if axis is None:
            return g.op("DequantizeLinear", q, scale, zero_point)
        return g.op("DequantizeLinear", q, scale, zero_point, axis_i=axis)
