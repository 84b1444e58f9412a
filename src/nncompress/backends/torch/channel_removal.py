"""Physical channel removal for filter pruning on PyTorch: smaller modules, not zeros.

``model_channels`` captures a model, computes its channel groups (``graph.channels``) with the calls of
one module merged, and maps every graph node to the module that owns its weights; groups touching a
node this backend cannot resize (a functional op on a free tensor, a weight read elsewhere, an
unsupported module type) are skipped with a reason. ``remove_channels`` returns a copy whose
Conv/ConvTranspose/Linear/BatchNorm/GroupNorm modules are rebuilt smaller: producers lose output
channels, consumers the matching input channels (concat offsets and flatten blocks included),
depthwise convs shrink with their ``groups``; a module called twice is shrunk once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from nncompress.errors import UnsupportedModelError, ValidationError
from nncompress.graph.channels import ChannelGroups, NodeMasks, PruningRules, channel_groups, log_skipped
from nncompress.graph.ir import Graph

from .capture import Capture
from .inputs import copy_model

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_T_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)
SUPPORTED = (*CONV_TYPES, *CONV_T_TYPES, nn.Linear, *NORM_TYPES)


@dataclass
class ModelChannels:
    """Channel groups of a captured model plus the module path of every node that owns weights."""

    groups: ChannelGroups
    capture: Capture
    modules: dict[str, str] = field(default_factory=dict)  # node -> module path

    @property
    def graph(self) -> Graph:
        return self.groups.graph

    def weight_of(self, model: nn.Module, node: str) -> np.ndarray:
        """The float32 weight of producer ``node`` in ``model`` (numpy)."""
        module = model.get_submodule(self.modules[node])
        return module.weight.detach().cpu().float().numpy()


def _owner(names: set[str], model: nn.Module) -> tuple[str | None, str | None]:
    """(module path, reason it cannot be resized) of the module owning the parameters ``names``."""
    paths = {name.rpartition(".")[0] for name in names}
    if len(paths) != 1:
        return None, "its weights are not the parameters of one module"
    path = paths.pop()
    module = model.get_submodule(path)
    if not isinstance(module, SUPPORTED):
        return None, f"module '{path}' ({type(module).__name__}) cannot be resized"
    return path, None


def model_channels(model: nn.Module, example_input: Any, rules: PruningRules | None = None) -> ModelChannels:
    """Capture ``model`` on ``example_input`` and compute its channel groups (skipped ones are logged)."""
    from nncompress.backends.torch.capture import capture_graph

    return channels_from_capture(model, capture_graph(model, example_input), rules)


def channels_from_capture(
    model: nn.Module, capture: Capture, rules: PruningRules | None = None, log: bool = True
) -> ModelChannels:
    """The channel groups of ``model`` from a capture of it (e.g. the one ``create_compressed_model``
    already made): calls of one module merged, groups needing a module this backend cannot resize skipped."""
    graph = capture.graph
    params: dict[str, set[str]] = {}
    for (node, _), name in capture.port_params.items():
        params.setdefault(node, set()).add(name)
    owners: dict[str, tuple[str | None, str | None]] = {}
    calls: dict[str, list[str]] = {}
    for node in graph:
        if node.name in params or node.weight is not None:
            owners[node.name] = _owner(params.get(node.name, set()), model)
            if owners[node.name][0] is not None:
                calls.setdefault(owners[node.name][0], []).append(node.name)
    groups = channel_groups(graph, rules, shared=[v for v in calls.values() if len(v) > 1], log=False)
    modules = {node: path for node, (path, _) in owners.items() if path is not None}
    for group in groups:
        members = group.producers + [c.node for c in group.consumers] + group.followers
        for node in members:
            if node not in owners and not graph.node(node).const_ports:
                continue  # nothing per channel to resize (a norm without affine parameters or statistics)
            path, reason = owners.get(node, (None, "it has no weights in a module"))
            if reason is not None:
                group.reasons.append(f"'{node}': {reason}")
            elif _read_elsewhere(capture, path, calls[path]):
                group.reasons.append(f"the parameters of module '{path}' are also read outside it")
    if log:
        log_skipped(groups)
    return ModelChannels(groups, capture, modules)


def _read_elsewhere(capture: Capture, path: str, nodes: list[str]) -> bool:
    for (node, _), name in capture.port_params.items():
        if name.rpartition(".")[0] == path and node not in nodes:
            return True
    return False


def _module_masks(channels: ModelChannels, keep: Mapping[int, np.ndarray]) -> dict[str, NodeMasks]:
    """Masks per module path; the calls of one module must agree."""
    result: dict[str, NodeMasks] = {}
    for node, masks in channels.groups.node_masks(dict(keep)).items():
        path = channels.modules.get(node)
        if path is None:
            raise ValidationError(f"node {node!r} needs resizing but owns no module; its group is not prunable")
        seen = result.get(path)
        if seen is not None and not (_same(seen.out, masks.out) and _same(seen.inp, masks.inp)):
            raise ValidationError(f"the calls of module '{path}' need different channel masks")
        result[path] = masks
    return result


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


def remove_channels(
    model: nn.Module, channels: ModelChannels, keep: Mapping[int, np.ndarray], do_copy: bool = True
) -> nn.Module:
    """A copy of ``model`` (same class; ``do_copy`` False: ``model`` itself) with the channels ``keep``
    drops physically removed.

    ``keep``: group id -> bool mask over the group's channels (groups not given keep everything; masks
    of groups that are not prunable are refused).
    """
    for gid, mask in keep.items():
        group = channels.groups.groups[gid] if 0 <= gid < len(channels.groups) else None
        if group is None:
            raise ValidationError(f"no channel group {gid}; valid ids: 0..{len(channels.groups) - 1}")
        mask = np.asarray(mask, bool)
        if mask.shape != (group.channels,) or not mask.any():
            raise ValidationError(f"group {gid} needs a mask of {group.channels} booleans with at least one True")
        if not group.prunable and not mask.all():
            raise ValidationError(f"group {gid} cannot be pruned: {group.reason}")
    result = copy_model(model) if do_copy else model
    for path, masks in _module_masks(channels, keep).items():
        _shrink(result.get_submodule(path), path, masks)
    return result


def _take(param: torch.Tensor | None, dim: int, mask: np.ndarray | None) -> torch.Tensor | None:
    if param is None or mask is None:
        return param
    index = torch.as_tensor(np.flatnonzero(mask), device=param.device)
    return param.detach().index_select(dim, index).clone()


def _set(module: nn.Module, name: str, value: torch.Tensor | None) -> None:
    old = getattr(module, name)
    if value is None or old is None or value is old:
        return
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(value, requires_grad=old.requires_grad))
    else:
        setattr(module, name, value)


def _shrink(module: nn.Module, path: str, masks: NodeMasks) -> None:
    out, inp = masks.out, masks.inp
    if isinstance(module, CONV_TYPES):
        depthwise = module.groups > 1
        if depthwise:  # followers only: groups == in == out
            kept = int(np.count_nonzero(out))
            module.groups = module.in_channels = kept
        else:
            _set(module, "weight", _take(module.weight, 1, inp))
            module.in_channels = module.weight.shape[1]
        _set(module, "weight", _take(module.weight, 0, out))
        _set(module, "bias", _take(module.bias, 0, out))
        module.out_channels = module.weight.shape[0]
    elif isinstance(module, CONV_T_TYPES):
        _set(module, "weight", _take(_take(module.weight, 0, inp), 1, out))
        _set(module, "bias", _take(module.bias, 0, out))
        module.in_channels, module.out_channels = module.weight.shape[0], module.weight.shape[1]
    elif isinstance(module, nn.Linear):
        _set(module, "weight", _take(_take(module.weight, 1, inp), 0, out))
        _set(module, "bias", _take(module.bias, 0, out))
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, nn.GroupNorm):
        for name in ("weight", "bias"):
            _set(module, name, _take(getattr(module, name), 0, out))
        module.num_groups = module.num_channels = int(np.count_nonzero(out))
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        for name in ("weight", "bias", "running_mean", "running_var"):
            _set(module, name, _take(getattr(module, name), 0, out))
        module.num_features = int(np.count_nonzero(out))
    else:
        raise UnsupportedModelError(f"module '{path}' ({type(module).__name__}) cannot be resized")
