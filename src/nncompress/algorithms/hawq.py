"""HAWQ-v2 mixed-precision search (§3.2 of the NNCF training-time brief), without a framework.

Inputs are per-layer numbers: each weight quantizer's average Hessian trace (the Hutchinson estimate is
the backend's job), its FLOPs and its quantization noise ``‖Q_b(W) − W‖²`` per candidate bit width, and
which activation quantizers feed which weighted layers. The search:

1. orders the weight quantizers by trace, ascending, and enumerates every non-decreasing bit sequence
   along that order (low trace → low bits: ``C(L + m − 1, L)`` candidates for ``m`` widths, not ``m^L``);
2. gives each activation quantizer the smallest width the device allows for activations that is at least
   the widths of the weights it feeds (``liberal``), or in ``strict`` mode drops every candidate where
   the weights one activation quantizer feeds differ (a group of adjacent quantizers shares one width);
3. scores a candidate by sensitivity ``Σ trace_i · noise_i(b_i)`` and compression ratio
   ``Σ FLOPs_i · 8 / Σ FLOPs_i · max(b_w,i, b_a,i)`` (``b_a,i``: the widest activation feeding layer i);
4. keeps the lowest sensitivity among candidates whose ratio reaches the target.

Bit widths the target device forbids are removed from the request with a loud warning (NNCF's users got
an all-INT8 model without one when the default CPU target allowed only 8 bits).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from nncompress.errors import ValidationError
from nncompress.log import logger
from nncompress.numerics.qat import level_range

STRICT, LIBERAL = "strict", "liberal"
_ANY_BITS = None  # no device restriction

# Bit widths each target device executes, per quantizer group. CPU and GPU run INT8 only; NPU also runs
# INT4 (NNCF's VPU/NPU hardware config: 4 and 8 bits); TRIAL has no hardware constraint.
DEVICE_BITS: dict[str, dict[str, frozenset[int] | None]] = {
    "ANY": {"weights": frozenset({8}), "activations": frozenset({8})},
    "CPU": {"weights": frozenset({8}), "activations": frozenset({8})},
    "CPU_SPR": {"weights": frozenset({8}), "activations": frozenset({8})},
    "GPU": {"weights": frozenset({8}), "activations": frozenset({8})},
    "NPU": {"weights": frozenset({4, 8}), "activations": frozenset({4, 8})},
    "TRIAL": {"weights": _ANY_BITS, "activations": _ANY_BITS},
}


class PrecisionWarning(UserWarning):
    """A requested bit width the target device cannot run was left out."""


def warn_loudly(message: str) -> None:
    """Log ``message`` as a warning and raise it as a ``PrecisionWarning`` (visible to ``warnings`` filters)."""
    logger.warning(message)
    warnings.warn(message, PrecisionWarning, stacklevel=3)


def device_bits(device: str, group: str) -> frozenset[int] | None:
    """The widths ``device`` runs for ``group`` ("weights"/"activations"); None: any."""
    if device not in DEVICE_BITS:
        raise ValidationError(f"target_device {device!r} has no bit-width rules; valid: {', '.join(DEVICE_BITS)}")
    return DEVICE_BITS[device][group]


def is_allowed(device: str, group: str, bits: int) -> bool:
    allowed = device_bits(device, group)
    return allowed is None or bits in allowed


def allowed_candidates(requested: Iterable[int], device: str) -> tuple[int, ...]:
    """The requested weight widths the device runs, ascending; the others are dropped with a loud warning."""
    requested = sorted({int(b) for b in requested})
    if not requested or requested[0] < 2:
        raise ValidationError(f"initializer.precision.bits must be widths of at least 2 bits; got {requested}")
    kept = [b for b in requested if is_allowed(device, "weights", b)]
    dropped = [b for b in requested if b not in kept]
    if dropped:
        warn_loudly(
            f"mixed precision: target_device {device!r} cannot run {dropped}-bit weights, so those widths are NOT "
            f"searched (searched: {kept or 'none'}). Set \"target_device\": \"NPU\" (4/8 bits) or \"TRIAL\" (any "
            "width) to use them"
        )
    if not kept:
        raise ValidationError(
            f"none of the requested bit widths {requested} runs on target_device {device!r} "
            f"(it runs {sorted(device_bits(device, 'weights') or [])})"
        )
    return tuple(kept)


@dataclass(frozen=True)
class Layer:
    """One weight quantizer: its average Hessian trace, FLOPs, noise per width and the activation
    quantizers on its inputs."""

    name: str
    trace: float
    flops: int
    noise: dict[int, float]
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Activation:
    """One activation quantizer: the weight quantizers of the layers it feeds; ``fixed_bits`` is the
    width it keeps when it also feeds layers without weight quantizers (None: it feeds only weighted ones)."""

    name: str
    feeds: tuple[str, ...]
    fixed_bits: int | None = None


@dataclass(frozen=True)
class Choice:
    """A bit-width configuration with its score."""

    weights: dict[str, int]
    activations: dict[str, int]
    sensitivity: float
    ratio: float


def monotone_sequences(num_layers: int, bits: Sequence[int]) -> Iterable[tuple[int, ...]]:
    """Every non-decreasing assignment of ``bits`` to ``num_layers`` layers ordered by trace."""
    return itertools.combinations_with_replacement(sorted(bits), num_layers)


def candidate_count(num_layers: int, num_bits: int) -> int:
    """``C(L + m − 1, L)``: the number of non-decreasing sequences."""
    return math.comb(num_layers + num_bits - 1, num_layers)


def activation_bits(weights: dict[str, int], activations: Sequence[Activation], device: str,
                    mode: str) -> dict[str, int] | None:
    """Each activation's width for the weight widths ``weights``; None when ``mode``/the device forbid them."""
    result = {}
    for act in activations:
        fed = [weights[w] for w in act.feeds if w in weights]
        if mode == STRICT and len(set(fed)) > 1:
            return None
        need = max([*fed, *([act.fixed_bits] if act.fixed_bits is not None else [])], default=None)
        if need is None:
            continue
        allowed = device_bits(device, "activations")
        options = [need] if allowed is None else sorted(b for b in allowed if b >= need)
        if not options:
            return None
        result[act.name] = options[0]
    return result


def compression_ratio(layers: Sequence[Layer], weights: dict[str, int], activations: dict[str, int]) -> float:
    """``Σ FLOPs·8 / Σ FLOPs·max(weight bits, widest input activation bits)`` (1.0: all INT8)."""
    full = sum(layer.flops * 8 for layer in layers)
    used = 0
    for layer in layers:
        widths = [weights[layer.name], *(activations[a] for a in layer.inputs if a in activations)]
        used += layer.flops * max(widths)
    return full / used if used else 1.0


def sensitivity(layers: Sequence[Layer], weights: dict[str, int]) -> float:
    """``Σ trace_i · ‖Q_{b_i}(W_i) − W_i‖²``."""
    return float(sum(layer.trace * layer.noise[weights[layer.name]] for layer in layers))


def candidates(layers: Sequence[Layer], activations: Sequence[Activation], bits: Sequence[int], device: str,
               mode: str = LIBERAL) -> list[Choice]:
    """Every feasible monotone configuration, scored."""
    if mode not in (STRICT, LIBERAL):
        raise ValidationError(f"bitwidth_assignment_mode must be 'strict' or 'liberal'; got {mode!r}")
    order = sorted(layers, key=lambda layer: (layer.trace, layer.name))
    result = []
    for sequence in monotone_sequences(len(order), bits):
        weights = {layer.name: b for layer, b in zip(order, sequence)}
        acts = activation_bits(weights, activations, device, mode)
        if acts is None:
            continue
        result.append(Choice(weights, acts, sensitivity(layers, weights), compression_ratio(layers, weights, acts)))
    return result


def select(choices: Sequence[Choice], target_ratio: float) -> Choice:
    """The lowest-sensitivity choice whose ratio reaches ``target_ratio`` (ties: the higher ratio)."""
    if not choices:
        raise ValidationError("mixed precision: no bit-width configuration satisfies the device rules and "
                              "bitwidth_assignment_mode; try \"liberal\" or other bits")
    ratios = [c.ratio for c in choices]
    low, high = min(ratios), max(ratios)
    meeting = [c for c in choices if c.ratio >= target_ratio - 1e-9]
    if not meeting:
        raise ValidationError(
            f"initializer.precision.compression_ratio {target_ratio:g} cannot be reached: the candidate "
            f"configurations give ratios in [{low:.4g}, {high:.4g}]"
        )
    return min(meeting, key=lambda c: (c.sensitivity, -c.ratio))


def search(layers: Sequence[Layer], activations: Sequence[Activation], bits: Sequence[int], device: str,
           target_ratio: float, mode: str = LIBERAL) -> tuple[Choice, int]:
    """(the chosen configuration, number of candidates scored)."""
    found = candidates(layers, activations, bits, device, mode)
    return select(found, target_ratio), len(found)


def weight_noise(weight: np.ndarray, bits: int, symmetric: bool = True, axis: int | None = None,
                 narrow_range: bool = False) -> float:
    """``‖Q_b(W) − W‖²`` for a min-max range (per channel along ``axis``, or per tensor)."""
    w = np.asarray(weight, dtype=np.float64)
    reduce = tuple(i for i in range(w.ndim) if i != axis) if axis is not None else None
    if symmetric:
        low, high = level_range(bits, True, narrow_range)
        scale = np.max(np.abs(w), axis=reduce, keepdims=True)
        scale = np.where(scale > 0, scale, 1.0)
        q = np.clip(np.round(w / scale * high), low, high) * scale / high
    else:
        levels = 2**bits - 1
        lo, hi = np.min(w, axis=reduce, keepdims=True), np.max(w, axis=reduce, keepdims=True)
        span = np.where(hi > lo, hi - lo, 1.0)
        q = np.round((w - lo) / span * levels) * span / levels + lo
    return float(np.sum((q - w) ** 2))


__all__ = [
    "DEVICE_BITS", "LIBERAL", "STRICT", "Activation", "Choice", "Layer", "PrecisionWarning", "activation_bits",
    "allowed_candidates", "candidate_count", "candidates", "compression_ratio", "device_bits", "is_allowed",
    "monotone_sequences", "search", "select", "sensitivity", "warn_loudly", "weight_noise",
]
