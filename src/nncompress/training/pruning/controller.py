"""The filter pruning controller: masks from filter importance, schedule, statistics, real removal on strip."""

from __future__ import annotations

from typing import Any

import numpy as np

from nncompress.algorithms.pruning import group_importances, masks_for_flops_target, masks_for_level
from nncompress.algorithms.pruning.flops import model_cost, pruned_cost
from nncompress.errors import ValidationError
from nncompress.training.controller import CompressionAlgorithmController, CompressionStage, Statistics
from nncompress.training.pruning.params import PruningParams
from nncompress.training.pruning.scheduler import PruningScheduler

TARGET_TOLERANCE = 1e-5


class FilterPruningController(CompressionAlgorithmController):
    """Controls the ``FilterPruningMask`` hooks of one model (``channels``: its channel groups).

    ``compression_rate`` is the current level: the fraction of filters pruned per group, or with
    ``pruning_flops_target`` the fraction of modelled FLOPs removed. ``strip()`` removes the pruned
    channels physically (NNCF only zeroes them).
    """

    name = "filter_pruning"
    strip_priority = 20

    def __init__(self, model: Any, params: PruningParams, channels: Any):
        self.params = params
        self.channels = channels
        self.full = model_cost(channels.graph)
        self.keep: dict[int, np.ndarray] = {g.id: np.ones(g.channels, bool) for g in channels.groups.prunable()}
        self._level = 0.0
        self._bn: tuple[Any, int] | None = None  # (loader, samples): adapt BatchNorm after every mask change
        super().__init__(model, PruningScheduler(params, self._scheduled, lambda: self._level))
        if params.init > 0:
            self.set_pruning_level(params.init)

    # --- levels and masks -------------------------------------------------------------------------
    @property
    def compression_rate(self) -> float:
        return self._level

    @compression_rate.setter
    def compression_rate(self, value: float) -> None:
        self.set_pruning_level(value)

    @property
    def current_pruning_level(self) -> float:
        return self._level

    def set_pruning_level(self, level: float, run_batchnorm_adaptation: bool = False) -> None:
        """Prune every prunable group to ``level`` (a FLOPs fraction with ``pruning_flops_target``) by the
        current weights' filter importance; BatchNorm adaptation after it when asked (or configured)."""
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 <= level < 1.0:
            raise ValidationError(f"pruning level must be a number in [0, 1); got {level!r}")
        self._apply(self.masks_for(float(level)))
        self._level = float(level)
        if run_batchnorm_adaptation or self._bn is not None:
            self._adapt_batchnorm()

    def masks_for(self, level: float) -> dict[int, np.ndarray]:
        """Keep-masks (group id -> bool) at ``level`` from the current weights (no change to the model)."""
        groups = self.channels.groups
        if level <= 0.0 or not self.keep:
            return {gid: np.ones_like(mask) for gid, mask in self.keep.items()}
        importances = group_importances(groups, lambda node: self.channels.weight_of(self.model, node),
                                        self.params.importance, normalize=self.params.all_weights)
        if self.params.flops:
            return masks_for_flops_target(groups, importances, level, self.params.all_weights).masks
        return masks_for_level(importances, level, self.params.all_weights)

    def _apply(self, keep: dict[int, np.ndarray]) -> None:
        from nncompress.backends.torch.pruning_mask import update_pruning_masks

        update_pruning_masks(self.model, self.channels, keep)
        self.keep = {gid: np.asarray(mask, bool).copy() for gid, mask in keep.items()}

    def _scheduled(self, level: float) -> None:
        self.set_pruning_level(level)

    # --- initialisation ---------------------------------------------------------------------------
    def initialize_from_config(self, nncf_config: Any) -> None:
        """Keep the BatchNorm adaptation loader when the config's initializer asks for it (adaptation then runs
        after every mask change), and adapt now if ``pruning_init`` already pruned."""
        from nncompress.training.bn_adaptation import bn_adaptation_loader

        loader = bn_adaptation_loader(nncf_config, self.params.bn_samples, "filter_pruning")
        if loader is None:
            return
        self._bn = (loader, self.params.bn_samples)
        if self._level > 0:
            self._adapt_batchnorm()

    def _adapt_batchnorm(self) -> int:
        from nncompress.training.bn_adaptation import adapt_batchnorm

        if self._bn is None:
            raise ValidationError("BatchNorm adaptation needs a loader: register BNAdaptationInitArgs on the config "
                                  "(register_default_init_args) before create_compressed_model")
        return adapt_batchnorm(self.model, *self._bn)

    # --- state ------------------------------------------------------------------------------------
    def builder_state(self) -> dict[str, Any]:
        groups = [list(g.producers) for g in self.channels.groups.prunable()]
        return {"params": self.params.to_dict(), "groups": groups}

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state[self.name]["pruning_level"] = self._level
        state[self.name]["masks"] = {str(gid): mask.astype(int).tolist() for gid, mask in self.keep.items()}
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        mine = state[self.name]
        masks = mine.get("masks")
        if not isinstance(masks, dict) or {str(g) for g in self.keep} != set(masks):
            raise ValidationError(f"the filter_pruning state has masks for groups {sorted(masks or {})}; this model "
                                  f"has prunable groups {sorted(self.keep)}")
        self._apply({int(gid): np.asarray(mask, bool) for gid, mask in masks.items()})
        self._level = float(mine.get("pruning_level", 0.0))

    def compression_stage(self) -> CompressionStage:
        if self._level <= 0.0:
            return CompressionStage.UNCOMPRESSED
        if self._level >= self.params.target - TARGET_TOLERANCE:
            return CompressionStage.FULLY_COMPRESSED
        return CompressionStage.PARTIALLY_COMPRESSED

    # --- statistics -------------------------------------------------------------------------------
    def statistics(self, quickly_collected_only: bool = False) -> Statistics:
        full, now = self.full, pruned_cost(self.channels.groups, self.keep)
        groups = self.channels.groups
        prunable = groups.prunable()
        mode = "FLOPs fraction" if self.params.flops else "filter fraction per group"
        removed = 100 * (1 - now.params / max(full.params, 1))
        rows = [
            (f"Pruning level ({mode}): current / target", f"{self._level:.3f} / {self.params.target:.3f}"),
            ("FLOPs (M): full / current",
             f"{full.flops / 1e6:.3f} / {now.flops / 1e6:.3f} ({100 * now.level(full):.1f} % removed)"),
            ("Parameters (conv / linear): full / current", f"{full.params} / {now.params} ({removed:.1f} % removed)"),
            ("Filters: full / current", f"{full.filters} / {now.filters}"),
            ("Channel groups: prunable / skipped", f"{len(prunable)} / {len(groups) - len(prunable)}"),
            ("Compression stage", self.compression_stage().name),
        ]
        for group in prunable:
            mask = self.keep[group.id]
            for producer in group.producers:
                rows.append((f"{producer} pruning rate",
                             f"{100 * (1 - mask.mean()):.1f} % ({int(mask.sum())} / {mask.size} filters kept)"))
        return Statistics([(self.name, rows)])

    def pruned_cost(self):
        """The modelled cost (FLOPs, params, filters) under the current masks (``self.full``: unpruned)."""
        return pruned_cost(self.channels.groups, self.keep)

    # --- strip / export ---------------------------------------------------------------------------
    def strip_model(self, model: Any, do_copy: bool = True) -> Any:
        """``model`` with the pruned channels physically removed (smaller modules, per-channel state of other
        hooks on the shrunk weights sliced to match)."""
        from nncompress.backends.torch.pruning_mask import strip_pruning

        return strip_pruning(model, self.channels, self.keep, do_copy)
