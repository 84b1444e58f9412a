"""Compressed weights in PyTorch models: packed low-bit buffers decompressed in forward.

``WeightStore`` makes the compressed copy without ever holding a second float copy of the model:
the model is deep-copied with every weight of a weighted node replaced by a zero-memory ``meta``
placeholder; each ``CompressWeight`` then stores its ``CompressedWeight`` as a ``CompressedStorage``
module, and placeholders left at the end (weights kept float) are filled with clones of the
original weights, one at a time.

How a compressed weight is read (the layer's class is never changed):

- The layer module that runs the op owns the weight (``nn.Linear``, ``Conv1D``, ``nn.Embedding``,
  convolutions; any module reading its own parameter): the parameter is removed, the storage becomes
  a submodule ``{attr}_compressed`` and a forward pre-hook sets ``module.{attr}`` to the decompressed
  tensor while a forward (of any thread) runs the module (the last one out puts back the ``meta``
  placeholder, so ``module.weight.shape``/``dtype`` still answer outside forward). Tied weights (a head sharing the
  embedding) compressed to the same ``CompressedWeight`` share one storage.
- Otherwise (the op reads another module's parameter, or a weight computed in forward): a
  ``DecompressedConstant`` hook replaces the op's input in the hooked forward (``hooks.py``).

``AddLowRankCorrection`` on a Linear/Conv1D module is a forward hook adding ``x @ A.T @ B.T``.
Decompression is ``numerics.decode.decode`` on the layer's device, the function behind
``CompressedWeight.decompress()`` (float32 arithmetic, then the weight's dtype); scales are stored in
float16 where that is exact, else float32.
"""

from __future__ import annotations

import threading
import weakref
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from nncompress.errors import ValidationError
from nncompress.graph.edits import AddLowRankCorrection, CompressWeight
from nncompress.numerics.decode import decode
from nncompress.numerics.encoding import CompressedWeight
from nncompress.numerics.grids import nearest_e4m3

from .capture import Capture
from .fake_quantize import is_tracing
from .inputs import copy_model, named_tensor
from .mode import op_module_path
from .module_graph import is_linear_like

Slot = tuple[nn.Module, str, str]  # (module, "_parameters" | "_buffers", attribute)


def _tensor(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


class CompressedStorage(nn.Module):
    """A low-bit weight: codes (``pack_4bit`` bytes for 4-bit modes), scale and zero point buffers.

    ``forward()`` returns the decompressed weight in its original shape and dtype.
    """

    def __init__(self, weight: CompressedWeight, dtype: torch.dtype, device: torch.device | str):
        super().__init__()
        self.mode = weight.mode
        self.shape = tuple(weight.shape)
        self.stored_shape = tuple(weight.stored_shape)
        self.axis, self.group_size = weight.axis, weight.group_size
        self.register_buffer("data", _tensor(weight.data, device))
        if weight.global_scale is not None:  # NVFP4 group scales are E4M3 values: one byte each
            scale = _tensor(nearest_e4m3(weight.scale), device).view(torch.float8_e4m3fn)
        else:
            scale = _tensor(weight.scale.astype(weight.scale_dtype), device)
        self.register_buffer("scale", scale)
        zero_point = None if weight.zero_point is None else _tensor(weight.zero_point, device)
        self.register_buffer("zero_point", zero_point)
        book = None if weight.book is None else _tensor(weight.book, device)
        self.register_buffer("codebook", book)  # Mode.CODEBOOK: the user's values
        tensor_scale = None if weight.global_scale is None else torch.tensor(weight.global_scale, device=device)
        self.register_buffer("tensor_scale", tensor_scale)  # NVFP4's float32 tensor scale
        self.register_buffer("dtype_ref", torch.empty(0, dtype=dtype, device=device), persistent=False)

    @property
    def placeholder(self) -> torch.Tensor:
        """A ``meta`` tensor with the weight's shape and dtype (no memory): ``module.weight`` outside forward."""
        return torch.empty(self.shape, dtype=self.dtype_ref.dtype, device="meta")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def forward(self) -> torch.Tensor:
        book = None if self.codebook is None else self.codebook.tolist()
        values = decode(self.data, self.mode, self.shape, self.stored_shape, self.scale, self.zero_point,
                        self.tensor_scale, book, inplace=not is_tracing())
        return values.to(self.dtype_ref.dtype)

    def matches(self, weight: CompressedWeight) -> bool:
        """Whether ``weight`` is stored here already (same format and values)."""
        if (weight.mode, tuple(weight.shape), weight.axis, weight.group_size) != (
            self.mode, self.shape, self.axis, self.group_size
        ):
            return False
        same = np.array_equal
        zp = self.zero_point
        tensor_scale = None if self.tensor_scale is None else float(self.tensor_scale)
        book = None if self.codebook is None else self.codebook.cpu().numpy()
        return (
            tensor_scale == weight.global_scale
            and (book is None) == (weight.book is None)
            and (book is None or same(book, weight.book))
            and same(self.data.cpu().numpy(), weight.data)
            and same(self.scale.float().cpu().numpy(), weight.scale)
            and (zp is None) == (weight.zero_point is None)
            and (zp is None or same(zp.cpu().numpy(), weight.zero_point))
        )

    def extra_repr(self) -> str:
        granularity = "per-channel" if self.group_size == -1 else f"group_size={self.group_size}"
        return f"{self.mode.value}, shape={list(self.shape)}, {granularity}"


class DecompressedConstant(nn.Module):
    """A hook replacing a constant op input by a decompressed weight (see ``hooks.py``)."""

    def __init__(self, weight: CompressedStorage):
        super().__init__()
        self.weight = weight

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        return self.weight()


class LowRankCorrection(nn.Module):
    """``y + (x @ a.T) @ b.T``; ``a`` ``[rank, in]`` and ``b`` ``[out, rank]``, float or compressed."""

    def __init__(self, a: Any, b: Any, dtype: torch.dtype, device: torch.device | str):
        super().__init__()
        for name, value in (("a", a), ("b", b)):
            if isinstance(value, CompressedWeight):
                self.add_module(name, CompressedStorage(value, dtype, device))
            else:
                self.register_buffer(name, _tensor(np.asarray(value), device).to(dtype))

    def _factor(self, name: str) -> torch.Tensor:
        value = getattr(self, name)
        return value() if isinstance(value, nn.Module) else value

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a, b = self._factor("a"), self._factor("b")
        delta = (x.to(a.dtype) @ a.T) @ b.T
        return y + delta.to(y.dtype)


_RUNNING_LOCK = threading.Lock()
# module -> {attribute: forwards running the module now}: threads running one model share the weight
_RUNNING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def materialize_weight(module: nn.Module, args: Any, *, attr: str, key: str) -> None:
    """Forward pre-hook: ``module.<attr>`` becomes the decompressed weight while a forward runs it."""
    with _RUNNING_LOCK:
        counts = _RUNNING.setdefault(module, {})
        counts[attr] = counts.get(attr, 0) + 1
        if counts[attr] == 1:
            module.__dict__[attr] = module._modules[key]()


def release_weight(module: nn.Module, args: Any, output: Any, *, attr: str, key: str) -> None:
    """Forward hook (always called): the last forward out drops the decompressed weight (placeholder back)."""
    with _RUNNING_LOCK:
        counts = _RUNNING.get(module, {})
        counts[attr] = counts.get(attr, 1) - 1
        if counts[attr] <= 0:
            counts.pop(attr, None)
            module.__dict__[attr] = module._modules[key].placeholder


def add_correction(module: nn.Module, args: Any, output: Any, *, key: str) -> Any:
    """Forward hook: the layer's output plus its low-rank correction of the layer's input."""
    return module._modules[key](args[0], output)


def _unique_child(module: nn.Module, name: str) -> str:
    key, n = name, 1
    while key in module._modules or hasattr(module, key):
        key, n = f"{name}_{n}", n + 1
    return key


def _weight_names(capture: Capture) -> list[str]:
    """Parameter/buffer names at the weight ports of the graph's weighted nodes."""
    names = []
    for node in capture.graph:
        if node.weight is not None:
            pname = capture.port_params.get((node.name, node.weight.port))
            if pname is not None and pname not in names:
                names.append(pname)
    return names


def _slots_holding(module: nn.Module, tensor: torch.Tensor) -> list[Slot]:
    return [(module, kind, attr) for kind in ("_parameters", "_buffers")
            for attr, value in getattr(module, kind).items() if value is tensor]


class WeightStore:
    """The compressed copy of a model under construction (see the module docstring)."""

    def __init__(self, model: nn.Module, capture: Capture):
        self.capture = capture
        self.originals: dict[int, torch.Tensor] = {}  # id(placeholder) -> the user's tensor
        self.placeholders: dict[str, torch.Tensor] = {}  # weight name -> its placeholder in the copy
        memo: dict[int, Any] = {}
        for pname in _weight_names(capture):
            tensor = named_tensor(model, pname)
            if id(tensor) in memo or not isinstance(tensor, torch.Tensor):
                continue
            placeholder = torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")
            if isinstance(tensor, nn.Parameter):
                placeholder = nn.Parameter(placeholder, requires_grad=tensor.requires_grad)
            memo[id(tensor)] = placeholder
            self.originals[id(placeholder)] = tensor
            self.placeholders[pname] = placeholder
        self.model = copy_model(model, memo)
        self.slots: dict[int, list[Slot]] = {key: [] for key in self.originals}
        for module in self.model.modules():
            for slot in _slots_holding_any(module, self.slots):
                self.slots[id(getattr(slot[0], slot[1])[slot[2]])].append(slot)
        self.storages: dict[int, list[CompressedStorage]] = {}
        self.installed: dict[int, list[tuple[nn.Module, CompressedStorage]]] = {}
        self.layer_types: dict[str, tuple[torch.dtype, torch.device]] = {}
        self._last: tuple[Any, CompressedStorage | None] = (lambda: None, None)  # (weakref to weight, its storage)

    # ------------------------------------------------------------------ edits

    def compress(self, edit: CompressWeight, editor) -> None:
        """Store ``edit.weight`` in place of the weight the op ``edit.node`` reads on ``edit.port``."""
        node = self.capture.graph.nodes.get(edit.node)
        if node is None or edit.port not in node.const_ports:
            raise ValidationError(f"CompressWeight: input {edit.port} of {edit.node!r} is not a constant of the graph")
        pname = self.capture.port_params.get((edit.node, edit.port))
        current = self._current(pname)
        shape = tuple(current.shape) if current is not None else tuple(node.const_ports[edit.port])
        if shape != tuple(edit.weight.shape):
            raise ValidationError(
                f"CompressWeight on {edit.node!r}:{edit.port}: weight shape {list(edit.weight.shape)} does not "
                f"match the layer's {list(shape)}"
            )
        dtype, device = self._dtype_device(current)
        self.layer_types[edit.node] = (dtype, device)
        storage = self._storage(current, edit.weight, dtype, device)
        scope = self._scope(edit.node)
        if current is not None and any(m is scope and s is storage for m, s in self.installed.get(id(current), [])):
            return  # the same weight of the same module (a module called twice)
        slots = _slots_holding(scope, current) if current is not None else []
        if not slots:
            self._hook(editor, edit, storage, current, pname)
            return
        for slot in slots:
            self._install(slot, storage)
            if slot in self.slots.get(id(current), []):
                self.slots[id(current)].remove(slot)
        self.installed.setdefault(id(current), []).append((scope, storage))

    def add_low_rank(self, edit: AddLowRankCorrection) -> None:
        """A forward hook adding ``x @ a.T @ b.T`` to the output of a Linear/Conv1D module."""
        scope = self._scope(edit.node)
        node = self.capture.graph.nodes.get(edit.node)
        expected = {"linear": 0, "addmm": 1}.get(node.op_type) if node is not None else None
        if not is_linear_like(scope) or expected != edit.input_port:
            raise ValidationError(
                f"AddLowRankCorrection on {edit.node!r} input {edit.input_port}: the torch backend adds low-rank "
                "corrections to nn.Linear (input 0) and Conv1D (input 1) layers only"
            )
        dtype, device = self.layer_types.get(edit.node) or self._dtype_device(None)
        key = _unique_child(scope, "lora_correction")
        scope.add_module(key, LowRankCorrection(edit.a, edit.b, dtype, device))
        scope.register_forward_hook(partial(add_correction, key=key))

    def materialize(self, pname: str) -> None:
        """Give a placeholder weight its float value back (before a SetConstant writes into it)."""
        current = self._current(pname)
        if current is not None and self.slots.get(id(current)):
            self._restore(id(current))

    def finish(self) -> nn.Module:
        """Fill the placeholders of weights that stay float; the compressed copy."""
        for key in list(self.slots):
            if self.slots[key]:
                self._restore(key)
        self.originals.clear()
        self.placeholders.clear()
        self.slots.clear()
        return self.model

    # ------------------------------------------------------------------ helpers

    def _current(self, pname: str | None) -> torch.Tensor | None:
        """The copy's tensor called ``pname`` (its placeholder while it is one)."""
        if pname is None:
            return None
        placeholder = self.placeholders.get(pname)
        return placeholder if placeholder is not None else named_tensor(self.model, pname)

    def _dtype_device(self, current: torch.Tensor | None) -> tuple[torch.dtype, torch.device]:
        if current is not None:
            source = self.originals.get(id(current), current)
            if source.device.type != "meta":
                return source.dtype, source.device
        for tensor in list(self.model.parameters()) + list(self.model.buffers()):
            if tensor.is_floating_point() and tensor.device.type != "meta":
                return (current.dtype if current is not None else tensor.dtype), tensor.device
        return (current.dtype if current is not None else torch.float32), torch.device("cpu")

    def _storage(self, current, weight: CompressedWeight, dtype, device) -> CompressedStorage:
        """One storage per distinct compressed value of a tensor (tied weights share it)."""
        known = self.storages.setdefault(id(current) if current is not None else -1, [])
        source, stored = self._last
        if source() is weight and stored in known:  # the edit of another reader of the same weight
            return stored
        for storage in known:
            if storage.matches(weight):
                return storage
        storage = CompressedStorage(weight, dtype, device)
        if current is not None:
            known.append(storage)
        self._last = (weakref.ref(weight), storage)
        return storage

    def _scope(self, node: str) -> nn.Module:
        scope = op_module_path(node)
        try:
            return self.model.get_submodule(scope) if scope else self.model
        except AttributeError:
            return self.model

    def _install(self, slot: Slot, storage: CompressedStorage) -> None:
        module, kind, attr = slot
        del getattr(module, kind)[attr]
        key = _unique_child(module, f"{attr}_compressed")
        module.add_module(key, storage)
        module.__dict__[attr] = storage.placeholder
        module.register_forward_pre_hook(partial(materialize_weight, attr=attr, key=key))
        module.register_forward_hook(partial(release_weight, attr=attr, key=key), always_call=True)

    def _hook(self, editor, edit: CompressWeight, storage: CompressedStorage, current, pname: str | None) -> None:
        """The decompressed weight replaces the op's input in the hooked forward."""
        key = ("pre", edit.node, edit.port)
        editor._insert(key, 0, edit.name, DecompressedConstant(storage))
        editor._note_constant(key)
        if current is not None and pname is not None and self.capture.param_uses[pname] == 1:
            for module, kind, attr in self.slots.pop(id(current), []):
                del getattr(module, kind)[attr]
                module.__dict__[attr] = storage.placeholder

    def _restore(self, key: int) -> None:
        original = self.originals[key]
        with torch.no_grad():
            value = original.detach().clone()
        if isinstance(original, nn.Parameter):
            value = nn.Parameter(value, requires_grad=original.requires_grad)
        for module, kind, attr in self.slots.pop(key, []):
            getattr(module, kind)[attr] = value
        for pname in [name for name, tensor in self.placeholders.items() if id(tensor) == key]:
            del self.placeholders[pname]


def _slots_holding_any(module: nn.Module, keys: dict[int, Any]) -> list[Slot]:
    return [(module, kind, attr) for kind in ("_parameters", "_buffers")
            for attr, value in getattr(module, kind).items() if value is not None and id(value) in keys]
