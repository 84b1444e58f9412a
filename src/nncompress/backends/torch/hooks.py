"""Hook storage of a hooked model and the forward that runs it.

A hooked model is a deep copy of the user's model with two additions, both on the instance:

- ``_nncompress_hooks``: a ``HookStorage`` submodule (so ``state_dict``, ``to()`` and ``parameters()``
  see the quantizers) holding the hook modules in an ``nn.ModuleDict`` and the *chains* they form.
  It hangs off the root module, except when the root is a container (``nn.Sequential``,
  ``nn.ModuleList``, ``nn.ModuleDict``) whose forward or users iterate its children: then off the
  first non-container module inside it (``storage_host``), so iterating the container never meets it.
  A chain is an ordered list of hook names at one point of the data flow, kept in stage order
  (``graph.edits.Stage`` of the edit each hook was made for: a constant's replacement, then masks, then
  quantizers), insertion order only within one stage:
  ``("post", op, port)`` runs on output ``port`` of operation ``op`` (or of model input ``op``),
  ``("pre", op, port)`` on input ``port`` of ``op`` (or of model output ``op``) — activation or
  constant (weights are fake-quantized on the fly this way; the float parameter stays).
- ``forward``: a ``HookedForward`` instance attribute that runs the class's own ``forward`` under
  the function mode (``mode.run_model``), which names every op and applies the chains.

The model stays an instance of the user's class; the class itself is never changed. A torch.fx
``GraphModule`` (from ``torch.export``) also lists both in ``meta["_user_preserved_attributes"]``: its
deepcopy rebuilds the copy from the graph and sets only those attributes again.
"""

from __future__ import annotations

import copy
import inspect
import weakref
from typing import Any

from torch import nn
from torch.fx import GraphModule

from nncompress.errors import UnsupportedModelError
from nncompress.graph.edits import Stage

STORAGE_ATTR = "_nncompress_hooks"

ChainKey = tuple[str, str, int]  # ("pre" | "post", op name, port)


class HookStorage(nn.Module):
    """Hook modules by name plus the chains (hook names per data-flow point, in stage order)."""

    def __init__(self) -> None:
        super().__init__()
        self.hooks = nn.ModuleDict()
        self.chains: dict[ChainKey, list[str]] = {}
        self.keys: dict[str, str] = {}  # hook name -> ModuleDict key
        self.stages: dict[str, int] = {}  # hook name -> stage (graph.edits.Stage) of the edit that made it
        self.pre_ops: set[str] = set()
        self.post_ops: set[str] = set()
        # op name -> op_signature at capture: hooks only run on the op they were made for
        self.signatures: dict[str, tuple] = {}
        # chains on constant inputs -> the parameter they read when no other op reads it (else None)
        self.constants: dict[ChainKey, str | None] = {}

    def module(self, name: str) -> nn.Module:
        return self.hooks[self.keys[name]]

    def where(self, name: str) -> tuple[ChainKey, int] | None:
        """(chain, index) of hook ``name``, or None when there is no such hook."""
        for key, names in self.chains.items():
            if name in names:
                return key, names.index(name)
        return None

    def insert(
        self, key: ChainKey, index: int, name: str, module: nn.Module, stage: int = Stage.ACTIVATION_QUANTIZER
    ) -> str:
        """Insert ``module`` near ``index`` of chain ``key``; returns the (unique) hook name used.

        The chain stays in stage order: ``index`` is moved, if needed, to after every hook of a lower
        stage and before every hook of a higher one (among hooks of ``stage`` it is kept).
        """
        unique, n = name, 1
        while unique in self.keys:
            unique, n = f"{name}_{n}", n + 1
        module_key = unique.replace(".", ":")
        while module_key in self.hooks:
            module_key += "_"
        self.hooks[module_key] = module
        self.keys[unique] = module_key
        chain = self.chains.setdefault(key, [])
        stages = [self.stages.get(n, Stage.ACTIVATION_QUANTIZER) for n in chain]
        low = sum(1 for s in stages if s < stage)
        high = sum(1 for s in stages if s <= stage)
        chain.insert(min(max(index, low), high), unique)
        self.stages[unique] = int(stage)
        (self.pre_ops if key[0] == "pre" else self.post_ops).add(key[1])
        return unique

    def remove(self, name: str) -> None:
        """Take hook ``name`` out of its chain and out of the storage."""
        found = self.where(name)
        if found is None:
            return
        key, index = found
        del self.chains[key][index]
        if not self.chains[key]:
            del self.chains[key]
            self.constants.pop(key, None)
            ops = {k[1] for k in self.chains if k[0] == key[0]}
            (self.pre_ops if key[0] == "pre" else self.post_ops).intersection_update(ops)
        del self.hooks[self.keys.pop(name)]
        self.stages.pop(name, None)

    def chain(self, kind: str, op: str, port: int) -> list[str]:
        return self.chains.get((kind, op, port), [])

    def __len__(self) -> int:
        return len(self.keys)


class HookedForward:
    """The ``forward`` of a hooked model: the class's forward run under the hook-applying mode.

    It holds the model weakly, so the model and its forward form no reference cycle: a hooked model is
    freed as soon as its last reference goes (a cycle would keep every discarded result of repeated
    ``quantize`` calls alive until the cyclic garbage collector runs). ``copy.deepcopy`` and pickling
    re-point it at the copy; ``inspect.signature`` reports the original forward's parameters (Hugging
    Face ``generate`` relies on that).
    """

    def __init__(self, model: nn.Module, inner=None, host: str = ""):
        self._model = weakref.ref(model)
        self.inner = inner  # an instance-level forward the model had before (e.g. another wrapper)
        self.host = host  # path of the module holding the hook storage ("" for the root)

    @property
    def model(self) -> nn.Module:
        model = self._model()
        if model is None:
            raise UnsupportedModelError(
                "this forward belongs to a hooked model that no longer exists; keep a reference to the model "
                "and call model(...) or model.forward(...)"
            )
        return model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .mode import run_model

        return run_model(self.model, args, kwargs)

    def __deepcopy__(self, memo: dict) -> HookedForward:
        model = self._model()
        copied = memo.get(id(model), model)  # the model being copied (registered in memo before its state)
        return HookedForward(copied, copy.deepcopy(self.inner, memo), self.host)

    def __getstate__(self) -> dict:
        return {"model": self._model(), "inner": self.inner, "host": self.host}

    def __setstate__(self, state: dict) -> None:
        self._model = weakref.ref(state["model"])
        self.inner, self.host = state["inner"], state["host"]

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(original_forward(self.model))

    @property
    def __wrapped__(self):
        return original_forward(self.model)

    @property
    def __code__(self):
        """The original forward's code object (``torch.export`` reads it for source locations)."""
        forward = original_forward(self.model)
        return getattr(forward, "__code__", type(self).__call__.__code__)

    def __repr__(self) -> str:
        model = self._model()
        return f"<nncompress hooked forward of {type(model).__name__ if model is not None else 'a freed model'}>"


CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def is_storage_path(path: str) -> bool:
    """Whether the module path ``path`` is a hook storage or inside one."""
    return STORAGE_ATTR in path.split(".")


def storage_host(model: nn.Module) -> str:
    """Path of the module that holds (or will hold) ``model``'s hook storage: the root, or for a container
    root the first module inside it that is not a container (its forward never iterates children)."""
    forward = model.__dict__.get("forward")
    if isinstance(forward, HookedForward):
        return getattr(forward, "host", "")
    if not isinstance(model, CONTAINERS):
        return ""
    for path, module in model.named_modules():
        if path and not isinstance(module, CONTAINERS) and not is_storage_path(path):
            return path
    raise UnsupportedModelError(
        f"a {type(model).__name__} without any layer inside cannot hold quantizers; give a model with layers"
    )


def storage_of(model: nn.Module) -> HookStorage | None:
    """The hook storage of a hooked model, None for a plain model."""
    forward = model.__dict__.get("forward")
    host = model
    if isinstance(forward, HookedForward) and getattr(forward, "host", ""):
        host = model.get_submodule(forward.host)
    storage = host._modules.get(STORAGE_ATTR)
    return storage if isinstance(storage, HookStorage) else None


def original_forward(model: nn.Module):
    """The model's own forward (bound), bypassing a ``HookedForward``."""
    forward = model.__dict__.get("forward")
    if isinstance(forward, HookedForward):
        forward = forward.inner
    if forward is not None:
        return forward
    return type(model).forward.__get__(model, type(model))


def attach_storage(model: nn.Module) -> HookStorage:
    """Give ``model`` (already a private copy) a hook storage and the hooked forward."""
    host = storage_host(model)
    storage = storage_of(model)
    if storage is None:
        storage = HookStorage()
        model.get_submodule(host).add_module(STORAGE_ATTR, storage)
    previous = model.__dict__.get("forward")
    if not isinstance(previous, HookedForward):
        model.forward = HookedForward(model, previous, host)
    _preserve_in_graph_module_copies(model, {STORAGE_ATTR: storage, "forward": model.__dict__["forward"]})
    return storage


# the attributes a torch.fx GraphModule's deepcopy sets again on the copy (it rebuilds the copy from
# its graph, keeping only the submodules the graph reads)
_FX_PRESERVED = "_user_preserved_attributes"


def _preserve_in_graph_module_copies(model: nn.Module, attributes: dict[str, Any] | None) -> None:
    """Make copies of a GraphModule keep (``attributes``) or drop (None) the hook storage and forward."""
    meta = getattr(model, "meta", None)
    if not isinstance(model, GraphModule) or not isinstance(meta, dict):
        return
    kept = meta.setdefault(_FX_PRESERVED, {})
    if attributes is None:
        for name in (STORAGE_ATTR, "forward"):
            kept.pop(name, None)
    else:
        kept.update(attributes)


def detach_storage(model: nn.Module) -> None:
    """Make a hooked model plain again (drops every hook)."""
    host = model.get_submodule(storage_host(model))
    if STORAGE_ATTR in host._modules:
        del host._modules[STORAGE_ATTR]
    forward = model.__dict__.get("forward")
    _preserve_in_graph_module_copies(model, None)
    if isinstance(forward, HookedForward):
        del model.__dict__["forward"]
        if forward.inner is not None:
            model.forward = forward.inner
