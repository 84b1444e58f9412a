"""Sparsity and pruning level schedules as pure functions of (epoch, step, parameters).

NNCF semantics (reference §5.1, §6.3). ``epoch`` is 0-based (the epoch about to run); ``step`` is the number
of optimizer steps already done in that epoch (only ``update_per_optimizer_step`` uses it). The controller
keeps the counters; these functions only compute levels.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from nncompress.errors import ValidationError, one_of

SPARSITY_SCHEDULES = ("polynomial", "exponential", "multistep", "adaptive")
PRUNING_SCHEDULES = ("baseline", "exponential", "exponential_with_bias")
ADAPTIVE_STEP = 0.05
ADAPTIVE_EPS = 0.03


def _progress(epoch: int, step: int, target_epoch: int, per_step: bool, steps_per_epoch: int | None) -> float:
    if target_epoch <= 0:
        return 1.0
    position = float(epoch)
    if per_step:
        if not steps_per_epoch or steps_per_epoch <= 0:
            raise ValidationError(
                "update_per_optimizer_step needs steps_per_epoch > 0 (optimizer steps in one epoch); "
                f"got {steps_per_epoch!r}"
            )
        position += step / steps_per_epoch
    return min(max(position / target_epoch, 0.0), 1.0)


def polynomial_level(
    epoch: int,
    step: int = 0,
    *,
    initial: float,
    target: float,
    target_epoch: int,
    power: float = 0.9,
    concave: bool = True,
    update_per_optimizer_step: bool = False,
    steps_per_epoch: int | None = None,
) -> float:
    """``p = clip(e / target_epoch, 0, 1)`` (fractional epoch per optimizer step);
    concave ``S_T - (S_T - S_0)(1 - p)^power``, convex ``S_0 + (S_T - S_0) p^power``."""
    p = _progress(epoch, step, target_epoch, update_per_optimizer_step, steps_per_epoch)
    if concave:
        return target - (target - initial) * (1.0 - p) ** power
    return initial + (target - initial) * p**power


def exponential_level(epoch: int, *, initial: float, target: float, target_epoch: int) -> float:
    """On density ``D = 1 - S``: ``D(e) = D_0 (D_T/D_0)^(e / target_epoch)`` floored at ``D_T``;
    the level is ``min(1 - D, S_T)``."""
    d0, dt = 1.0 - initial, 1.0 - target
    if target_epoch <= 0 or epoch >= target_epoch:
        return target
    density = max(d0 * (dt / d0) ** (max(epoch, 0) / target_epoch), dt)
    return min(1.0 - density, target)


def multistep_level(epoch: int, *, steps: Sequence[int], levels: Sequence[float]) -> float:
    """``levels[bisect_right(steps, e)]``: ``levels[0]`` from epoch 0 until ``steps[0]``, and so on."""
    if len(levels) != len(steps) + 1:
        raise ValidationError(
            f"multistep needs one more level than steps (a level for epoch 0); got {len(levels)} levels "
            f"for {len(steps)} steps"
        )
    if list(steps) != sorted(steps):
        raise ValidationError(f"multistep steps must be increasing; got {list(steps)}")
    return float(levels[bisect.bisect_right(list(steps), epoch)])


@dataclass(frozen=True)
class AdaptiveState:
    """State of the adaptive schedule: the current target and the count of epochs that reached it."""

    level: float
    bad_epochs: int = 0


def adaptive_step(
    state: AdaptiveState,
    measured_level: float,
    *,
    target: float,
    patience: int = 1,
    step: float = ADAPTIVE_STEP,
    eps: float = ADAPTIVE_EPS,
) -> AdaptiveState:
    """One epoch of the adaptive schedule: an epoch whose measured level reaches ``level - eps`` counts as
    a "bad epoch"; after ``patience`` of them the level rises by ``step`` (capped at ``target``)."""
    bad = state.bad_epochs + (1 if measured_level >= state.level - eps else 0)
    if bad >= patience:
        return AdaptiveState(min(state.level + step, target), 0)
    return AdaptiveState(state.level, bad)


def is_frozen(epoch: int, freeze_epoch: int | None) -> bool:
    """Whether masks are frozen at ``epoch`` (``freeze_epoch`` None: never)."""
    return freeze_epoch is not None and epoch >= freeze_epoch


def sparsity_level(kind: str, epoch: int, step: int = 0, **params) -> float:
    """Level of the named schedule (``adaptive`` keeps state: use ``adaptive_step``)."""
    if kind == "polynomial":
        return polynomial_level(epoch, step, **params)
    if kind == "exponential":
        return exponential_level(epoch, **params)
    if kind == "multistep":
        return multistep_level(epoch, **params)
    if kind == "adaptive":
        raise ValidationError("the adaptive schedule depends on measured levels: call adaptive_step each epoch")
    raise one_of(kind, SPARSITY_SCHEDULES, "sparsity schedule")


# --- pruning (§6.3) ---------------------------------------------------------------------------------------


def pruning_freeze_epoch(kind: str, num_init_steps: int, pruning_steps: int) -> int:
    """Epoch from which pruning masks stop changing (``baseline`` freezes right after warm-up)."""
    if kind not in PRUNING_SCHEDULES:
        raise one_of(kind, PRUNING_SCHEDULES, "pruning schedule")
    return num_init_steps if kind == "baseline" else num_init_steps + pruning_steps


def pruning_level(
    kind: str, epoch: int, *, target: float, num_init_steps: int = 0, pruning_steps: int = 100, initial: float = 0.0
) -> float:
    """Pruning level at ``epoch``: 0 during ``num_init_steps`` warm-up epochs, then the schedule's curve over
    ``pruning_steps`` epochs (``T = pruning_steps - 1``), ``target`` from then on."""
    if kind not in PRUNING_SCHEDULES:
        raise one_of(kind, PRUNING_SCHEDULES, "pruning schedule")
    if epoch < num_init_steps:
        return 0.0
    e, t = epoch - num_init_steps, pruning_steps - 1
    if kind == "baseline" or e >= t or t <= 0:
        return target
    if kind == "exponential":
        d0, dt = 1.0 - initial, 1.0 - target
        return min(1.0 - d0 * (dt / d0) ** (e / t), target)
    a, k, b = exponential_with_bias(initial, target, t)
    return min(a * math.exp(-k * e) + b, target)


def exponential_with_bias(initial: float, target: float, steps: int) -> tuple[float, float, float]:
    """``(a, k, b)`` of ``P(e) = a·exp(-k·e) + b`` with ``P(0) = initial``, ``P(T) = target`` and
    ``P(T/8) = 0.75·target`` (``T = steps``).

    With ``x = exp(-k·T/8)``: ``(1 - x^8)/(1 - x) = 1 + x + ... + x^7 = r = (P_0 - P_T)/(P_0 - 0.75 P_T)``,
    increasing from 1 to 8 on (0, 1): solved by bisection; then ``a = (P_0 - 0.75 P_T)/(1 - x)``, ``b = P_0 - a``.
    """
    if steps <= 0:
        raise ValidationError(f"exponential_with_bias needs at least 2 pruning steps; got T = {steps}")
    denominator = initial - 0.75 * target
    r = (initial - target) / denominator if denominator else math.inf
    if not 1.0 < r < 8.0:
        raise ValidationError(
            f"exponential_with_bias cannot go from {initial} to {target} through 0.75·target at T/8 "
            "(needs pruning_init < 0.75·pruning_target)"
        )
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if sum(mid**i for i in range(8)) < r:
            lo = mid
        else:
            hi = mid
    x = (lo + hi) / 2
    a = denominator / (1.0 - x)
    return a, -8.0 * math.log(x) / steps, initial - a
