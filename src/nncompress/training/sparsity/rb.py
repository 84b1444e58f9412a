"""The RB (regularization-based) sparsity controller: trainable mask logits (``RBMask``), the §5.3 loss
(``RBLoss`` in global mode, the per-layer loss in local mode) whose target follows the schedule, freeze.

Every mask draws its training noise from one ``SharedGenerator`` seeded from torch's global RNG;
``distributed()`` broadcasts rank 0's seed so that every rank samples the same masks.
"""

from __future__ import annotations

from typing import Any

from nncompress.errors import ValidationError
from nncompress.numerics import sparsity as sp
from nncompress.training.sparsity.controller import SparsityController
from nncompress.training.sparsity.scheduler import SparsityParams, SparsityScheduler


class RBSparsityController(SparsityController):
    """Masks learn through ``loss()``; the schedule sets the loss's target level."""

    name = "rb_sparsity"

    def __init__(self, model: Any, masks: dict[str, Any], params: SparsityParams, section: dict | None = None):
        import torch

        from nncompress.backends.torch.sparsity import RBLoss, SharedGenerator

        self.params = params
        seed = int(torch.randint(0, 2**62, (1,)).item())  # from the global RNG: torch.manual_seed decides it
        self.generator = SharedGenerator(seed)
        for mask in masks.values():
            mask.generator = self.generator
        self._rb_loss = RBLoss(model, params.initial_level)
        self._layer_targets = {name: params.initial_level for name in masks}
        self._loss_enabled = True
        scheduler = SparsityScheduler(params, self.set_sparsity_level, self.freeze, self.measured_level)
        super().__init__(model, masks, scheduler, section)
        self._level = params.initial_level

    def target_level(self) -> float:
        return self.params.target_level

    def set_sparsity_level(self, level: float, target_layer: Any = None) -> None:
        """The loss's target level (local mode: of every layer, or of ``target_layer`` only)."""
        level = sp.check_level(level)
        if target_layer is not None:
            if self.params.mode != "local":
                raise ValidationError("set_sparsity_level(target_layer=...) needs \"sparsity_level_setting_mode\": "
                                      "\"local\"; in global mode one loss target covers every weight")
            self._layer_targets[self._layer(target_layer)] = level
            return
        self._rb_loss.target_ratio = level
        self._layer_targets = dict.fromkeys(self.masks, level)
        self._level = level

    def freeze(self, freeze: bool = True) -> None:
        """Fix every mask at its deterministic value; the loss becomes 0."""
        for mask in self.masks.values():
            mask.freeze(freeze)
        self._loss_enabled = not freeze

    def loss(self) -> Any:
        """``((K/N - (1 - S)) / p)^2`` over every mask (global) or ``(Σ -|K_l/N_l - (1 - S_l)| / p)^2`` (local)."""
        if not self._loss_enabled:
            return super().loss()
        if self.params.mode == "global":
            return self._rb_loss()
        names = list(self.masks)
        kept = [self.masks[n].kept() for n in names]
        totals = [self.masks[n].mask.numel() for n in names]
        return sp.rb_local_loss(kept, totals, [self._layer_targets[n] for n in names], self._rb_loss.p)

    def thresholds(self) -> dict[str, float | None]:
        return dict.fromkeys(self.masks, 0.5)  # a weight is kept while sigmoid(logit) > 0.5

    def _extra_rows(self) -> list[tuple[str, str]]:
        import torch

        with torch.no_grad():
            value = float(self.loss())
        return [("RB loss (target level)", f"{value:.4g} ({100 * self._level:.2f} %)"),
                ("Masks frozen", str(not self._loss_enabled))]

    def distributed(self) -> None:
        """Every rank takes rank 0's sampling seed (call after the DDP wrap, before training)."""
        from nncompress.training import distributed as dist

        if dist.is_distributed():
            self.generator.reseed(dist.broadcast_object(self.generator.seed))

    def _extra_state(self) -> dict[str, Any]:
        return {"layer_targets": dict(self._layer_targets), "loss_enabled": self._loss_enabled}

    def _load_extra_state(self, saved: dict[str, Any]) -> None:
        self._layer_targets.update({k: float(v) for k, v in saved.get("layer_targets", {}).items()
                                    if k in self.masks})
        self._rb_loss.target_ratio = self._level
        if not saved.get("loss_enabled", True) or getattr(self.scheduler, "frozen", False):
            self.freeze()

    def initialize(self, data_loader: Any) -> None:
        """Nothing to initialise from data (masks start keeping every weight)."""
