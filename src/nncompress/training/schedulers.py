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


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{name} must be a non-negative integer; got {value!r}")
    return value
