"""Builders of magnitude, RB and const sparsity for ``create_compressed_model``.

``edits`` puts one ``MaskWeight`` edit (all ones; RB: trainable) on the weight of every Conv (1d/2d/3d,
transposed), Linear and Embedding operation in scope (``ignored_scopes`` / ``target_scopes`` in NNCF's
scope forms); a weight read by several operations gets one mask. The torch adapter applies them with every
other algorithm's edits (stage SPARSITY_MASK: after a pruning mask, before a weight quantizer, whatever the
config's list order); ``build_controller`` finds the mask modules in the applied copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nncompress.api.prune import weight_groups
from nncompress.errors import UnsupportedBackendError, ValidationError
from nncompress.graph.edits import MaskWeight, Stage
from nncompress.training.quantization.scopes import check_scopes, matching_nodes
from nncompress.training.sparsity.controller import (
    ConstSparsityController,
    MagnitudeSparsityController,
    SparsityController,
)
from nncompress.training.sparsity.rb import RBSparsityController
from nncompress.training.sparsity.scheduler import SparsityParams


class SparsityBuilder:
    """Common part: targets, edits, mask lookup, builder state."""

    name = "sparsity"
    trainable = False

    def __init__(self, spec: Any, builder_state: dict | None = None):
        self.spec = spec
        self.section: dict = dict(getattr(spec, "section", None) or {})
        self.builder_state = builder_state
        self.groups: dict[str, list] = {}  # weight name -> the graph nodes reading it

    def edits(self, graph: Any, names: dict, capabilities: Any) -> list:
        if not getattr(capabilities, "trainable", False):
            raise UnsupportedBackendError(f"{self.name} trains masks on PyTorch models only; got a "
                                          f"{getattr(capabilities, 'name', '?')} model")
        self.groups = self._targets(graph, names)
        if not self.groups:
            raise ValidationError(f"{self.name}: the model has no Conv/Linear/Embedding weight in scope to sparsify "
                                  "(check ignored_scopes / target_scopes)")
        return [
            MaskWeight(node.name, node.weight.port, np.ones(tuple(node.const_ports[node.weight.port]), bool),
                       weight, self.trainable)
            for weight, nodes in self.groups.items() for node in nodes
        ]

    def _targets(self, graph: Any, names: dict) -> dict[str, list]:
        ignored_scopes = tuple(self.section.get("ignored_scopes") or ())
        target_scopes = tuple(self.section.get("target_scopes") or ())
        ignored_scopes = (ignored_scopes,) if isinstance(ignored_scopes, str) else ignored_scopes
        target_scopes = (target_scopes,) if isinstance(target_scopes, str) else target_scopes
        if self.section.get("validate_scopes", True):
            check_scopes(ignored_scopes, names, f"{self.name}.ignored_scopes")
            check_scopes(target_scopes, names, f"{self.name}.target_scopes")
        skip = set(matching_nodes(ignored_scopes, names))
        if target_scopes:
            targets = matching_nodes(target_scopes, names)
            skip |= {n for n in names if n not in targets}
        groups = weight_groups(graph, skip)
        if self.builder_state is None:
            return groups
        saved = self.builder_state.get("sparsified_weights")
        if not isinstance(saved, list) or not set(saved) <= set(groups):
            raise ValidationError(
                f"the {self.name} builder state's sparsified_weights {saved!r} do not fit this model (weights in "
                f"scope: {sorted(groups)}); it is not a state get_compression_state() made for this model and config"
            )
        return {name: groups[name] for name in saved}

    def find_masks(self, model: Any) -> dict[str, Any]:
        """{weight name: its mask module} in the applied ``model`` (found on each weight's hook chain)."""
        from nncompress.backends.torch.hooks import storage_of
        from nncompress.backends.torch.sparsity import MASKS

        storage = storage_of(model)
        masks: dict[str, Any] = {}
        for weight, nodes in self.groups.items():
            node = nodes[0]
            for hook in storage.chain("pre", node.name, node.weight.port) if storage is not None else ():
                module = storage.module(hook)
                if storage.stages.get(hook) == Stage.SPARSITY_MASK and isinstance(module, MASKS):
                    masks[weight] = module
                    break
            else:
                raise ValidationError(f"{self.name}: no sparsity mask on {weight!r} after the edits were applied")
        return masks

    def build_controller(self, model: Any) -> SparsityController:
        raise NotImplementedError

    def _scale_gradients(self, masks: dict[str, Any]) -> None:
        multiplier = self.section.get("compression_lr_multiplier")
        if multiplier is not None:
            from nncompress.training.quantization.builder import scale_gradients

            scale_gradients(list(masks.values()), float(multiplier))


class MagnitudeSparsityBuilder(SparsityBuilder):
    name = "magnitude_sparsity"

    def __init__(self, spec: Any, builder_state: dict | None = None):
        super().__init__(spec, builder_state)
        self.params = SparsityParams.from_section(self.section, "polynomial", self.name)

    def build_controller(self, model: Any) -> MagnitudeSparsityController:
        ctrl = MagnitudeSparsityController(model, self.find_masks(model), self.params, self.section)
        if self.params.initial_level > 0:
            ctrl.set_sparsity_level(self.params.initial_level)
        return ctrl


class RBSparsityBuilder(SparsityBuilder):
    name = "rb_sparsity"
    trainable = True

    def __init__(self, spec: Any, builder_state: dict | None = None):
        super().__init__(spec, builder_state)
        self.params = SparsityParams.from_section(self.section, "exponential", self.name)

    def build_controller(self, model: Any) -> RBSparsityController:
        masks = self.find_masks(model)
        self._scale_gradients(masks)
        return RBSparsityController(model, masks, self.params, self.section)


class ConstSparsityBuilder(SparsityBuilder):
    name = "const_sparsity"

    def build_controller(self, model: Any) -> ConstSparsityController:
        masks = self.find_masks(model)
        for weight, mask in masks.items():
            with _no_grad():
                mask.set_mask(_parameter(model, weight) != 0)
        return ConstSparsityController(model, masks, self.section)


def _parameter(model: Any, name: str) -> Any:
    from nncompress.backends.torch.inputs import named_tensor

    return named_tensor(model, name)


def _no_grad():
    import torch

    return torch.no_grad()
