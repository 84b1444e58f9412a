"""``strip`` (bake quantized weights into the parameters) and ``export_onnx`` (standard QDQ ONNX)."""

from __future__ import annotations

import copy
import inspect
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from nncompress.errors import ValidationError

from .fake_quantize import FakeQuantizer
from .hooks import detach_storage, original_forward, storage_of
from .inputs import eval_mode, named_tensor, split_item
from .mode import named_leaves


def strip(model: nn.Module, keep_activation_quantizers: bool = True, do_copy: bool = True) -> nn.Module:
    """A copy of ``model`` (``model`` itself when not ``do_copy``) with fake-quantized weights written into
    its parameters.

    Weight quantizers (and replaced constants) on a parameter no other operation reads are baked in
    and removed; those on shared or computed constants stay as hooks. Activation quantizers stay
    (``keep_activation_quantizers``, the default: the copy computes what the quantized model
    computes) or are dropped (weights-only simulation). Multipliers always stay: the baked weights
    depend on them. When no hook is left the copy is a plain model with its class's own forward.
    """
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
            value = target
            for hook in chain:
                value = storage.module(hook)(value)
            target.copy_(value)
            for hook in chain:
                storage.remove(hook)
    if not keep_activation_quantizers:
        for key, chain in list(storage.chains.items()):
            if key not in storage.constants:
                for hook in [h for h in chain if isinstance(storage.module(h), FakeQuantizer)]:
                    storage.remove(hook)
    if len(storage) == 0:
        detach_storage(result)
    return result


def export_onnx(
    model: nn.Module, path: str | Path, example_input: Any, opset_version: int = 17, dynamic_axes: dict | None = None
) -> Path:
    """Export ``model`` (hooked or plain) to ONNX; quantizers become QuantizeLinear/DequantizeLinear.

    Uses the TorchScript exporter (``dynamo=False``); per-channel quantizers need opset ≥ 13.
    Activation quantizers export as QuantizeLinear→DequantizeLinear pairs, weight quantizers as an
    int8/uint8 constant followed by DequantizeLinear (``axis`` for per-channel). ONNX inputs are
    named after the forward's parameters (or the dict keys), outputs after the result's fields.
    ``dynamic_axes`` (as for ``torch.onnx.export``) defaults to a dynamic first (batch) axis everywhere.
    """
    if opset_version < 13:
        raise ValidationError(f"opset_version must be at least 13 (per-channel QuantizeLinear); got {opset_version}")
    args, kwargs = split_item(model, example_input)
    flat = _FlatIO(model, args, kwargs)
    with torch.no_grad(), eval_mode(model), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated upstream
        out = model(*args, **kwargs)
        output_names = [_output_name(name) for name, leaf in named_leaves(out)[0] if isinstance(leaf, torch.Tensor)]
        torch.onnx.export(
            flat,
            tuple(flat.values),
            str(path),
            dynamo=False,
            opset_version=opset_version,
            input_names=flat.names,
            output_names=output_names,
            dynamic_axes=_batch_axes(flat, out, output_names) if dynamic_axes is None else dynamic_axes,
        )
    return Path(path)


def _output_name(name: str) -> str:
    """The ONNX name of an output leaf; a tuple's positions ("0", "1.2") become "output_0", "output_1.2" (the
    TorchScript exporter rejects names that start with a digit)."""
    return "output" if not name else f"output_{name}" if name[0].isdigit() else name


def _batch_axes(flat: _FlatIO, out: Any, output_names: list[str]) -> dict:
    """Axis 0 dynamic on every input and output that has one."""
    outputs = [leaf for _, leaf in named_leaves(out)[0] if isinstance(leaf, torch.Tensor)]
    tensors = list(zip(flat.names, flat.values)) + list(zip(output_names, outputs))
    return {name: {0: "batch"} for name, tensor in tensors if tensor.dim() > 0}


class _FlatIO(nn.Module):
    """Tensors in, tensors out: ``model`` called with the example's structure (kwargs by name)."""

    def __init__(self, model: nn.Module, args: tuple, kwargs: dict):
        super().__init__()
        self.model = model
        named, self.spec = named_leaves((args, kwargs))
        self.slots = [i for i, (_, leaf) in enumerate(named) if isinstance(leaf, torch.Tensor)]
        self.leaves = [leaf for _, leaf in named]
        self.values = [self.leaves[i] for i in self.slots]
        positional = _positional_names(original_forward(model))
        self.names = [_input_name(named[i][0], positional) for i in self.slots]

    def forward(self, *tensors: torch.Tensor) -> tuple:
        leaves = list(self.leaves)
        for slot, tensor in zip(self.slots, tensors):
            leaves[slot] = tensor
        args, kwargs = pytree.tree_unflatten(leaves, self.spec)
        out = self.model(*args, **kwargs)
        return tuple(leaf for _, leaf in named_leaves(out)[0] if isinstance(leaf, torch.Tensor))


def _positional_names(forward) -> list[str]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    try:
        return [p.name for p in inspect.signature(forward).parameters.values() if p.kind in kinds]
    except (TypeError, ValueError):
        return []


def _input_name(path: str, positional: list[str]) -> str:
    """``"0.1.x"`` (args[1].x) or ``"1.key"`` (kwargs[key]) as a readable input name."""
    where, _, rest = path.partition(".")
    head, _, tail = rest.partition(".")
    if where == "0":
        index = int(head)
        head = positional[index] if index < len(positional) else f"input_{index}"
    return f"{head}.{tail}" if tail else head
