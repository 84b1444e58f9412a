"""Multi-process training helpers: the one module of nncompress that imports ``torch.distributed``.

Every function works without an initialised process group (a single process): ranks and sizes read
0 and 1, collectives return their input. Under ``torchrun``/``DistributedDataParallel`` they run the
collectives of the default process group (gloo on CPU, NCCL on GPU).

``broadcast_modules`` is what makes quantizer ranges identical on every rank: rank ``src``'s
parameters and buffers overwrite every other rank's, in a fixed order (module names sorted, then
tensor names sorted). Before any tensor moves, the ranks compare what they are about to broadcast
(names, shapes, dtypes) and all raise the same error when they differ, instead of deadlocking or
silently copying into the wrong tensor (NNCF issue #431: ranks that built different quantizer setups).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from nncompress.errors import ValidationError

__all__ = [
    "all_reduce_mean",
    "barrier",
    "broadcast_modules",
    "broadcast_object",
    "is_distributed",
    "rank",
    "world_size",
]

# gloo has no bool collectives: bool buffers (e.g. a quantizer's "enabled") travel as uint8
_WIRE_DTYPE = {torch.bool: torch.uint8}


def is_distributed() -> bool:
    """True when a default process group is initialised (this process is one rank of several or one)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the default group; 0 without a process group."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of ranks in the default group; 1 without a process group."""
    return dist.get_world_size() if is_distributed() else 1


def barrier() -> None:
    """Wait for every rank; returns at once without a process group."""
    if is_distributed():
        dist.barrier()


def _check_src(src: int) -> None:
    size = world_size()
    if isinstance(src, bool) or not isinstance(src, int) or not 0 <= src < size:
        raise ValidationError(f"src={src!r} is not a rank of this process group: valid ranks are 0..{size - 1}")


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (any picklable object) on every rank; ``obj`` itself without a process group."""
    _check_src(src)
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Replace ``tensor`` in place by its mean over the ranks and return it (unchanged in one process)."""
    if not isinstance(tensor, torch.Tensor):
        raise ValidationError(f"all_reduce_mean needs a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise ValidationError(
            f"all_reduce_mean needs a floating-point tensor (a mean of integers is not an integer), got {tensor.dtype}"
        )
    if not is_distributed():
        return tensor
    work = tensor if tensor.is_contiguous() else tensor.contiguous()
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    work.div_(world_size())
    if work is not tensor:
        tensor.copy_(work)
    return tensor


def _module_tensors(named_modules: Mapping[str, nn.Module]) -> list[tuple[str, torch.Tensor]]:
    """(qualified name, tensor) of every parameter and buffer, module names then tensor names sorted."""
    if not isinstance(named_modules, Mapping):
        raise ValidationError(
            f"broadcast_modules needs a mapping of name -> torch.nn.Module, got {type(named_modules).__name__}"
        )
    tensors = []
    for name in sorted(named_modules):
        module = named_modules[name]
        if not isinstance(module, nn.Module):
            raise ValidationError(
                f"broadcast_modules: entry {name!r} is a {type(module).__name__}, not a torch.nn.Module"
            )
        own = dict(module.named_parameters()) | {k: b for k, b in module.named_buffers() if b is not None}
        tensors.extend((f"{name}.{key}" if key else name, own[key]) for key in sorted(own))
    return tensors


def _check_same_layout(tensors: list[tuple[str, torch.Tensor]]) -> None:
    """Every rank compares every rank's (name, shape, dtype) list; all raise the same error on a mismatch."""
    layout = [(name, tuple(t.shape), str(t.dtype)) for name, t in tensors]
    layouts: list[Any] = [None] * world_size()
    dist.all_gather_object(layouts, layout)
    for other_rank, other in enumerate(layouts):
        if other != layouts[0]:
            differing = sorted(set(map(repr, other)) ^ set(map(repr, layouts[0])))[:4]
            raise ValidationError(
                f"broadcast_modules: rank {other_rank} holds different tensors than rank 0 "
                f"({len(other)} vs {len(layouts[0])}; first differences: {', '.join(differing) or 'order'}); "
                "every rank must build the same compressed model before broadcasting"
            )


def broadcast_modules(named_modules: Mapping[str, nn.Module], src: int = 0) -> None:
    """Overwrite, in place, every parameter and buffer of the modules with rank ``src``'s values.

    The tensors are grouped by (device, dtype) and each group travels as one flat buffer, so the cost is
    a few collectives whatever the number of quantizers. A no-op without a process group.
    """
    _check_src(src)
    tensors = _module_tensors(named_modules)
    if not is_distributed():
        return
    _check_same_layout(tensors)
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for _, tensor in tensors:
        groups.setdefault((tensor.device, tensor.dtype), []).append(tensor)
    with torch.no_grad():
        for (_, dtype), group in groups.items():
            wire = _WIRE_DTYPE.get(dtype, dtype)
            flat = torch.cat([t.detach().reshape(-1).to(wire) for t in group])
            dist.broadcast(flat, src=src)
            offset = 0
            for tensor in group:
                count = tensor.numel()
                tensor.copy_(flat[offset : offset + count].view(tensor.shape).to(dtype))
                offset += count
