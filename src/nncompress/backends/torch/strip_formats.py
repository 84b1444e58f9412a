"""``strip`` formats beyond NATIVE for PyTorch models: DQ (integer weights + scale) and IN_PLACE (float).

- ``dequantize``: each quantized weight (a weight quantizer on a parameter that one operation reads)
  becomes a ``DequantizedWeight`` submodule ``{attr}_dq`` holding the integer levels (int8/uint8 for
  grids of at most 8 bits), the scale and the zero point; a forward pre-hook sets ``module.{attr}`` to
  ``(q - zero_point) * scale`` while the module runs (the same mechanism as compressed weights,
  ``weight_storage.py``). Outputs equal the NATIVE strip's up to float rounding. Weights stored
  compressed by ``compress_weights`` are already in this form and stay as they are.
- ``in_place``: every weight becomes a plain float parameter holding its compressed value: quantized
  weights are baked (as NATIVE does) and weights stored compressed are decompressed, their storage and
  hooks removed.

Both then strip what is left as NATIVE does (activation quantizers stay unless asked otherwise).
"""

from __future__ import annotations

import copy
from functools import partial

import torch
from torch import nn

from nncompress.log import logger

from .export import strip as strip_native
from .fake_quantize import FakeQuantizer, _channel_shape
from .hooks import storage_of
from .inputs import named_tensor
from .qat import BaseQATQuantizer
from .weight_storage import CompressedStorage, materialize_weight, release_weight

_INT_TYPES = ((-128, 127, torch.int8), (0, 255, torch.uint8), (-(2**15), 2**15 - 1, torch.int16))


class DequantizedWeight(nn.Module):
    """A weight kept as integer levels, scale and zero point; ``forward()`` gives ``(q - zero_point) * scale``."""

    def __init__(self, levels: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, dtype: torch.dtype):
        super().__init__()
        self.register_buffer("weight_int", levels)
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point)
        self.register_buffer("dtype_ref", torch.empty(0, dtype=dtype, device=levels.device), persistent=False)

    @property
    def placeholder(self) -> torch.Tensor:
        """A ``meta`` tensor with the weight's shape and dtype: ``module.weight`` outside forward."""
        return torch.empty(self.weight_int.shape, dtype=self.dtype_ref.dtype, device="meta")

    def forward(self) -> torch.Tensor:
        values = (self.weight_int.float() - self.zero_point.float()) * self.scale
        return values.to(self.dtype_ref.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight_int.dtype}, shape={list(self.weight_int.shape)}"


def _grid(quantizer: nn.Module, ndim: int) -> tuple[torch.Tensor, torch.Tensor, int, int] | None:
    """(scale, zero point, level_low, level_high) broadcastable to a weight of ``ndim`` dims, or None."""
    if isinstance(quantizer, FakeQuantizer):
        scale, zero_point = quantizer.grid()
        shape = _channel_shape(ndim, quantizer.axis)
        return scale.reshape(shape), zero_point.reshape(shape), quantizer.level_low, quantizer.level_high
    if isinstance(quantizer, BaseQATQuantizer) and quantizer.is_enabled:
        step, zero_point = quantizer.grid()[:2]
        zero_point = torch.zeros_like(step) if zero_point is None else zero_point
        return step, zero_point, *quantizer.levels
    return None


def _dequantized(quantizer: nn.Module, value: torch.Tensor) -> DequantizedWeight | None:
    """The integer form of ``quantizer(value)``, or None when the quantizer has no integer grid we can store."""
    grid = _grid(quantizer, value.ndim)
    if grid is None:
        return None
    scale, zero_point, low, high = (t.detach().float() if torch.is_tensor(t) else t for t in grid)
    dtype = next((d for lo, hi, d in _INT_TYPES if lo <= low and high <= hi), None)
    if dtype is None:
        return None
    fake = quantizer(value).float()
    levels = torch.clamp(torch.round(fake / scale + zero_point), low, high)
    result = DequantizedWeight(levels.to(dtype), scale.clone(), zero_point.round().to(dtype), value.dtype)
    error = (result().float() - fake).abs().max()
    if error > 1e-5 * float(fake.abs().max()) + 1e-12:  # the quantizer does not compute on this grid
        return None
    return result


def _owner(model: nn.Module, pname: str, tensor: torch.Tensor) -> tuple[nn.Module, str] | None:
    path, _, attr = pname.rpartition(".")
    try:
        module = model.get_submodule(path) if path else model
    except AttributeError:
        return None
    return (module, attr) if module._parameters.get(attr) is tensor or module._buffers.get(attr) is tensor else None


def _install(module: nn.Module, attr: str, weight: DequantizedWeight) -> None:
    module._parameters.pop(attr, None)
    module._buffers.pop(attr, None)
    key, n = f"{attr}_dq", 1
    while key in module._modules or hasattr(module, key):
        key, n = f"{attr}_dq_{n}", n + 1
    module.add_module(key, weight)
    module.__dict__[attr] = weight.placeholder
    module.register_forward_pre_hook(partial(materialize_weight, attr=attr, key=key))
    module.register_forward_hook(partial(release_weight, attr=attr, key=key), always_call=True)


def strip_dequantize(model: nn.Module, keep_activation_quantizers: bool = True, do_copy: bool = True) -> nn.Module:
    """A copy (``model`` itself when not ``do_copy``) whose quantized weights are integer levels + scale."""
    result = copy.deepcopy(model) if do_copy else model
    storage = storage_of(result)
    if storage is None:
        return result
    with torch.no_grad():
        for key, pname in list(storage.constants.items()):
            chain = list(storage.chains.get(key, ()))
            if pname is None or not chain:
                continue
            target = named_tensor(result, pname)
            owner = _owner(result, pname, target)
            value = target
            for hook in chain[:-1]:
                value = storage.module(hook)(value)
            weight = _dequantized(storage.module(chain[-1]), value) if owner is not None else None
            if weight is None:
                logger.warning("strip(strip_format='dequantize'): %s keeps float weights (its last hook %s has no "
                               "integer grid of at most 16 bits)", pname, type(storage.module(chain[-1])).__name__)
                continue
            _install(*owner, weight)
            for hook in chain:
                storage.remove(hook)
    return strip_native(result, keep_activation_quantizers, do_copy=False)


def _hooks_of(module: nn.Module, key: str) -> list[tuple[dict, int]]:
    """(hook dict, handle id) of the materialize/release hooks that read child ``key``."""
    found = []
    for hooks in (module._forward_pre_hooks, module._forward_hooks):
        for handle, hook in list(hooks.items()):
            func = getattr(hook, "func", None)
            if func in (materialize_weight, release_weight) and hook.keywords.get("key") == key:
                found.append((hooks, handle))
    return found


def strip_in_place(model: nn.Module, keep_activation_quantizers: bool = True, do_copy: bool = True) -> nn.Module:
    """A copy (``model`` itself when not ``do_copy``) with every compressed weight as a float parameter."""
    result = copy.deepcopy(model) if do_copy else model
    decompressed: dict[int, nn.Parameter] = {}  # tied weights share one storage -> one parameter
    with torch.no_grad():
        for module in list(result.modules()):
            for key, child in list(module._modules.items()):
                if not isinstance(child, (CompressedStorage, DequantizedWeight)):
                    continue
                hooks = _hooks_of(module, key)
                attrs = {hooks_dict[h].keywords["attr"] for hooks_dict, h in hooks}
                if len(attrs) != 1:
                    continue  # a storage read through a graph hook: stripped below
                attr = attrs.pop()
                if id(child) not in decompressed:
                    decompressed[id(child)] = nn.Parameter(child().detach().clone())
                for hooks_dict, handle in hooks:
                    hooks_dict.pop(handle, None)
                    module._forward_hooks_always_called.pop(handle, None)
                del module._modules[key]
                module.__dict__.pop(attr, None)
                module.register_parameter(attr, decompressed[id(child)])
    return strip_native(result, keep_activation_quantizers, do_copy=False)
