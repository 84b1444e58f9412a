"""Binarization formulas (weights to ±α, activations to {0, S}), once, for numpy arrays and torch tensors.

Weights (a convolution's ``W`` of shape ``[C_out, C_in, kh, kw]``):

- ``sign'(w) = +1 if w > 0 else -1`` (zero maps to -1, so every weight takes one of two values);
- XNOR: ``Wb = sign'(W) · α`` with ``α = mean |W|`` over every axis but the output-channel axis 0
  (one scale per output filter);
- DoReFa: ``Wb = sign'(W) · α`` with ``α = mean |W|`` over the whole tensor.

The weight gradient is straight-through: ``dW = g``.

Activations: a trainable scale ``S > 0`` (per tensor, stored as ``log S``) and a per-channel threshold
fraction ``T`` in (0, 1) (stored as a logit):

    y = S · [x > S·T]

with the reference's gradients, ``in = [0 <= x <= S]``:
``dx = g · in``; ``dS = Σ g · ([x <= S] · (y - x) / S + [x > S])`` (clipping above S and the
binarization error below it, PACT-like); ``dT = -Σ g · [0 < x < S]`` summed over every axis but the
channel axis. (The chain through ``exp`` and ``sigmoid`` to the stored parameters is autograd's.)

The scale is initialised from statistics: the smallest of the top 0.1% values of the activation
(``k = max(1, round(0.001 · n))``), averaged over init batches.
"""

from __future__ import annotations

import numpy as np

from nncompress.errors import ValidationError
from nncompress.numerics import xp
from nncompress.numerics.xp import Array

MODES = ("xnor", "dorefa")
TOP_FRACTION = 0.001  # the activation scale init takes the k-th largest value, k = round(0.001·n)


def sign_codes(w: Array) -> Array:
    """``sign'(w)``: +1 where ``w > 0``, -1 elsewhere (zero included), in ``w``'s dtype."""
    zero = w * 0
    return xp.where(w > 0, zero + 1, zero - 1)


def _mean_abs(w: Array, axes: tuple[int, ...]) -> Array:
    if xp.is_torch(w):
        return w.abs().mean(dim=axes, keepdim=True) if axes else w.abs()
    return np.mean(np.abs(w), axis=axes, keepdims=True) if axes else np.abs(w)


def weight_scale(w: Array, mode: str) -> Array:
    """α of ``mode``: XNOR ``[C_out, 1, ...]`` (mean |W| per output filter), DoReFa ``[1, 1, ...]``."""
    if mode == "xnor":
        return _mean_abs(w, tuple(range(1, w.ndim)))
    if mode == "dorefa":
        return _mean_abs(w, tuple(range(w.ndim)))
    raise ValidationError(f"binarization mode must be one of {MODES}; got {mode!r}")


def binarize_weight(w: Array, mode: str) -> Array:
    """``sign'(W) · α`` (XNOR or DoReFa)."""
    return sign_codes(w) * weight_scale(w, mode)


def activation_threshold(scale: Array, threshold: Array) -> Array:
    """The absolute threshold ``S·T`` (shape of ``threshold``, e.g. ``[1, C, 1, 1]``)."""
    return scale * threshold


def binarize_activation(x: Array, scale: Array, threshold: Array) -> Array:
    """``y = S · [x > S·T]``: 0 or ``S`` (``scale`` and ``threshold`` broadcast to ``x``)."""
    return (x > activation_threshold(scale, threshold)) * scale


def activation_gradients(x: Array, y: Array, g: Array, scale: Array, scale_shape: tuple[int, ...],
                         threshold_shape: tuple[int, ...]) -> tuple[Array, Array, Array]:
    """(dx, dS, dT) of ``y = binarize_activation(x, S, T)`` for upstream ``g``; ``dS`` summed to
    ``scale_shape``, ``dT`` to ``threshold_shape``."""
    below_top = x <= scale
    inside = (x >= 0) & below_top
    dx = g * inside
    d_scale = xp.sum_to(g * (below_top * (y - x) / scale + (x > scale)), scale_shape)
    d_threshold = -xp.sum_to(g * ((x > 0) & (x < scale)), threshold_shape)
    return dx, d_scale, d_threshold


def top_fraction_value(x: Array, fraction: float = TOP_FRACTION) -> float:
    """The smallest of the top ``fraction`` of the values of ``x`` (``k = max(1, round(fraction·n))``)."""
    n = int(np.prod(x.shape)) if x.ndim else 1
    if n == 0:
        raise ValidationError("cannot take the top values of an empty activation")
    k = max(1, int(round(fraction * n)))
    if xp.is_torch(x):
        flat = x.detach().reshape(-1).float()
        return float(xp._torch().kthvalue(flat.cpu(), n - k + 1).values)
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    return float(np.partition(flat, n - k)[n - k])


def logit(p: float) -> float:
    """``log(p / (1 - p))`` (the stored form of a threshold fraction)."""
    return float(np.log(p / (1.0 - p)))
