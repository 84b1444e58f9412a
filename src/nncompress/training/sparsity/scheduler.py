"""The sparsity scheduler: NNCF's step/epoch counters driving the level schedules of ``schedules``.

``epoch_step()`` (start of every epoch) and, with ``update_per_optimizer_step``, ``step()`` (before every
iteration) compute the level and hand it to the controller (``set_level``); from ``sparsity_freeze_epoch``
on the controller is frozen (``freeze``) and the level stops changing. The adaptive schedule raises its
level from the controller's measured sparsity (``measured``) at each epoch start. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nncompress.errors import ConfigError, ValidationError
from nncompress.numerics.sparsity import IMPORTANCES
from nncompress.training.schedulers import BaseCompressionScheduler
from nncompress.training.sparsity.schedules import (
    SPARSITY_SCHEDULES,
    AdaptiveState,
    adaptive_step,
    exponential_level,
    is_frozen,
    multistep_level,
    polynomial_level,
)

MODES = ("global", "local")


@dataclass(frozen=True)
class SparsityParams:
    """A sparsity section's ``sparsity_init`` and ``params`` with NNCF 2.x's defaults filled in."""

    schedule: str = "polynomial"
    sparsity_init: float = 0.0
    sparsity_target: float = 0.5
    sparsity_target_epoch: int = 90
    sparsity_freeze_epoch: int = 100
    power: float = 0.9
    concave: bool = True
    update_per_optimizer_step: bool = False
    steps_per_epoch: int | None = None
    multistep_steps: tuple[int, ...] = (90,)
    multistep_sparsity_levels: tuple[float, ...] = (0.1, 0.5)
    patience: int = 1
    mode: str = "global"
    weight_importance: str = "normed_abs"

    @classmethod
    def from_section(cls, section: dict, default_schedule: str, path: str = "compression") -> SparsityParams:
        raw = dict(section.get("params", {}))
        params = cls(
            schedule=raw.get("schedule", default_schedule),
            sparsity_init=float(section.get("sparsity_init", 0.0)),
            sparsity_target=float(raw.get("sparsity_target", 0.5)),
            sparsity_target_epoch=int(raw.get("sparsity_target_epoch", 90)),
            sparsity_freeze_epoch=int(raw.get("sparsity_freeze_epoch", 100)),
            power=float(raw.get("power", 0.9)),
            concave=bool(raw.get("concave", True)),
            update_per_optimizer_step=bool(raw.get("update_per_optimizer_step", False)),
            steps_per_epoch=raw.get("steps_per_epoch"),
            multistep_steps=tuple(int(s) for s in raw.get("multistep_steps", (90,))),
            multistep_sparsity_levels=tuple(float(v) for v in raw.get("multistep_sparsity_levels", (0.1, 0.5))),
            patience=int(raw.get("patience", 1)),
            mode=raw.get("sparsity_level_setting_mode", "global"),
            weight_importance=raw.get("weight_importance", "normed_abs"),
        )
        params.check(path)
        return params

    def check(self, path: str) -> None:
        """ConfigError naming the offending key (levels must stay below 1: 1 would remove every weight)."""
        where = f"{path}.params"
        if self.schedule not in SPARSITY_SCHEDULES:
            raise ConfigError(f"{where}.schedule: {self.schedule!r} is not one of {', '.join(SPARSITY_SCHEDULES)}")
        if self.mode not in MODES:
            raise ConfigError(f"{where}.sparsity_level_setting_mode: {self.mode!r} is not 'global' or 'local'")
        if self.weight_importance not in IMPORTANCES:
            raise ConfigError(f"{where}.weight_importance: {self.weight_importance!r} is not one of {IMPORTANCES}")
        levels = [("sparsity_init", self.sparsity_init, path), ("sparsity_target", self.sparsity_target, where)]
        levels += [(f"multistep_sparsity_levels[{i}]", v, where) for i, v in enumerate(self.multistep_sparsity_levels)]
        for key, value, base in levels:
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{base}.{key}: {value} must be in [0, 1) (1 would remove every weight)")
        if self.schedule == "multistep":
            steps, values = self.multistep_steps, self.multistep_sparsity_levels
            if len(values) != len(steps) + 1 or list(steps) != sorted(steps):
                raise ConfigError(
                    f"{where}: multistep needs increasing multistep_steps and one more level than steps (a level "
                    f"for epoch 0); got steps {list(steps)} and levels {list(values)}"
                )
        if self.schedule == "exponential" and self.sparsity_init >= self.sparsity_target > 0:
            raise ConfigError(f"{where}: the exponential schedule needs sparsity_init ({self.sparsity_init}) below "
                              f"sparsity_target ({self.sparsity_target})")

    @property
    def initial_level(self) -> float:
        return self.multistep_sparsity_levels[0] if self.schedule == "multistep" else self.sparsity_init

    @property
    def target_level(self) -> float:
        """The level at which compression counts as FULLY done (multistep: its last level)."""
        return self.multistep_sparsity_levels[-1] if self.schedule == "multistep" else self.sparsity_target


class SparsityScheduler(BaseCompressionScheduler):
    """Counters -> level -> ``set_level(level)``; ``freeze()`` once ``current_epoch >= sparsity_freeze_epoch``."""

    def __init__(self, params: SparsityParams, set_level: Callable[[float], None], freeze: Callable[[], None],
                 measured: Callable[[], float]) -> None:
        super().__init__()
        self.params = params
        self._set_level = set_level
        self._freeze = freeze
        self._measured = measured
        self.current_level = params.initial_level
        self.frozen = False
        self.steps_per_epoch = params.steps_per_epoch
        self._epoch_start_step = 0  # value of current_step at the first step() of the current epoch
        self._adaptive = AdaptiveState(params.initial_level)

    def epoch_step(self, next_epoch: int | None = None) -> None:
        if self.current_epoch >= 0:
            self._end_of_epoch()
        self._epoch_start_step = self.current_step + 1
        super().epoch_step(next_epoch)

    def _end_of_epoch(self) -> None:
        """Learn steps_per_epoch from the first epoch; let the adaptive schedule react to the measured level."""
        p = self.params
        done = self.current_step + 1 - self._epoch_start_step
        if p.update_per_optimizer_step and self.steps_per_epoch is None and done > 0:
            self.steps_per_epoch = done
        if p.schedule == "adaptive" and self._enabled and not self.frozen:
            self._adaptive = adaptive_step(self._adaptive, self._measured(), target=p.sparsity_target,
                                           patience=p.patience)

    def step(self, next_step: int | None = None) -> None:
        super().step(next_step)
        if self.params.update_per_optimizer_step and self._enabled:
            self._update(reinit=True)

    def level(self) -> float:
        """The schedule's level at the current counters."""
        p, epoch = self.params, self.current_epoch
        if p.schedule == "polynomial":
            per_step = p.update_per_optimizer_step and self.steps_per_epoch is not None
            step = max(self.current_step - self._epoch_start_step, 0)
            return polynomial_level(
                epoch, step, initial=p.sparsity_init, target=p.sparsity_target, target_epoch=p.sparsity_target_epoch,
                power=p.power, concave=p.concave, update_per_optimizer_step=per_step,
                steps_per_epoch=self.steps_per_epoch,
            )
        if p.schedule == "exponential":
            return exponential_level(epoch, initial=p.sparsity_init, target=p.sparsity_target,
                                     target_epoch=p.sparsity_target_epoch)
        if p.schedule == "multistep":
            return multistep_level(epoch, steps=p.multistep_steps, levels=p.multistep_sparsity_levels)
        return self._adaptive.level

    def _update(self, reinit: bool) -> None:
        if not self.frozen:
            self.current_level = self.level()
            if reinit:
                self._set_level(self.current_level)
        if not self.frozen and is_frozen(self.current_epoch, self.params.sparsity_freeze_epoch):
            self.frozen = True
            self._freeze()

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "current_level": self.current_level, "frozen": self.frozen,
                "steps_per_epoch": self.steps_per_epoch, "epoch_start_step": self._epoch_start_step,
                "adaptive": [self._adaptive.level, self._adaptive.bad_epochs]}

    def load_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or "current_level" not in state:
            raise ValidationError(f"a sparsity scheduler state needs 'current_level' (from get_state()); got {state!r}")
        self.steps_per_epoch = state.get("steps_per_epoch", self.steps_per_epoch)
        self._epoch_start_step = int(state.get("epoch_start_step", 0))
        level, bad = state.get("adaptive", (self.params.initial_level, 0))
        self._adaptive = AdaptiveState(float(level), int(bad))
        self.current_level = float(state["current_level"])
        self.frozen = bool(state.get("frozen", False))
        super().load_state(state)
