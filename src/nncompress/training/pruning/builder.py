"""The filter pruning builder: channel groups on the captured graph -> ``MaskChannels`` edits.

The groups are computed on the capture ``create_compressed_model`` already made (``bind_model`` gives
the float model and its capture: the module types decide which groups PyTorch can really shrink). Every
weight, bias and norm parameter a prunable group acts on gets an all-ones ``FilterPruningMask`` (stage
PRUNING_MASK: before any sparsity mask or weight quantizer on the same weight); the controller sets them
from the filters' importance (``pruning_init`` at construction, then the schedule).
"""

from __future__ import annotations

from typing import Any

from nncompress.errors import UnsupportedBackendError, ValidationError
from nncompress.graph.channels import PRODUCER_KINDS, PruningRules
from nncompress.graph.edits import MaskChannels
from nncompress.log import logger
from nncompress.training.pruning.controller import FilterPruningController
from nncompress.training.pruning.params import PruningParams, parse_params


class FilterPruningBuilder:
    name = "filter_pruning"

    def __init__(self, spec: Any, builder_state: dict | None = None):
        self.spec = spec
        self.params: PruningParams = parse_params(spec.section)
        self.builder_state = builder_state
        self.model: Any = None
        self.capture: Any = None
        self.channels: Any = None

    def bind_model(self, model: Any, adapter: Any) -> None:
        """The float model and the adapter that captured it (``create_compressed_model`` calls this)."""
        self.model = model
        self.capture = adapter.source(model)

    def edits(self, graph, names: dict, capabilities: Any) -> list:
        """One all-ones ``MaskChannels`` edit per weight / bias / norm parameter of every prunable group."""
        from nncompress.backends.torch.channel_removal import channels_from_capture
        from nncompress.backends.torch.pruning_mask import mask_hook_name, mask_points

        if not getattr(capabilities, "trainable", False):
            raise UnsupportedBackendError("filter_pruning trains masks: it needs a PyTorch model")
        if self.capture is None or self.capture.graph is not graph:
            raise ValidationError("FilterPruningBuilder.edits needs bind_model(model, adapter) on the captured model")
        rules = PruningRules(self.params.prune_first_conv, self.params.prune_downsample_convs,
                             frozenset(ignored_nodes(graph, names, self.params)))
        self.channels = channels_from_capture(self.model, self.capture, rules)
        prunable = self.channels.groups.prunable()
        if self.builder_state is not None:
            check_groups(self.builder_state, prunable)
        if not prunable:
            logger.warning("filter_pruning: no channel group of this model can be pruned (the reasons are logged "
                           "above); the model stays unpruned")
        points = mask_points(self.channels, {}, self.params.prune_batch_norms)
        return [MaskChannels(n, port, dim, mask, mask_hook_name(n, port, dim)) for n, port, dim, mask in points]

    def build_controller(self, model: Any) -> FilterPruningController:
        if self.channels is None:
            raise ValidationError("FilterPruningBuilder.build_controller needs edits(...) first")
        return FilterPruningController(model, self.params, self.channels)


def ignored_nodes(graph, names: dict, params: PruningParams) -> set[str]:
    """Nodes outside the pruning scope: those ``ignored_scopes`` matches, and the producers (conv /
    linear) ``target_scopes`` (when given) does not match."""
    from nncompress.training.quantization.scopes import check_scopes, matching_nodes

    if params.validate_scopes:
        check_scopes(params.ignored_scopes, names, "ignored_scopes")
        check_scopes(params.target_scopes, names, "target_scopes")
    ignored = set(matching_nodes(params.ignored_scopes, names))
    if params.target_scopes:
        targets = matching_nodes(params.target_scopes, names)
        ignored |= {n.name for n in graph if n.kind in PRODUCER_KINDS and n.name not in targets}
    return ignored


def check_groups(state: dict, prunable: list) -> None:
    """The saved state must describe the groups found now (same model, same config)."""
    saved = state.get("groups") if isinstance(state, dict) else None
    if not isinstance(saved, list):
        raise ValidationError("the filter_pruning builder state has no 'groups' list; it is not a state made by "
                              "get_compression_state()")
    now = [list(g.producers) for g in prunable]
    if saved != now:
        raise ValidationError(
            f"the saved filter_pruning state has {len(saved)} prunable groups {saved[:3]}... but this model and config "
            f"give {len(now)}: {now[:3]}...; resume with the model and config the state was saved with"
        )
