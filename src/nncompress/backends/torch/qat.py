"""Trainable quantizers for quantization-aware training (QAT), pure PyTorch, with NNCF 2.x's state.

State-dict names are NNCF 2.x's, so an NNCF checkpoint's quantizer tensors load one to one:
``SymmetricQATQuantizer`` has the parameter ``scale`` (the range bound; ``log(scale)`` with
``logarithm_scale``) and the buffer ``signed_tensor``; ``AsymmetricQATQuantizer`` the parameters
``input_low`` and ``input_range`` (``log`` of the range with ``logarithm_scale``); both the buffers
``_num_bits`` and ``enabled``. Per-tensor parameters have shape [1]; per-channel ones [C, 1, ...] for
weights (channel axis 0) and [1, C, 1, ...] for activations (axis 1), or C on any given axis.

The formulas are ``numerics.qat``'s: grids, zero-point alignment (computed without gradient; its
backward is the identity), forward and NNCF's gradients in one ``torch.autograd.Function``:
``dx = g`` inside the range and 0 outside (straight-through), ``d range = Σ g·(in·(y-x)/R + above +
alpha·below)`` with ``alpha = L/H`` (symmetric) or 0, ``d input_low = Σ g·(above + below)``; the
chain through ``|·| + eps`` (sign) or ``exp`` (log storage) is autograd's. For a **signed symmetric**
quantizer the in-range term ``(y-x)/R`` (``R = scale·(1-L/H)``) is about **half** the exact
straight-through derivative ``(y-x)/scale``: NNCF trains with it and so does this module.

Inputs of any float dtype are quantized in float32 and returned in their own dtype; everything stays
on the input's device (no host synchronisation in forward or backward). During ``torch.onnx.export``
an enabled quantizer emits standard QuantizeLinear/DequantizeLinear (a weight: an int8/uint8 constant
and DequantizeLinear); only 8-bit quantizers export, and a half-range (overflow fix) weight exports on
the full int8 grid with the same step (its values use half of it).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nncompress.errors import CalibrationError, UnsupportedBackendError, ValidationError
from nncompress.graph.edits import FakeQuantParams
from nncompress.numerics import qat

from .fake_quantize import export_qdq

_STATE_BUFFERS = ("_num_bits", "enabled", "signed_tensor")


class _QATFakeQuantize(torch.autograd.Function):
    """y = fake_quantize(x); gradients for ``x``, ``span_param`` (d range) and ``low_param`` (d input_low).

    ``step``/``zero_point``/``low``/``span`` are the (detached) grid; ``span_param``/``low_param`` the
    tensors the range gradients go to (``low_param`` None for a symmetric quantizer).
    """

    @staticmethod
    def forward(ctx, x, span_param, low_param, step, zero_point, low, span, level_low, level_high, alpha):
        value = x if x.dtype is torch.float32 else x.float()
        y = qat.fake_quantize(value, step, zero_point, level_low, level_high)
        y = y if y.dtype is x.dtype else y.to(x.dtype)
        ctx.save_for_backward(x, y, low, span)
        ctx.alpha, ctx.shape, ctx.has_low = alpha, span_param.shape, low_param is not None
        ctx.param_dtype = span_param.dtype
        return y

    @staticmethod
    def backward(ctx, g):
        x, y, low, span = ctx.saved_tensors
        x, y, g32 = (t if t.dtype is torch.float32 else t.float() for t in (x, y, g))
        dx, d_low, d_range = qat.range_gradients(x, y, g32, low, span, ctx.alpha, ctx.shape)
        dx = dx if dx.dtype is g.dtype else dx.to(g.dtype)
        d_range, d_low = (t if t.dtype is ctx.param_dtype else t.to(ctx.param_dtype) for t in (d_range, d_low))
        return (dx if ctx.needs_input_grad[0] else None, d_range, d_low if ctx.has_low else None,
                None, None, None, None, None, None, None)


def _load_pre_hook(module, state_dict, prefix, *args) -> None:
    """Before a state dict loads: fit [] / [1] shape differences, mirror the buffers into attributes, and
    mark the quantizer initialized when its range parameters are in the state dict."""
    for name, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
        key = prefix + name
        value = state_dict.get(key)
        if isinstance(value, torch.Tensor) and value.shape != tensor.shape and value.numel() == tensor.numel():
            state_dict[key] = value.reshape(tensor.shape)
    module._read_state({name: state_dict[prefix + name] for name in _STATE_BUFFERS if prefix + name in state_dict})
    if any(prefix + name in state_dict for name, _ in module.named_parameters(recurse=False)):
        module.initialized = True


class BaseQATQuantizer(nn.Module):
    """Shared state and behaviour: bits, grid, enable/disable, range init, export."""

    symmetric: bool = True

    def __init__(self, num_bits: int = 8, *, shape: tuple[int, ...] = (1,), axis: int | None = None,
                 is_weights: bool = False, narrow_range: bool = False, half_range: bool = False,
                 logarithm_scale: bool = False):
        super().__init__()
        if int(num_bits) < (3 if half_range else 2):
            raise ValidationError(f"num_bits must be at least {3 if half_range else 2}; got {num_bits}")
        self.register_buffer("_num_bits", torch.tensor([int(num_bits)], dtype=torch.int32))
        self.register_buffer("enabled", torch.tensor([1], dtype=torch.int32))
        self.num_bits, self._enabled = int(num_bits), True
        self.shape, self.axis, self.is_weights = tuple(shape), axis, bool(is_weights)
        self.narrow_range, self.half_range = bool(narrow_range), bool(half_range)
        self.logarithm_scale = bool(logarithm_scale)
        self.initialized = False
        self._collector = None
        self._register_load_state_dict_pre_hook(_load_pre_hook, with_module=True)

    # --- grid -----------------------------------------------------------------------------------
    @property
    def levels(self) -> tuple[int, int]:
        """(L, H): the training grid."""
        raise NotImplementedError

    def grid(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """(step, zero point or None, lo, R) of the current parameters, detached, in the parameters' shape."""
        raise NotImplementedError

    def _read_state(self, values: dict[str, torch.Tensor]) -> None:
        if "_num_bits" in values:
            self.num_bits = int(values["_num_bits"].reshape(-1)[0])
        if "enabled" in values:
            self._enabled = bool(values["enabled"].reshape(-1)[0])

    # --- forward --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._collector is not None:
            self._collector.update(x.detach())
            return x
        if not self._enabled:
            return x
        if torch.onnx.is_in_onnx_export():
            return self._export_forward(x)
        return self._quantize(x)

    def _quantize(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --- enable / disable -----------------------------------------------------------------------
    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def enable(self) -> None:
        self._enabled = True
        self.enabled.fill_(1)

    def disable(self) -> None:
        self._enabled = False
        self.enabled.fill_(0)

    # --- range initialisation -------------------------------------------------------------------
    def begin_range_init(self, collector) -> None:
        """Following forwards pass their input through unchanged and feed ``collector.update``."""
        self._collector = collector

    def end_range_init(self) -> None:
        """Stop collecting and set the range from ``collector.result()`` (``apply_range``)."""
        collector, self._collector = self._collector, None
        if collector is None:
            raise CalibrationError("end_range_init called without begin_range_init")
        self.apply_range(*collector.result())

    def apply_range(self, low, high) -> None:
        """Set the parameters from collected minima/maxima (scalars, or one value per channel)."""
        low, high = (self._as_param_shape(v, what) for v, what in ((low, "low"), (high, "high")))
        bad = ~(np.isfinite(low) & np.isfinite(high))
        if bad.any():
            raise CalibrationError(
                f"range initialisation of a {type(self).__name__} saw no finite value for "
                f"{int(bad.sum())} of {bad.size} channel(s) (low={low.ravel()[:4]}, high={high.ravel()[:4]})"
            )
        with torch.no_grad():
            self._apply_range(low, high)
        self.initialized = True

    def _apply_range(self, low: np.ndarray, high: np.ndarray) -> None:
        raise NotImplementedError

    def _as_param_shape(self, value, what: str) -> np.ndarray:
        if isinstance(value, torch.Tensor):
            value = value.detach().float().cpu().numpy()
        value = np.asarray(value, dtype=np.float32)
        if value.size != int(np.prod(self.shape)):
            raise ValidationError(
                f"range {what} has {value.size} value(s); this quantizer has parameter shape {self.shape}"
            )
        return value.reshape(self.shape)

    def _store(self, parameter: nn.Parameter, magnitude: np.ndarray) -> None:
        value = torch.from_numpy(np.ascontiguousarray(magnitude, dtype=np.float32))
        parameter.copy_(qat.stored_magnitude(value, self.logarithm_scale))

    # --- export ---------------------------------------------------------------------------------
    def to_fake_quant_params(self, exported: bool = True) -> FakeQuantParams:
        """The exported grid as ``FakeQuantParams`` (a half-range grid doubled, the step unchanged).

        A half-range weight quantized on the exported grid equals the trained one only after clamping to
        the training range (as ``forward`` does: bake weights through it); ``exported=False`` gives the
        training grid itself.
        """
        step, zero_point, _, _ = self.grid()
        step = step.float().cpu().numpy().reshape(self._flat_shape())
        zero = 0.0 if zero_point is None else zero_point.float().cpu().numpy().reshape(self._flat_shape())
        level_low, level_high = qat.export_level_range(*self.levels, self.half_range and exported)
        low = ((level_low - zero) * step).astype(np.float32)
        high = ((level_high - zero) * step).astype(np.float32)
        levels = level_high - level_low + 1
        narrow = levels == 2**self.num_bits - 1
        return FakeQuantParams(low, high, levels, self.axis, level_low < 0, narrow)

    def _flat_shape(self) -> tuple[int, ...]:
        return () if self.axis is None else (-1,)

    def _export_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_bits != 8:
            raise UnsupportedBackendError(
                f"ONNX QuantizeLinear/DequantizeLinear export supports 8-bit quantizers only; this "
                f"{type(self).__name__} has num_bits={self.num_bits}. Train with 8 bits to export to ONNX"
            )
        step, zero_point, _, _ = self.grid()
        step = step.float().reshape(self._flat_shape())
        zero = torch.zeros_like(step) if zero_point is None else zero_point.float().reshape(self._flat_shape())
        return export_qdq(x, step, zero, *self.levels, self.axis, self.is_weights)

    def extra_repr(self) -> str:
        axis = "per-tensor" if self.axis is None else f"axis={self.axis}"
        flags = [f for f in ("narrow_range", "half_range", "logarithm_scale", "is_weights") if getattr(self, f)]
        return ", ".join([f"bits={self.num_bits}", f"grid={list(self.levels)}", axis, *flags])


class SymmetricQATQuantizer(BaseQATQuantizer):
    """Range ``[scale·L/H, scale]``; trainable ``scale``; ``signed_tensor`` chooses the signed grid."""

    symmetric = True

    def __init__(self, num_bits: int = 8, signed: bool | None = None, **kwargs):
        super().__init__(num_bits, **kwargs)
        self.signedness_to_force = signed
        is_signed = bool(signed) if signed is not None else self.is_weights
        self.register_buffer("signed_tensor", torch.tensor([int(is_signed)], dtype=torch.int32))
        self._signed = is_signed
        self.scale = nn.Parameter(qat.stored_magnitude(torch.ones(self.shape), self.logarithm_scale))

    @property
    def signed(self) -> bool:
        return self._signed

    @signed.setter
    def signed(self, value: bool) -> None:
        self._signed = bool(value)
        self.signed_tensor.fill_(int(value))

    @property
    def levels(self) -> tuple[int, int]:
        return qat.level_range(self.num_bits, self._signed, self.narrow_range, self.half_range)

    def _read_state(self, values: dict[str, torch.Tensor]) -> None:
        super()._read_state(values)
        if "signed_tensor" in values:
            self._signed = bool(values["signed_tensor"].reshape(-1)[0])

    def grid(self):
        with torch.no_grad():
            step, low, span = qat.symmetric_grid(qat.safe_magnitude(self.scale, self.logarithm_scale), *self.levels)
        return step, None, low, span

    def _quantize(self, x: torch.Tensor) -> torch.Tensor:
        level_low, level_high = self.levels
        scale = qat.safe_magnitude(self.scale, self.logarithm_scale)
        with torch.no_grad():
            step, low, span = qat.symmetric_grid(scale, level_low, level_high)
        return _QATFakeQuantize.apply(x, scale, None, step, None, low, span, level_low, level_high,
                                      level_low / level_high)

    def _apply_range(self, low: np.ndarray, high: np.ndarray) -> None:
        signed, scale = qat.symmetric_init(low, high, self.signedness_to_force)
        self.signed = signed
        self._store(self.scale, scale)


class AsymmetricQATQuantizer(BaseQATQuantizer):
    """Range ``[input_low, input_low + input_range]`` aligned so 0.0 is a level; grid ``[0, 2^b - 1]``
    (``[0, 2^(b-1) - 1]`` with half range; narrow range is not applied, as in NNCF)."""

    symmetric = False

    def __init__(self, num_bits: int = 8, **kwargs):
        super().__init__(num_bits, **kwargs)
        self.input_low = nn.Parameter(torch.zeros(self.shape))
        self.input_range = nn.Parameter(qat.stored_magnitude(torch.ones(self.shape), self.logarithm_scale))

    @property
    def levels(self) -> tuple[int, int]:
        return qat.level_range(self.num_bits, False, False, self.half_range)

    def grid(self):
        with torch.no_grad():
            span = qat.safe_magnitude(self.input_range, self.logarithm_scale)
            return qat.asymmetric_grid(self.input_low, span, *self.levels)

    def _quantize(self, x: torch.Tensor) -> torch.Tensor:
        level_low, level_high = self.levels
        span_param = qat.safe_magnitude(self.input_range, self.logarithm_scale)
        with torch.no_grad():
            step, zero_point, low, span = qat.asymmetric_grid(self.input_low, span_param, level_low, level_high)
        return _QATFakeQuantize.apply(x, span_param, self.input_low, step, zero_point, low, span,
                                      level_low, level_high, 0.0)

    def _apply_range(self, low: np.ndarray, high: np.ndarray) -> None:
        input_low, input_range = qat.asymmetric_init(low, high)
        self.input_low.copy_(torch.from_numpy(input_low))
        self._store(self.input_range, input_range)


def make_qat_quantizer(*, mode: str, num_bits: int, signed: bool | None, per_channel: bool, axis: int | None,
                       channels: int | None, ndim: int, is_weights: bool, narrow_range: bool, half_range: bool,
                       logarithm_scale: bool) -> BaseQATQuantizer:
    """A QAT quantizer for a tensor of rank ``ndim`` (per channel: ``channels`` values on ``axis``)."""
    if mode not in ("symmetric", "asymmetric"):
        raise ValidationError(f"quantizer mode must be 'symmetric' or 'asymmetric'; got {mode!r}")
    if per_channel:
        if axis is None or channels is None or not -ndim <= axis < ndim:
            raise ValidationError(
                f"a per-channel quantizer needs an axis in [-{ndim}, {ndim}) and a channel count; "
                f"got axis={axis}, channels={channels}, ndim={ndim}"
            )
        shape = [1] * ndim
        shape[axis] = int(channels)
        shape, axis = tuple(shape), axis % ndim
    else:
        shape, axis = (1,), None
    common = dict(shape=shape, axis=axis, is_weights=is_weights, narrow_range=narrow_range,
                  half_range=half_range, logarithm_scale=logarithm_scale)
    if mode == "symmetric":
        return SymmetricQATQuantizer(num_bits, signed=signed, **common)
    return AsymmetricQATQuantizer(num_bits, **common)
