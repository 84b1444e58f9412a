"""The filter pruning scheduler (§6.3): the level per epoch, masks recomputed until the freeze epoch."""

from __future__ import annotations

from collections.abc import Callable

from nncompress.training.pruning.params import PruningParams
from nncompress.training.schedulers import BaseCompressionScheduler
from nncompress.training.sparsity.schedules import is_frozen, pruning_freeze_epoch, pruning_level


class PruningScheduler(BaseCompressionScheduler):
    """At every ``epoch_step`` calls ``on_level(level)`` while the masks may change: before the freeze
    epoch (masks recomputed from the current weights even at an unchanged level), and once more when the
    level changes at the freeze epoch itself (``baseline`` reaches its target right after warm-up).
    During the ``num_init_steps`` warm-up epochs the level stays at ``pruning_init``."""

    def __init__(self, params: PruningParams, on_level: Callable[[float], None], current: Callable[[], float]):
        super().__init__()
        self.params = params
        self.on_level = on_level
        self.current = current
        self.freeze_epoch = pruning_freeze_epoch(params.schedule, params.num_init_steps, params.pruning_steps)

    def level(self, epoch: int | None = None) -> float:
        """The scheduled level at ``epoch`` (default: the current one; -1, before training: ``pruning_init``)."""
        p = self.params
        epoch = self.current_epoch if epoch is None else epoch
        if epoch < p.num_init_steps:
            return p.init
        return pruning_level(p.schedule, epoch, target=p.target, num_init_steps=p.num_init_steps,
                             pruning_steps=p.pruning_steps, initial=p.init)

    def frozen(self) -> bool:
        return is_frozen(self.current_epoch, self.freeze_epoch)

    def _update(self, reinit: bool) -> None:
        # load_state (reinit False) restores counters only: the controller restores the saved masks
        if not reinit or self.current_epoch < 0:
            return
        level = self.level()
        if not self.frozen() or abs(level - self.current()) > 1e-12:
            self.on_level(level)
