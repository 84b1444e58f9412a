"""Filter pruning masks on PyTorch: zero pruned channels on the fly, shapes kept.

``FilterPruningMask`` is a thin hook module: ``forward(weight)`` returns the weight multiplied by a 0/1
buffer along one dimension (a producer's output filters and bias, a batch norm's weight and bias, a
consumer's input channels). ``insert_pruning_masks`` puts these masks on a hooked copy of the model
through the adapter's ``HookStorage`` chains at ``Stage.PRUNING_MASK`` (before sparsity masks and weight
quantizers on the same weight). Masking the consumers' input channels too makes the masked model compute
exactly what the model with the channels removed computes, whatever lies between (biases, sigmoids).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from nncompress.errors import ValidationError
from nncompress.graph.channels import NodeMasks
from nncompress.graph.edits import Stage
from nncompress.graph.ir import InputRef
from nncompress.graph.ops import OpKind as K

from .channel_removal import ModelChannels
from .edits import Editor
from .hooks import storage_of
from .inputs import copy_model


class FilterPruningMask(nn.Module):
    """Multiplies a tensor by a per-channel 0/1 mask along ``dim`` (state: the ``binary_mask`` buffer)."""

    def __init__(self, size: int, dim: int = 0):
        super().__init__()
        self.dim = dim
        self.register_buffer("binary_mask", torch.ones(size))

    def set_mask(self, mask) -> None:
        mask = torch.as_tensor(np.asarray(mask, dtype=np.float32))
        if mask.shape != self.binary_mask.shape:
            raise ValidationError(f"a mask of shape {tuple(mask.shape)} for {self.binary_mask.numel()} channels")
        self.binary_mask.copy_(mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        shape = [1] * weight.dim()
        shape[self.dim] = -1
        return weight * self.binary_mask.to(weight.dtype).view(shape)

    def extra_repr(self) -> str:
        return f"channels={self.binary_mask.numel()}, dim={self.dim}, kept={int(self.binary_mask.sum())}"


def _norm_ports(channels: ModelChannels, node: str) -> list[int]:
    """Constant ports of a batch/group norm node holding its affine weight and bias."""
    return sorted(p for (n, p), name in channels.capture.port_params.items()
                  if n == node and name.rpartition(".")[2] in ("weight", "bias"))


def mask_points(
    channels: ModelChannels, keep: Mapping[int, np.ndarray], prune_batch_norms: bool = True
) -> list[tuple[str, int, int, np.ndarray]]:
    """(node, constant port, dim, mask) for every weight and bias a prunable group's mask acts on (groups
    missing from ``keep`` keep every channel: their masks are all ones, ready to be updated).
    ``prune_batch_norms`` False leaves batch/group norm parameters unmasked (NNCF's option)."""
    prunable = channels.groups.prunable()
    probe = channels.groups.node_masks({g.id: np.zeros(g.channels, bool) for g in prunable})
    real = channels.groups.node_masks({g.id: np.asarray(keep[g.id], bool) for g in prunable if g.id in keep})
    points = []
    for name, where in probe.items():
        masks = real.get(name, NodeMasks())
        out = masks.out if masks.out is not None else _ones(where.out)
        inp = masks.inp if masks.inp is not None else _ones(where.inp)
        node = channels.graph.node(name)
        w = node.weight
        if node.kind in (K.BATCH_NORM, K.GROUP_NORM):
            if prune_batch_norms:
                points += [(name, port, 0, out) for port in _norm_ports(channels, name)]
            continue
        if out is not None:
            points.append((name, w.port, w.out_axis, out))
            if node.bias is not None and node.bias.node == name:
                points.append((name, node.bias.port, 0, out))
        if inp is not None and node.kind is not K.DEPTHWISE_CONV:
            points.append((name, w.port, w.in_axis, inp))
    return points


def _ones(like: np.ndarray | None) -> np.ndarray | None:
    return None if like is None else np.ones(like.shape, bool)


def mask_hook_name(node: str, port: int, dim: int) -> str:
    """The hook name of the pruning mask on input ``port`` of ``node`` along ``dim``."""
    return f"{node}/pruning_mask_{port}_{dim}"


def insert_pruning_masks(
    model: nn.Module,
    channels: ModelChannels,
    keep: Mapping[int, np.ndarray] | None = None,
    prune_batch_norms: bool = True,
) -> nn.Module:
    """A hooked copy of ``model`` with a ``FilterPruningMask`` on every weight and bias of every prunable
    group, set from ``keep`` (group id -> bool mask; missing groups: all ones). ``channels`` must come from
    ``model`` (``model_channels``); ``model`` itself is not changed."""
    result = copy_model(model)
    editor = Editor(result, channels.capture)
    editor.stage = Stage.PRUNING_MASK
    for node, port, dim, mask in mask_points(channels, keep or {}, prune_batch_norms):
        hook = FilterPruningMask(len(mask), dim)
        hook.set_mask(mask)
        key, index = editor._before(InputRef(node, port))
        editor._insert(key, index, mask_hook_name(node, port, dim), hook)
        editor._note_constant(key)
    return result


def update_pruning_masks(masked: nn.Module, channels: ModelChannels, keep: Mapping[int, np.ndarray]) -> None:
    """Set the masks of a model made by ``insert_pruning_masks`` to ``keep`` (in place)."""
    storage = storage_of(masked)
    if storage is None:
        raise ValidationError("this model has no pruning masks; make it with insert_pruning_masks")
    for node, port, dim, mask in mask_points(channels, keep):
        name = mask_hook_name(node, port, dim)
        if name not in storage.keys and channels.graph.node(node).kind in (K.BATCH_NORM, K.GROUP_NORM):
            continue  # made with prune_batch_norms=False
        if name not in storage.keys:
            raise ValidationError(f"no pruning mask {name!r} in this model; it was made from other channel groups")
        storage.module(name).set_mask(mask)


def strip_pruning(
    model: nn.Module, channels: ModelChannels, keep: Mapping[int, np.ndarray], do_copy: bool = True
) -> nn.Module:
    """``model`` (a copy unless ``do_copy`` is False) with its ``FilterPruningMask`` hooks removed and the
    channels ``keep`` drops physically removed (``remove_channels``). Other hooks left on a shrunk
    constant (a per-channel weight quantizer's scale ``[C, 1, 1, 1]``, ...) lose the same channels, so
    the result computes what the masked model computes."""
    from .channel_removal import remove_channels
    from .hooks import detach_storage

    result = copy_model(model) if do_copy else model
    storage = storage_of(result)
    if storage is not None:
        for name in list(storage.keys):
            if isinstance(storage.module(name), FilterPruningMask):
                storage.remove(name)
    keep = {gid: np.asarray(mask, bool) for gid, mask in keep.items()}
    remove_channels(result, channels, keep, do_copy=False)
    if storage is not None:
        _slice_hooks(storage, channels, mask_points(channels, keep))
        if len(storage) == 0:
            detach_storage(result)  # nothing left: a plain model with its class's own forward
    return result


def _slice_hooks(storage, channels: ModelChannels, points) -> None:
    done: set[tuple[int, int]] = set()
    for node, port, dim, mask in points:
        if mask.all():
            continue
        rank = len(channels.graph.node(node).const_ports[port])
        dim %= rank
        for hook in storage.chain("pre", node, port):
            module = storage.module(hook)
            if (id(module), dim) not in done:
                done.add((id(module), dim))
                slice_channels(module, rank, dim, mask)


def slice_channels(module: nn.Module, rank: int, dim: int, mask: np.ndarray) -> None:
    """Keep only the ``mask`` entries along ``dim`` of every parameter and buffer of ``module`` (its own,
    not its children's) of rank ``rank`` with ``len(mask)`` entries there: a hook's per-channel state."""
    if len(mask) < 2:
        return
    index = torch.as_tensor(np.flatnonzero(mask))
    with torch.no_grad():
        for name, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            if tensor is None or tensor.dim() != rank or tensor.shape[dim] != len(mask):
                continue
            value = tensor.detach().index_select(dim, index.to(tensor.device)).clone()
            if isinstance(tensor, nn.Parameter):
                setattr(module, name, nn.Parameter(value, requires_grad=tensor.requires_grad))
            else:
                module._buffers[name] = value
    shape = getattr(module, "shape", None)
    if isinstance(shape, tuple) and len(shape) == rank and shape[dim] == len(mask):
        module.shape = shape[:dim] + (int(mask.sum()),) + shape[dim + 1:]
