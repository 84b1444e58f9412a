"""The function mode that names every torch operation and runs hook chains.

``run_model(model, args, kwargs, observer)`` runs the model's own forward under ``HookMode`` (a
``torch.overrides.TorchFunctionMode``, per thread) while a ``ScopeTracker`` follows the module scope
through module forward hooks that exist only while a run is active and serve the running thread only
(the user's modules and tensors are never wrapped or mutated; several threads may run one model).
Every intercepted call except metadata queries gets a name in NNCF's scheme (``op_name``):
``"{module path}/{op name}/{k}"`` — the module path is the path of the innermost module running with
``/`` between its parts (``layer1/0/conv1``; at the root there is none and the name is
``"{op name}/{k}"``) and ``k`` counts calls of that op name in that module — so the same forward path
always produces the same names (``layer1/0/conv1/conv2d/0``, ``lm_head/linear/0``, ``relu/0``).

Ports of an op are its tensor arguments in flattening order (positional, then keyword; lists and
tuples flattened), plus, for binary arithmetic, a Python-number operand. Outputs are the tensors of
the result in flattening order.

In-place ops (``add_``, ``+=``, ``x[i] = v``, ``relu(x, inplace=True)``) on a hooked model: when a
hook chain gives the changed tensor a new value (a quantizer after ``relu_``, or before the changed
input), the op returns that value and every later read of the tensor the op changed (by any op or as
a model output) reads it too, exactly as for the out-of-place form whose result the code would
rebind. Nothing is written back into the tensor (autograd keeps its saved values).

Model inputs are named after the forward's parameters (nested
values as ``"param.key.0"``; ``**kwargs`` entries by their key); model outputs ``"output/<path>"``.
"""

from __future__ import annotations

import inspect
import threading
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from .hooks import HookStorage, is_storage_path, original_forward, storage_of
from .op_map import BINARY, FuncInfo, func_info, is_number, mutates_first


@dataclass
class OpCall:
    """One intercepted op: its name, arguments and the leaf positions of its ports."""

    name: str
    info: FuncInfo
    args: tuple
    kwargs: dict
    leaves: list  # flattened (args, kwargs) as called by the user, before pre-hooks
    hooked: list  # the same after pre-hooks
    ports: list[int]  # leaf index of each input port


class Observer:
    """Receives what a run computes (capture, statistics). Defaults do nothing.

    ``op_names``: the ops whose calls ``on_op`` sees (None: all of them).
    """

    op_names: set[str] | None = None

    def on_input(self, name: str, value: torch.Tensor) -> None:
        pass

    def on_op(self, call: OpCall, out: Any) -> None:
        pass

    def on_hook(self, name: str, module: nn.Module, value: torch.Tensor, result: torch.Tensor) -> None:
        pass

    def on_output(self, name: str, value: torch.Tensor) -> None:
        pass


def port_indices(info: FuncInfo, args: tuple, leaves: list) -> list[int]:
    """Leaf indices of the op's input ports."""
    if info.base in BINARY and len(args) >= 2 and all(_operand(a) for a in args[:2]):
        return [0, 1]
    return [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]


def _operand(value) -> bool:
    return isinstance(value, torch.Tensor) or is_number(value)


def op_signature(info: FuncInfo, values: list) -> tuple:
    """(function, rank and dtype class of the first tensor input): what hooks check before they run."""
    first = next((v for v in values if isinstance(v, torch.Tensor)), None)
    if first is None:
        return (info.qualified, None, None)
    kind = "float" if first.is_floating_point() else "bool" if first.dtype is torch.bool else "int"
    return (info.qualified, first.ndim, kind)


def output_tensors(out: Any) -> list[torch.Tensor]:
    """The tensors of an op result in port order."""
    if isinstance(out, torch.Tensor):
        return [out]
    leaves, _ = pytree.tree_flatten(out)
    return [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]


def op_name(scope: str, op: str, index: int) -> str:
    """The name of call ``index`` of ``op`` in module ``scope`` (a dotted module path, "" for the root)."""
    path = scope.replace(".", "/")
    return f"{path}/{op}/{index}" if path else f"{op}/{index}"


def split_op_name(name: str) -> tuple[str, str, str]:
    """(dotted module path, op, call index) of a name made by ``op_name``."""
    parts = name.split("/")
    if len(parts) < 2:
        return "", name, ""
    return ".".join(parts[:-2]), parts[-2], parts[-1]


def op_module_path(name: str) -> str:
    """The dotted path of the module an op named by ``op_name`` ran in ("" for the root)."""
    return split_op_name(name)[0]


class HookMode(TorchFunctionMode):
    """Names each torch call, runs pre-/post-hook chains and reports to an observer."""

    def __init__(self, storage: HookStorage | None, observer: Observer | None):
        super().__init__()
        self.storage = storage
        self.observer = observer
        self.scopes: list[str] = [""]
        self.counters: dict[tuple[str, str], int] = {}
        self.current: tuple[str, str] | None = None  # (op name, qualified function) last started
        self.failed_op: tuple[str, str] | None = None  # the op that raised, if any
        # id(tensor an in-place op changed) -> (weak ref to it, the value later reads get instead)
        self.aliases: dict[int, tuple[weakref.ref, torch.Tensor]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        info = func_info(func)
        if info.passthrough:
            return func(*args, **kwargs)
        if self.aliases:
            args, kwargs = pytree.tree_map_only(torch.Tensor, self.resolve, (args, kwargs))
        scope = self.scopes[-1]
        key = (scope, info.name)
        k = self.counters.get(key, 0)
        self.counters[key] = k + 1
        name = op_name(scope, info.name, k)
        self.current = (name, info.qualified)
        if info.name == "iter":  # iterating a tensor: record the rows as outputs of one op
            return iter(self._dispatch(_listed(func), info, name, args, kwargs))
        return self._dispatch(func, info, name, args, kwargs)

    def _dispatch(self, func, info: FuncInfo, name: str, args: tuple, kwargs: dict):
        storage = self.storage
        hooked = storage is not None and (name in storage.pre_ops or name in storage.post_ops)
        observer = self.observer
        watched = observer is not None and (observer.op_names is None or name in observer.op_names)
        if not hooked and not watched:
            return self._invoke(func, args, kwargs)
        return self._call(func, info, name, args, kwargs, watched)

    def _invoke(self, func, args, kwargs):
        try:
            return func(*args, **kwargs)
        except Exception:
            if self.failed_op is None:
                self.failed_op = self.current
            raise

    def _call(self, func, info: FuncInfo, name: str, args: tuple, kwargs: dict, watched: bool):
        leaves, spec = pytree.tree_flatten((args, kwargs))
        ports = port_indices(info, args, leaves)
        hooked = list(leaves)
        storage = self.storage
        if storage is not None and not self._matches(storage, name, info, [leaves[i] for i in ports]):
            storage = None  # another op carries this name on this forward path: leave it alone
        if storage is not None and name in storage.pre_ops:
            for port, index in enumerate(ports):
                chain = storage.chain("pre", name, port)
                if chain:
                    hooked[index] = self.run_chain(chain, hooked[index])
            args, kwargs = pytree.tree_unflatten(hooked, spec)
        out = self._invoke(func, args, kwargs)
        changed = _changed_in_place(func, info, args, kwargs, hooked, ports, out)
        value = changed if out is None and changed is not None else out
        if watched:
            self.observer.on_op(OpCall(name, info, args, kwargs, leaves, hooked, ports), value)
        if storage is not None and name in storage.post_ops and value is not None:
            value = self.apply_post(name, value)
        if changed is None:
            return value
        received = leaves[ports[0]]
        if value is not received:  # a hook replaced the changed tensor: later reads see the new value
            self.alias(received, value)
        return None if out is None else value

    def alias(self, tensor: torch.Tensor, value: torch.Tensor) -> None:
        """Make later reads of ``tensor`` in this run read ``value`` (entry dropped when ``tensor`` dies)."""
        key = id(tensor)

        def forget(ref, aliases=self.aliases, key=key):
            if aliases.get(key, (None,))[0] is ref:
                del aliases[key]

        self.aliases[key] = (weakref.ref(tensor, forget), value)

    def resolve(self, tensor: torch.Tensor) -> torch.Tensor:
        """The value a read of ``tensor`` gets (itself unless a hooked in-place op replaced it)."""
        entry = self.aliases.get(id(tensor))
        while entry is not None and entry[0]() is tensor:
            tensor = entry[1]
            entry = self.aliases.get(id(tensor))
        return tensor

    @staticmethod
    def _matches(storage: HookStorage, name: str, info: FuncInfo, values: list) -> bool:
        """Whether op ``name`` is the op the hooks were made for (function, first input's rank and dtype)."""
        expected = storage.signatures.get(name)
        if expected is None or expected == op_signature(info, values):
            return True
        warnings.warn(
            f"nncompress: operation {name!r} is {op_signature(info, values)} on this call but was {expected} when "
            "the model was quantized (the forward took another path); its hooks are skipped for this call",
            RuntimeWarning,
            stacklevel=2,
        )
        return False

    def run_chain(self, chain: list[str], value):
        """``value`` passed through the hooks named in ``chain``, in order."""
        for hook_name in chain:
            module = self.storage.module(hook_name)
            result = module(value)
            if self.observer is not None:
                self.observer.on_hook(hook_name, module, value, result)
            value = result
        return value

    def apply_post(self, name: str, out: Any) -> Any:
        """``out`` with the post-hook chains of op ``name`` applied to its tensors."""
        if isinstance(out, torch.Tensor):
            chain = self.storage.chain("post", name, 0)
            return self.run_chain(chain, out) if chain else out
        leaves, spec = pytree.tree_flatten(out)
        port = 0
        for i, leaf in enumerate(leaves):
            if isinstance(leaf, torch.Tensor):
                chain = self.storage.chain("post", name, port)
                if chain:
                    leaves[i] = self.run_chain(chain, leaf)
                port += 1
        return pytree.tree_unflatten(leaves, spec)


def _changed_in_place(func, info: FuncInfo, args: tuple, kwargs: dict, hooked: list, ports: list[int],
                      out: Any) -> torch.Tensor | None:
    """The tensor the op changed in place (its first input as called), None for an out-of-place op."""
    if not ports or not isinstance(hooked[ports[0]], torch.Tensor):
        return None
    first = hooked[ports[0]]
    if out is not None and out is not first:
        return None
    return first if mutates_first(func, info, args, kwargs) else None


def _listed(func):
    def call(*args, **kwargs):
        return list(func(*args, **kwargs))

    return call


class ScopeTracker:
    """Keeps ``mode.scopes`` current while ``model`` runs in this thread (one run only).

    The user's modules are never touched: while any run is active, one process-wide pair of module
    forward pre/post hooks is installed; it serves the trackers of the calling thread only (a
    thread-local stack), so several threads can run the same model at once.
    On an exception the scope stack is left as it was where the error happened (for messages).
    """

    def __init__(self, model: nn.Module, mode: HookMode):
        self.model, self.mode = model, mode
        self.names: dict[int, str] = {}

    def __enter__(self) -> ScopeTracker:
        # keyed by the module's ``__dict__``: tracers that stand a proxy in for a submodule (the module
        # stack tracer of ``torch.export``) give it the module's own ``__dict__``
        self.names = {
            id(module.__dict__): name
            for name, module in self.model.named_modules()
            if module is not self.model and not is_storage_path(name)
        }
        _ScopeHooks.enter(self)
        return self

    def __exit__(self, *exc) -> None:
        _ScopeHooks.exit(self)


class _ScopeHooks:
    """The process-wide module hooks behind ``ScopeTracker`` (installed while at least one run is active)."""

    lock = threading.Lock()
    local = threading.local()
    users = 0
    handles: list = []

    @classmethod
    def enter(cls, tracker: ScopeTracker) -> None:
        stack = getattr(cls.local, "trackers", None)
        if stack is None:
            stack = cls.local.trackers = []
        stack.append(tracker)
        with cls.lock:
            cls.users += 1
            if cls.users == 1:
                cls.handles = [
                    nn.modules.module.register_module_forward_pre_hook(_global_pre_hook),
                    nn.modules.module.register_module_forward_hook(_global_post_hook),
                ]

    @classmethod
    def exit(cls, tracker: ScopeTracker) -> None:
        stack = cls.local.trackers
        stack.remove(tracker)
        with cls.lock:
            cls.users -= 1
            if cls.users == 0:
                for handle in cls.handles:
                    handle.remove()
                cls.handles = []


def _active_trackers() -> list[ScopeTracker]:
    return getattr(_ScopeHooks.local, "trackers", None) or []


def _global_pre_hook(module, args) -> None:
    for tracker in _active_trackers():
        name = tracker.names.get(id(module.__dict__))
        if name is not None:
            _push_scope(tracker.mode, name, module, args)


def _global_post_hook(module, args, output) -> None:
    for tracker in _active_trackers():
        if id(module.__dict__) in tracker.names:
            _pop_scope(tracker.mode, module, args, output)


def _push_scope(mode: HookMode, name: str, module, args) -> None:
    mode.scopes.append(name)


def _pop_scope(mode: HookMode, module, args, output) -> None:
    if len(mode.scopes) > 1:
        mode.scopes.pop()


def named_leaves(tree: Any, prefix: str = "") -> tuple[list[tuple[str, Any]], Any]:
    """(name, leaf) pairs of ``tree`` with dotted path names, and the tree spec."""
    pairs, spec = pytree.tree_flatten_with_path(tree)
    named = []
    for path, leaf in pairs:
        parts = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        named.append((".".join([prefix] + parts if prefix else parts), leaf))
    return named, spec


def bind_inputs(forward, args: tuple, kwargs: dict) -> inspect.BoundArguments | None:
    """The call's arguments bound to the forward's signature; None when they do not bind."""
    try:
        return inspect.signature(forward).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return None


def input_names(bound: inspect.BoundArguments) -> tuple[list[tuple[str, Any]], Any]:
    """Named leaves of the bound arguments (``**kwargs`` entries named by their key)."""
    params = bound.signature.parameters
    flat = {}
    for pname, value in bound.arguments.items():
        if params[pname].kind is inspect.Parameter.VAR_KEYWORD:
            flat.update({str(k): v for k, v in value.items()})
        else:
            flat[pname] = value
    named, spec = named_leaves(flat)
    return named, (spec, list(flat))


def _rebind(bound: inspect.BoundArguments, leaves: list, spec_info) -> tuple[tuple, dict]:
    spec, keys = spec_info
    flat = pytree.tree_unflatten(leaves, spec)
    params = bound.signature.parameters
    for pname in list(bound.arguments):
        if params[pname].kind is inspect.Parameter.VAR_KEYWORD:
            bound.arguments[pname] = {k: flat[str(k)] for k in bound.arguments[pname]}
        else:
            bound.arguments[pname] = flat[pname]
    return bound.args, bound.kwargs


def _process_inputs(forward, args, kwargs, mode: HookMode) -> tuple[tuple, dict]:
    bound = bind_inputs(forward, args, kwargs)
    if bound is None:
        return args, kwargs
    named, spec_info = input_names(bound)
    leaves = [leaf for _, leaf in named]
    changed = False
    for i, (name, leaf) in enumerate(named):
        if not isinstance(leaf, torch.Tensor):
            continue
        if mode.observer is not None:
            mode.observer.on_input(name, leaf)
        chain = mode.storage.chain("post", name, 0) if mode.storage is not None else []
        if chain:
            leaves[i] = mode.run_chain(chain, leaf)
            changed = True
    return _rebind(bound, leaves, spec_info) if changed else (args, kwargs)


def _process_outputs(out: Any, mode: HookMode) -> Any:
    named, spec = named_leaves(out)
    leaves = [leaf for _, leaf in named]
    changed = False
    for i, (path, leaf) in enumerate(named):
        if not isinstance(leaf, torch.Tensor):
            continue
        if mode.aliases and mode.resolve(leaf) is not leaf:  # ``x.relu_(); return x`` with a hook on relu_
            leaves[i] = leaf = mode.resolve(leaf)
            changed = True
        name = f"output/{path or 0}"
        chain = mode.storage.chain("pre", name, 0) if mode.storage is not None else []
        if chain:
            leaves[i] = leaf = mode.run_chain(chain, leaf)
            changed = True
        if mode.observer is not None:
            mode.observer.on_output(name, leaf)
    return pytree.tree_unflatten(leaves, spec) if changed else out


def run_model(model: nn.Module, args: tuple, kwargs: dict, observer: Observer | None = None,
              mode: HookMode | None = None) -> Any:
    """Run the model's own forward under the hook mode (hooks of a hooked model applied)."""
    storage = storage_of(model)
    forward = original_forward(model)
    if mode is None:
        mode = HookMode(storage, observer)
    if storage is not None or observer is not None:
        args, kwargs = _process_inputs(forward, args, kwargs, mode)
    with ScopeTracker(model, mode), mode:
        out = forward(*args, **kwargs)
    if storage is not None or observer is not None:
        out = _process_outputs(out, mode)
    return out
