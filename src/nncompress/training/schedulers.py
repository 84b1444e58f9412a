"""Compression schedulers: pure step/epoch counters (NNCF semantics) plus the staged QAT scheduler.

NNCF's counters start at -1: ``epoch_step()`` is called at the *start* of each epoch (the first call
makes ``current_epoch`` 0) and ``step()`` before each iteration (the first call makes ``current_step`` 0).
Nothing here imports torch; the staged scheduler acts on its controller through two callbacks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nncompress.errors import ValidationError


class BaseCompressionScheduler:
    """Step and epoch counters; subclasses react to them in ``_update``."""

    def __init__(self) -> None:
        self.current_step = -1
        self.current_epoch = -1
        self._enabled = True

    def step(self, next_step: int | None = None) -> None:
        """Call before every training iteration (``next_step``: jump to that step)."""
        self.current_step = self.current_step + 1 if next_step is None else _count(next_step, "next_step")

    def epoch_step(self, next_epoch: int | None = None) -> None:
        """Call at the start of every epoch (``next_epoch``: jump to that epoch)."""
        self.current_epoch = self.current_epoch + 1 if next_epoch is None else _count(next_epoch, "next_epoch")
        if self._enabled:
            self._update(reinit=True)

    def disable(self) -> None:
        """Stop reacting to counters (``controller.disable_scheduler()``); counting goes on."""
        self._enabled = False

    def _update(self, reinit: bool) -> None:
        """React to the counters (``reinit``: newly enabled parts may re-initialise)."""

    def get_state(self) -> dict[str, Any]:
        return {"current_step": self.current_step, "current_epoch": self.current_epoch}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore the counters (no re-initialisation happens)."""
        if not isinstance(state, dict) or not {"current_step", "current_epoch"} <= set(state):
            raise ValidationError(
                f"a scheduler state must be a dict with 'current_step' and 'current_epoch'; got {state!r}"
            )
        self.current_step = int(state["current_step"])
        self.current_epoch = int(state["current_epoch"])
        self._update(reinit=False)


class StubCompressionScheduler(BaseCompressionScheduler):
    """Counters only (quantization without the staged ``params``)."""


class StagedQuantizationScheduler(BaseCompressionScheduler):
    """Activation / weight quantizers are enabled iff ``max(current_epoch, 0) >= start`` (§2.9).

    ``set_enabled(group, on)`` switches a group ("activations" or "weights"); ``init_ranges(group)``
    re-initialises its ranges: called when ``epoch_step`` enables a group, never on ``load_state``.
    ``params`` (a ``StagedParams``) also carries the trainer's LR/WD settings (``base_lr`` ...).
    """

    def __init__(self, params: Any, set_enabled: Callable[[str, bool], None],
                 init_ranges: Callable[[str], None]) -> None:
        super().__init__()
        self.params = params
        self.activations_quant_start_epoch = int(params.activations_quant_start_epoch)
        self.weights_quant_start_epoch = int(params.weights_quant_start_epoch)
        self._set_enabled = set_enabled
        self._init_ranges = init_ranges
        self.enabled = {"activations": None, "weights": None}
        self._update(reinit=False)

    def _starts(self) -> dict[str, int]:
        return {"activations": self.activations_quant_start_epoch, "weights": self.weights_quant_start_epoch}

    def _update(self, reinit: bool) -> None:
        epoch = max(self.current_epoch, 0)
        for group, start in self._starts().items():
            on = epoch >= start
            if self.enabled[group] == on:
                continue
            was = self.enabled[group]
            self.enabled[group] = on
            self._set_enabled(group, on)
            if on and reinit and was is not None:
                self._init_ranges(group)

    def stage(self) -> int:
        """0 none enabled, 1 one group, 2 both (``CompressionStage`` values)."""
        return sum(bool(v) for v in self.enabled.values())

    # --- the staged trainer's learning rate and weight decay (reference §2.9) ------------------------
    def attach_optimizer(self, optimizer: Any, steps_per_epoch: int | None = None) -> None:
        """Let ``step``/``epoch_step`` drive ``optimizer``'s ``lr`` and ``weight_decay`` (every param group)
        as the reference's staged trainer does: ``base_lr`` with the polynomial drop, ``base_wd`` until
        ``disable_wd_start_epoch``. The epoch is fractional, ``epoch + step_in_epoch / steps_per_epoch``;
        without ``steps_per_epoch`` it is learnt from the first epoch (whole epochs until then)."""
        groups = getattr(optimizer, "param_groups", None)
        if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
            raise ValidationError(
                f"attach_optimizer needs a torch optimizer (with param_groups); got {type(optimizer).__name__}"
            )
        if steps_per_epoch is not None and (isinstance(steps_per_epoch, bool) or int(steps_per_epoch) < 1):
            raise ValidationError(f"steps_per_epoch must be a positive integer or None; got {steps_per_epoch!r}")
        self._optimizer = optimizer
        self._steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        self._step_in_epoch = 0
        self._apply_lr_wd()

    def step(self, next_step: int | None = None) -> None:
        super().step(next_step)
        if getattr(self, "_optimizer", None) is not None:
            self._step_in_epoch += 1
            self._apply_lr_wd()

    def epoch_step(self, next_epoch: int | None = None) -> None:
        if getattr(self, "_optimizer", None) is not None:
            if self._steps_per_epoch is None and self.current_epoch >= 0 and self._step_in_epoch > 0:
                self._steps_per_epoch = self._step_in_epoch
            self._step_in_epoch = 0
        super().epoch_step(next_epoch)
        if getattr(self, "_optimizer", None) is not None:
            self._apply_lr_wd()

    def fractional_epoch(self) -> float:
        """``max(epoch, 0)`` plus the share of this epoch's steps done (the first step of an epoch adds 0)."""
        epoch = float(max(self.current_epoch, 0))
        steps = getattr(self, "_steps_per_epoch", None)
        done = max(getattr(self, "_step_in_epoch", 0) - 1, 0)
        return epoch + min(done / steps, 1.0) if steps else epoch

    def _apply_lr_wd(self) -> None:
        epoch = self.fractional_epoch()
        lr, wd = staged_learning_rate(self.params, epoch), staged_weight_decay(self.params, epoch)
        for group in self._optimizer.param_groups:
            group["lr"] = lr
            if "weight_decay" in group:
                group["weight_decay"] = wd


POLY_DROP_POWER = 2.1  # the reference trainer's exponent


def staged_learning_rate(params: Any, epoch: float) -> float:
    """``base_lr``, and from ``lr_poly_drop_start_epoch`` the drop ``base_lr·((start + dur - e) / dur)^2.1``
    over ``lr_poly_drop_duration_epochs`` (0 after it)."""
    base, start = float(params.base_lr), params.lr_poly_drop_start_epoch
    if start is None or epoch < start:
        return base
    duration = float(params.lr_poly_drop_duration_epochs)
    return base * max(0.0, (start + duration - epoch) / duration) ** POLY_DROP_POWER


def staged_weight_decay(params: Any, epoch: float) -> float:
    """``base_wd``, 0 from ``disable_wd_start_epoch``."""
    off = params.disable_wd_start_epoch
    return 0.0 if off is not None and epoch >= off else float(params.base_wd)


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{name} must be a non-negative integer; got {value!r}")
    return value
