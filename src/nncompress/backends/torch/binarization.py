"""Binarizer hook modules: thin shells over ``numerics.binarization`` (formulas and gradients there).

- ``WeightBinarizer``: on a convolution's weight chain; ``sign'(W)·α`` (XNOR: α per output filter,
  DoReFa: one α) with a straight-through gradient; buffer ``enabled``.
- ``ActivationBinarizer``: on a convolution's input; ``y = S·[x > S·T]`` with the trainable ``scale``
  (``log S``, shape [1]) and ``threshold`` (logits of ``T``, shape [1, C, 1, 1], init 0: ``T = 0.5``);
  buffers ``enabled`` and ``initialized``. Not initialised from data, the first training forward sets
  ``S`` from that batch (the smallest of its top 0.1% values).
- ``BinarizedWeight`` / ``BinarizedActivation``: what ``strip`` leaves: the same values, nothing trainable.

In ``torch.onnx.export`` the ±1 structure stays visible with standard ops: a binarized weight is an int8
constant of ±1 codes and a ``DequantizeLinear`` with the scale α (per output channel for XNOR); a binarized
activation is ``Greater(x, S·T)`` → ``Cast`` → ``Mul(S)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nncompress.errors import CalibrationError, ValidationError
from nncompress.numerics import binarization as bn

from .fake_quantize import DequantizeConstant


class _BinarizeWeight(torch.autograd.Function):
    """``sign'(W)·α`` forward, identity backward (straight-through)."""

    @staticmethod
    def forward(ctx, w, mode):
        return bn.binarize_weight(w, mode)

    @staticmethod
    def backward(ctx, g):
        return g, None


class _BinarizeActivation(torch.autograd.Function):
    """``S·[x > S·T]`` with the reference's gradients for ``x``, ``S`` and ``T``."""

    @staticmethod
    def forward(ctx, x, scale, threshold):
        y = bn.binarize_activation(x, scale, threshold)
        ctx.save_for_backward(x, y, scale)
        ctx.shapes = (scale.shape, threshold.shape)
        return y

    @staticmethod
    def backward(ctx, g):
        x, y, scale = ctx.saved_tensors
        dx, d_scale, d_threshold = bn.activation_gradients(x, y, g, scale, *ctx.shapes)
        return dx, d_scale, d_threshold


def _check_mode(mode: str) -> str:
    if mode not in bn.MODES:
        raise ValidationError(f"binarization mode must be one of {bn.MODES}; got {mode!r}")
    return mode


def _refresh_flags(module: nn.Module, incompatible_keys) -> None:
    module.refresh_flags()


def export_binarized_weight(w: torch.Tensor, mode: str) -> torch.Tensor:
    """An int8 constant of ±1 codes and a DequantizeLinear with α (ONNX export form)."""
    value = w.detach().float().cpu().numpy()  # numpy: the exporter records constants, not the computation
    codes = bn.sign_codes(value).astype(np.int8)
    axis = 0 if mode == "xnor" else None
    scale = bn.weight_scale(value, mode).astype(np.float32).reshape(-1 if axis == 0 else ())
    zero = np.zeros(scale.shape, dtype=np.int8)
    y = DequantizeConstant.apply(*(torch.from_numpy(np.ascontiguousarray(a)) for a in (codes, scale, zero)), axis)
    return y if y.dtype is w.dtype else y.to(w.dtype)


class BinarizedWeight(nn.Module):
    """``sign'(W)·α`` of the weight it reads (a stripped weight binarizer: nothing trainable)."""

    def __init__(self, mode: str = "xnor"):
        super().__init__()
        self.mode = _check_mode(mode)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return export_binarized_weight(w, self.mode)
        value = w if w.dtype is torch.float32 else w.float()
        y = bn.binarize_weight(value, self.mode)
        return y if y.dtype is w.dtype else y.to(w.dtype)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


class WeightBinarizer(BinarizedWeight):
    """The training weight binarizer: straight-through gradient, switched by ``enable``/``disable``."""

    def __init__(self, mode: str = "xnor"):
        super().__init__(mode)
        self.register_buffer("enabled", torch.tensor([1], dtype=torch.int32))
        self._enabled = True
        self.register_load_state_dict_post_hook(_refresh_flags)

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def enable(self) -> None:
        self._enabled = True
        self.enabled.fill_(1)

    def disable(self) -> None:
        self._enabled = False
        self.enabled.fill_(0)

    def refresh_flags(self) -> None:
        """Mirror the ``enabled`` buffer (after a state dict load or a broadcast) into the Python flag."""
        self._enabled = bool(self.enabled.reshape(-1)[0])

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.is_enabled:
            return w
        if torch.onnx.is_in_onnx_export():
            return export_binarized_weight(w, self.mode)
        value = w if w.dtype is torch.float32 else w.float()
        y = _BinarizeWeight.apply(value, self.mode)
        return y if y.dtype is w.dtype else y.to(w.dtype)


def export_binarized_activation(x: torch.Tensor, scale: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """``Cast(Greater(x, thr)) · S`` (``thr`` the absolute threshold ``S·T``): the form both the
    stripped model and the ONNX export compute."""
    value = x if x.dtype is torch.float32 else x.float()
    y = (value > threshold).to(value.dtype) * scale
    return y if y.dtype is x.dtype else y.to(x.dtype)


class BinarizedActivation(nn.Module):
    """``S·[x > thr]`` with fixed buffers ``scale`` ([1]) and ``threshold`` (the absolute ``S·T``)."""

    def __init__(self, scale: torch.Tensor, threshold: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale.detach().float().clone())
        self.register_buffer("threshold", threshold.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return export_binarized_activation(x, self.scale, self.threshold)


class ActivationBinarizer(nn.Module):
    """``S·[x > S·T]`` with trainable ``scale`` (log S) and per-channel ``threshold`` (logits of T)."""

    def __init__(self, channels: int, ndim: int = 4):
        super().__init__()
        if int(channels) < 1 or int(ndim) < 2:
            raise ValidationError(f"an activation binarizer needs channels >= 1 and ndim >= 2; got {channels}, {ndim}")
        shape = [1] * int(ndim)
        shape[1] = int(channels)
        self.scale = nn.Parameter(torch.zeros(1))  # log S: S = 1 until initialised
        self.threshold = nn.Parameter(torch.zeros(shape))  # logit T: T = 0.5
        self.register_buffer("enabled", torch.tensor([1], dtype=torch.int32))
        self.register_buffer("initialized", torch.tensor([0], dtype=torch.int32))
        self._enabled, self._initialized = True, False  # Python mirrors: no device sync in forward
        self._collected: list[float] | None = None
        self.register_load_state_dict_post_hook(_refresh_flags)

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_initialized(self) -> bool:
        return self._initialized

    def enable(self) -> None:
        self._enabled = True
        self.enabled.fill_(1)

    def disable(self) -> None:
        self._enabled = False
        self.enabled.fill_(0)

    def reset_initialization(self) -> None:
        """The next training forward (or ``set_scale``) sets the scale again."""
        self._initialized = False
        self.initialized.fill_(0)

    def refresh_flags(self) -> None:
        """Mirror the ``enabled``/``initialized`` buffers (after a state dict load or a broadcast) into the
        Python flags."""
        self._enabled = bool(self.enabled.reshape(-1)[0])
        self._initialized = bool(self.initialized.reshape(-1)[0])

    def scale_value(self) -> torch.Tensor:
        """``S = exp(scale)`` (with autograd)."""
        return self.scale.exp()

    def threshold_value(self) -> torch.Tensor:
        """``T = sigmoid(threshold)`` (with autograd), shape [1, C, 1, ...]."""
        return torch.sigmoid(self.threshold)

    def absolute_threshold(self) -> torch.Tensor:
        """``S·T`` without gradient (what ``strip`` stores)."""
        with torch.no_grad():
            return bn.activation_threshold(self.scale_value(), self.threshold_value())

    def set_scale(self, value: float) -> None:
        """Set ``S`` (positive) and mark the binarizer initialised."""
        if not np.isfinite(value) or value <= 0:
            raise CalibrationError(
                f"activation binarizer scale init got {value!r}: the input's top 0.1% values are not positive "
                "(the layer's input is all zero or negative on the init data); give init data that activates it"
            )
        with torch.no_grad():
            self.scale.fill_(float(np.log(value)))
        self._initialized = True
        self.initialized.fill_(1)

    # --- initialisation from statistics ------------------------------------------------------------
    def begin_init(self) -> None:
        """Following forwards pass their input through and record its top-0.1% value."""
        self._collected = []

    def end_init(self) -> int:
        """Set ``S`` to the mean recorded value; returns how many batches it saw (0: nothing changed)."""
        values, self._collected = self._collected, None
        if not values:
            return 0
        self.set_scale(float(np.mean(values)))
        return len(values)

    @property
    def collecting(self) -> bool:
        return self._collected is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._collected is not None:
            self._collected.append(bn.top_fraction_value(x.detach()))
            return x
        if not self.is_enabled:
            return x
        if not self.is_initialized and self.training:
            self.set_scale(bn.top_fraction_value(x.detach()))  # the reference's first-forward init
        if torch.onnx.is_in_onnx_export():
            return export_binarized_activation(x, self.scale_value().detach(), self.absolute_threshold())
        value = x if x.dtype is torch.float32 else x.float()
        y = _BinarizeActivation.apply(value, self.scale_value(), self.threshold_value())
        return y if y.dtype is x.dtype else y.to(x.dtype)

    def stripped(self) -> BinarizedActivation:
        """The fixed-buffer form computing the same values."""
        with torch.no_grad():
            return BinarizedActivation(self.scale_value(), self.absolute_threshold())

    def extra_repr(self) -> str:
        return f"channels={self.threshold.shape[1]}"
