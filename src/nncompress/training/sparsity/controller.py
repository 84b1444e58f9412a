"""Sparsity controllers: magnitude (masks from weight importance and a level), const (fixed masks); the RB
controller is in ``rb``. The masks are ``backends.torch.sparsity`` modules in the model's hook chains;
the formulas are ``numerics.sparsity``'s. Strip bakes each mask into its weight (zeros kept, hooks removed).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from nncompress.errors import ValidationError
from nncompress.log import logger
from nncompress.numerics import sparsity as sp
from nncompress.training.controller import CompressionAlgorithmController, CompressionStage, Statistics
from nncompress.training.schedulers import BaseCompressionScheduler, StubCompressionScheduler
from nncompress.training.sparsity.scheduler import SparsityParams, SparsityScheduler


class SparsityController(CompressionAlgorithmController):
    """What the sparsity controllers share: masks by weight name, statistics, strip, state."""

    name = "sparsity"
    strip_priority = 10  # masks are baked into the weights before channels are removed or quantizers converted

    def __init__(self, model: Any, masks: dict[str, Any], scheduler: BaseCompressionScheduler,
                 section: dict | None = None):
        super().__init__(model, scheduler)
        self.masks = masks  # {weight (parameter) name: mask module}, one per weight even when shared
        self.section = section or {}
        self._level = 0.0

    # --- masks ------------------------------------------------------------------------------------
    def weight(self, name: str) -> Any:
        from nncompress.backends.torch.inputs import named_tensor

        return named_tensor(self.model, name)

    def layer_levels(self) -> dict[str, float]:
        """{weight name: fraction of its weights the mask zeroes}."""
        return {name: sp.sparsity_of(m.binary_mask) for name, m in self.masks.items()}

    def measured_level(self) -> float:
        """The fraction of masked weights over every weight in scope."""
        total = sum(m.binary_mask.numel() for m in self.masks.values())
        kept = sum(int(m.binary_mask.sum()) for m in self.masks.values())
        return 1.0 - kept / total if total else 0.0

    def _layer(self, target: Any) -> str:
        """The weight name a ``target_layer`` argument names (a weight or module name)."""
        for candidate in (target, f"{target}.weight"):
            if isinstance(candidate, str) and candidate in self.masks:
                return candidate
        raise ValidationError(f"target_layer {target!r} is not a sparsified weight; valid: {', '.join(self.masks)}")

    # --- controller API -----------------------------------------------------------------------------
    def compression_stage(self) -> CompressionStage:
        target = self.target_level()
        if self._level <= 0.0:
            return CompressionStage.UNCOMPRESSED
        if self._level >= target:
            return CompressionStage.FULLY_COMPRESSED
        return CompressionStage.PARTIALLY_COMPRESSED

    def target_level(self) -> float:
        return 0.0

    @property
    def compression_rate(self) -> float:
        """The sparsity level last set (by the scheduler or ``set_sparsity_level``)."""
        return self._level

    @compression_rate.setter
    def compression_rate(self, value: float) -> None:
        self.set_sparsity_level(value)

    def set_sparsity_level(self, level: float, target_layer: Any = None) -> None:
        raise ValidationError(f"the {self.name} algorithm has fixed masks; its sparsity level cannot be set")

    def thresholds(self) -> dict[str, float | None]:
        return {name: None for name in self.masks}

    def statistics(self, quickly_collected_only: bool = False) -> Statistics:
        levels = self.layer_levels()
        model_params = _model_parameters(self.model)
        in_scope = sum(m.binary_mask.numel() for m in self.masks.values())
        zeros = sum(round(levels[n] * m.binary_mask.numel()) for n, m in self.masks.items())
        rows = [
            ("Sparsity level of the model (all parameters)", _pct(zeros / model_params if model_params else 0.0)),
            ("Sparsity level of the sparsified weights", _pct(self.measured_level())),
            ("Scheduled level / target", f"{_pct(self.compression_rate)} / {_pct(self.target_level())}"),
            ("Sparsified weights (elements)", f"{len(self.masks)} ({in_scope})"),
            *self._extra_rows(),
            ("Compression stage", self.compression_stage().name),
        ]
        thresholds = self.thresholds()
        for name, m in self.masks.items():
            threshold = thresholds[name]
            shown = "-" if threshold is None else ("-inf" if threshold == -math.inf else f"{threshold:.4g}")
            rows.append((f"{name} {list(m.binary_mask.shape)}", f"level {_pct(levels[name])}, threshold {shown}"))
        return Statistics([(self.name, rows)])

    def _extra_rows(self) -> list[tuple[str, str]]:
        return []

    def builder_state(self) -> dict[str, Any]:
        return {"sparsified_weights": list(self.masks)}

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state[self.name]["sparsity_state"] = {"level": self._level, **self._extra_state()}
        return state

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        saved = state[self.name].get("sparsity_state") or {}
        self._level = float(saved.get("level", self._level))
        self._load_extra_state(saved)

    def _load_extra_state(self, saved: dict[str, Any]) -> None:
        """Restore what ``_extra_state`` saved."""

    def initialize_from_config(self, nncf_config: Any) -> None:
        """BatchNorm adaptation when the section's ``initializer`` asks for it and a loader is registered."""
        from nncompress.training.bn_adaptation import bn_adaptation_loader

        bn = self.section.get("initializer", {}).get("batchnorm_adaptation")
        samples = None if bn is None else bn.get("num_bn_adaptation_samples", 2000)
        loader = bn_adaptation_loader(nncf_config, samples)
        if loader is not None:
            self.adapt_batchnorm(loader, samples)

    def adapt_batchnorm(self, data_loader: Any, num_samples: int) -> int:
        from nncompress.training.bn_adaptation import adapt_batchnorm

        return adapt_batchnorm(self.model, data_loader, num_samples)

    def strip_model(self, model: Any, do_copy: bool = True) -> Any:
        return bake_masks(model, do_copy)


def _pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def _model_parameters(model: Any) -> int:
    """Parameter elements of the model itself (hook modules such as RB mask logits left out)."""
    from nncompress.backends.torch.hooks import is_storage_path

    return sum(p.numel() for name, p in model.named_parameters() if not is_storage_path(name))


class MagnitudeSparsityController(SparsityController):
    """Masks ``importance > threshold``; the threshold follows the scheduled level (global or per layer)."""

    name = "magnitude_sparsity"

    def __init__(self, model: Any, masks: dict[str, Any], params: SparsityParams, section: dict | None = None):
        self.params = params
        self._thresholds: dict[str, float] = {name: -math.inf for name in masks}
        self._frozen = False
        scheduler = SparsityScheduler(params, self._scheduled, self.freeze, self.measured_level)
        super().__init__(model, masks, scheduler, section)

    def target_level(self) -> float:
        return self.params.target_level

    def thresholds(self) -> dict[str, float | None]:
        return dict(self._thresholds)

    def _scheduled(self, level: float) -> None:
        if not self._frozen:
            self.set_sparsity_level(level)

    def freeze(self) -> None:
        """Stop the scheduler from changing the masks (``set_sparsity_level`` still does)."""
        self._frozen = True

    def _importance(self, name: str) -> Any:
        return sp.importance(self.weight(name), self.params.weight_importance)

    def _chunks(self) -> Iterator[Any]:
        for name in self.masks:
            yield from sp.importance_chunks(self.weight(name), self.params.weight_importance)

    def set_sparsity_level(self, level: float, target_layer: Any = None) -> None:
        """Masks for ``level``: one threshold over every weight (global mode; bounded memory) or one per
        weight (local mode, or only ``target_layer``'s weight when given)."""
        level = sp.check_level(level)
        if target_layer is not None:
            name = self._layer(target_layer)
            self._set_threshold(name, sp.local_threshold(self._importance(name), level))
            return
        if self.params.mode == "global":
            threshold = sp.global_threshold(self._chunks, level)
            for name in self.masks:
                self._set_threshold(name, threshold)
        else:
            for name in self.masks:
                self._set_threshold(name, sp.local_threshold(self._importance(name), level))
        self._level = level

    def _set_threshold(self, name: str, threshold: float) -> None:
        self.masks[name].set_mask(sp.binary_mask(self._importance(name), threshold))
        self._thresholds[name] = threshold

    def _extra_state(self) -> dict[str, Any]:
        return {"thresholds": dict(self._thresholds), "frozen": self._frozen}

    def _load_extra_state(self, saved: dict[str, Any]) -> None:
        self._thresholds.update({k: float(v) for k, v in saved.get("thresholds", {}).items() if k in self.masks})
        self._frozen = bool(saved.get("frozen", self._frozen)) or bool(getattr(self.scheduler, "frozen", False))


class ConstSparsityController(SparsityController):
    """Fixed masks: the zeros of the weights at build time, or a checkpoint's masks (``load_state``)."""

    name = "const_sparsity"

    def __init__(self, model: Any, masks: dict[str, Any], section: dict | None = None):
        super().__init__(model, masks, StubCompressionScheduler(), section)

    def target_level(self) -> float:
        return self.measured_level()

    @property
    def compression_rate(self) -> float:
        """The fraction of masked weights (fixed masks: measured)."""
        return self.measured_level()

    @compression_rate.setter
    def compression_rate(self, value: float) -> None:
        self.set_sparsity_level(value)

    def compression_stage(self) -> CompressionStage:
        return CompressionStage.FULLY_COMPRESSED


def bake_masks(model: Any, do_copy: bool = True) -> Any:
    """``model`` (a copy when ``do_copy``) with every sparsity mask multiplied into its weight and the mask
    hooks removed; later hooks on the weight (a quantizer) stay and now read the zeros. A mask whose weight
    is not a parameter of the model stays a hook."""
    import torch

    from nncompress.backends.torch.hooks import detach_storage, storage_of
    from nncompress.backends.torch.inputs import copy_model, named_tensor
    from nncompress.backends.torch.sparsity import mask_hooks

    result = copy_model(model) if do_copy else model
    storage = storage_of(result)
    if storage is None:
        return result
    baked: dict[int, bool] = {}
    with torch.no_grad():
        for hook, module in list(mask_hooks(result)):
            if id(module) not in baked:
                try:
                    target = named_tensor(result, module.tensor_name)
                except AttributeError:
                    target = None
                if isinstance(target, torch.Tensor) and target.numel() == module.binary_mask.numel():
                    mask = module.binary_mask.reshape(target.shape).to(device=target.device, dtype=target.dtype)
                    target.mul_(mask)
                    baked[id(module)] = True
                else:
                    baked[id(module)] = False
                    logger.warning("sparsity mask %s is kept as a hook: %r is not a parameter of the model",
                                   hook, module.tensor_name)
            if baked[id(module)]:
                storage.remove(hook)
    if len(storage) == 0:
        detach_storage(result)
    return result
