"""The PyTorch region runner: a region that is exactly one module's scope runs that module directly.

A capture pass (once per model, on the adapter's example input) records every submodule call: which
``TensorRef`` each tensor argument is (graph tensors), the other arguments as they were (flags, None,
tensors computed from shapes such as rotary cos/sin: the runner's *context*), and which ``TensorRef``
each output tensor is. ``run`` then calls the submodule with the caller's values in place of the graph
tensors -- plain eager PyTorch, no per-op dispatch (a hooked model's hooks run under the hook mode).

* constants: the module's parameters are swapped for the overriding tensors during ``run`` and put back
  in a ``finally`` (cheaper than ``torch.func.functional_call``, whose per-call cost matched the block's
  own compute on small transformer layers); the model is unchanged between runs. A model is not to be
  run from another thread while a runner overrides its weights.
* fetch: forward pre-hooks, present only during ``run``, on the submodules whose arguments carry the
  fetched tensors (the inputs of the block's Linear layers); a tensor a submodule reshapes from its argument
  keeping the last axis (GPT-2's ``Conv1D`` flattens its input to rows) is fetched as that argument.

Regions that are not one module's scope (a chain of ops spanning modules) run by ``replay`` instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree as pytree

from nncompress.errors import UnsupportedModelError
from nncompress.graph.ir import Graph, TensorRef
from nncompress.graph.ops import OpKind
from nncompress.graph.regions import Region, refuse_frozen_overrides

from .capture import Capture, Recorder
from .hooks import is_storage_path, storage_of
from .inputs import eval_mode, split_item, to_numpy
from .mode import HookMode, ScopeTracker, named_leaves, op_module_path, run_model

CONTEXT_PREFIX = "@arg/"


@dataclass
class ModuleCall:
    """One call of a submodule seen in the capture pass."""

    spec: Any  # pytree spec of {"args": ..., "kwargs": ...}
    names: list[str]  # leaf paths ("args.0", "kwargs.attention_mask")
    leaves: list[Any]  # example values; activation tensors dropped (None) once their ref is known
    refs: list[TensorRef | None]  # graph tensor of each leaf (None: not a graph tensor)
    kinds: list[tuple[torch.dtype, torch.device] | None]  # dtype/device of activation leaves
    out_refs: list[TensorRef | None] = field(default_factory=list)  # graph tensor of each output tensor leaf


def _leaf_refs(recorder: Recorder, leaves: list) -> list[TensorRef | None]:
    return [recorder.ref(leaf) for leaf in leaves]


def record_module_calls(model: nn.Module, item: Any) -> dict[str, list[ModuleCall]]:
    """Every submodule's calls in one forward on ``item`` (module path -> calls in call order).

    Hooks are registered on the submodules for this pass only and removed before returning.
    """
    recorder = Recorder(model)
    calls: dict[str, list[ModuleCall]] = {}
    pending: dict[int, list[ModuleCall]] = {}
    handles = []

    def pre(path):
        def hook(module, args, kwargs):
            named, spec = named_leaves({"args": args, "kwargs": kwargs})
            leaves = [leaf for _, leaf in named]
            refs = _leaf_refs(recorder, leaves)
            kinds = [(leaf.dtype, leaf.device) if r is not None else None for leaf, r in zip(leaves, refs)]
            kept = [None if r is not None or _is_cache(leaf) else leaf for leaf, r in zip(leaves, refs)]
            call = ModuleCall(spec, [n for n, _ in named], kept, refs, kinds)
            calls.setdefault(path, []).append(call)
            pending.setdefault(id(module), []).append(call)

        return hook

    def post(module, args, kwargs, output):
        stack = pending.get(id(module))
        if stack:
            call = stack.pop()
            call.out_refs = _leaf_refs(recorder, [t for t in pytree.tree_leaves(output) if isinstance(t, torch.Tensor)])

    try:
        for path, module in model.named_modules():
            if module is model or is_storage_path(path):
                continue
            handles.append(module.register_forward_pre_hook(pre(path), with_kwargs=True))
            handles.append(module.register_forward_hook(post, with_kwargs=True))
        args, kwargs = split_item(model, item)
        with torch.no_grad(), eval_mode(model):
            run_model(model, args, kwargs, recorder, HookMode(storage_of(model), recorder))
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _is_cache(value: Any) -> bool:
    """A key/value cache object (Hugging Face ``Cache``): a region run starts without one, as calibration
    does -- running a block with the capture's cache would attend to the example's keys."""
    return type(value).__name__.endswith("Cache") and hasattr(value, "update")


def region_module(graph: Graph, region: Region) -> str | None:
    """The dotted path of the module whose scope is exactly ``region``'s nodes, None when there is none."""
    paths = [op_module_path(name) for name in region.nodes]
    parts = [p.split(".") if p else [] for p in paths]
    common: list[str] = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    if not common:
        return None
    prefix = "/".join(common) + "/"
    scope = {n.name for n in graph if n.name.startswith(prefix) and n.activation_ports()}
    return ".".join(common) if scope == set(region.nodes) else None


class _Fetcher:
    """Pre-hooks that copy fetched tensors out of submodule arguments during one ``run``; with ``stop``, the
    forward is stopped (``_Reached``) once every planned tensor is copied."""

    def __init__(self, module: nn.Module, wanted: dict[str, list[tuple[int, TensorRef]]], stop: bool = False):
        self.module, self.wanted, self.stop = module, wanted, stop
        self.values: dict[TensorRef, np.ndarray] = {}
        self.total = len({ref for targets in wanted.values() for _, ref in targets})

    def hook(self, targets: list[tuple[int, TensorRef]]) -> Callable:
        def take(module, args, kwargs):
            leaves = pytree.tree_leaves({"args": args, "kwargs": kwargs})
            for index, ref in targets:
                self.values.setdefault(ref, to_numpy(leaves[index]))
            if self.stop and len(self.values) == self.total:
                raise _Reached

        return take

    def install(self) -> list:
        return [
            self.module.get_submodule(path).register_forward_pre_hook(self.hook(targets), with_kwargs=True)
            for path, targets in self.wanted.items()
        ]


class ModuleRegionRunner:
    """Runs a region that is one module's scope by calling the module (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        capture: Capture,
        calls: dict[str, list[ModuleCall]],
        path: str,
        region: Region,
        fetch: Sequence[TensorRef],
        frozen: dict | None = None,
        outputs: bool = True,
    ):
        self.model, self.region, self.fetch, self.path = model, region, tuple(fetch), path
        self.outputs = outputs
        # without outputs, the forward stops at the last fetched tensor unless a fetch is an output itself
        self._stop = not outputs and not set(self.fetch) & (set(region.outputs) - set(region.inputs))
        self.module = model.get_submodule(path)
        self.port_params = capture.port_params
        self.call = _single_call(calls, path)
        refs = set(r for r in self.call.refs if r is not None)
        missing = [t for t in region.inputs if t not in refs]
        if missing:
            raise UnsupportedModelError(
                f"region {region.name!r} reads {missing[0].node}:{missing[0].port}, which is not an argument of module "
                f"{path!r} (it reaches the module another way): the PyTorch runner feeds a module's arguments only"
            )
        outs = [t for t in region.outputs if t not in self.call.out_refs]
        if outs:
            raise UnsupportedModelError(
                f"region {region.name!r} output {outs[0].node}:{outs[0].port} is not returned by module {path!r}"
            )
        self.context = tuple(
            TensorRef(CONTEXT_PREFIX + name)
            for name, leaf, ref in zip(self.call.names, self.call.leaves, self.call.refs)
            if ref is None and isinstance(leaf, torch.Tensor)
        )
        self.shapes: tuple[TensorRef, ...] = ()
        self._fetch_plan = self._plan_fetch(calls, capture.graph)
        self.frozen = frozen is not None
        self._fixed = self._parameters(frozen) if frozen is not None else {}

    def _plan_fetch(self, calls: dict[str, list[ModuleCall]], graph: Graph) -> dict[str, list[tuple[int, TensorRef]]]:
        plan: dict[str, list[tuple[int, TensorRef]]] = {}
        direct = set(self.region.inputs) | set(self.region.outputs)
        for tensor in self.fetch:
            if tensor in direct:
                continue
            for source in (tensor, _reshaped_from(graph, tensor)):
                found = self._argument_of_submodule(calls, source)
                if found is not None:
                    plan.setdefault(found[0], []).append((found[1], tensor))
                    break
            else:
                raise UnsupportedModelError(
                    f"cannot fetch {tensor.node}:{tensor.port} in region {self.region.name!r}: the PyTorch runner "
                    "fetches "
                    f"the region's inputs and outputs and the arguments of submodules of {self.path!r} only"
                )
        return plan

    def _argument_of_submodule(self, calls: dict[str, list[ModuleCall]], tensor: TensorRef | None):
        """(submodule path relative to the region's module, leaf index) where ``tensor`` is an argument."""
        for path, recorded in calls.items():
            if tensor is not None and path.startswith(self.path + ".") and len(recorded) == 1 \
                    and tensor in recorded[0].refs:
                return path[len(self.path) + 1 :], recorded[0].refs.index(tensor)
        return None

    def _arguments(self, values: dict[TensorRef, np.ndarray]) -> tuple[tuple, dict]:
        leaves = []
        for name, leaf, ref, kind in zip(self.call.names, self.call.leaves, self.call.refs, self.call.kinds):
            if ref is not None:
                if ref not in values:
                    raise UnsupportedModelError(
                        f"region {self.region.name!r}: no value for {ref.node}:{ref.port} (argument {name} of module "
                        f"{self.path!r}); pass every tensor of region.inputs"
                    )
                leaf = torch.from_numpy(np.array(values[ref])).to(dtype=kind[0], device=kind[1])
            elif isinstance(leaf, torch.Tensor) and TensorRef(CONTEXT_PREFIX + name) in values:
                leaf = torch.from_numpy(np.array(values[TensorRef(CONTEXT_PREFIX + name)])).to(
                    dtype=leaf.dtype, device=leaf.device
                )
            leaves.append(leaf)
        tree = pytree.tree_unflatten(leaves, self.call.spec)
        return tuple(tree["args"]), dict(tree["kwargs"])

    def _parameters(self, constants: dict | None) -> dict[str, torch.Tensor]:
        replaced: dict[str, torch.Tensor] = {}
        storage = storage_of(self.model)
        for (node, port), value in (constants or {}).items():
            if node not in self.region.nodes:
                raise UnsupportedModelError(
                    f"constant override of {node!r}: the node is not in region {self.region.name!r}"
                )
            name = self.port_params.get((node, port))
            if name is None or not name.startswith(self.path + "."):
                raise UnsupportedModelError(
                    f"constant override of {node}:{port}: the PyTorch runner replaces parameters of module "
                    f"{self.path!r} "
                    f"only, and this port reads {name or 'a computed tensor'}"
                )
            if storage is not None and storage.chain("pre", node, port):
                raise UnsupportedModelError(
                    f"constant override of {node}:{port}: the model quantizes that weight with a hook"
                )
            rel = name[len(self.path) + 1 :]
            original = _named_tensor(self.module, rel)
            value = np.asarray(value, dtype=np.float32)
            value = torch.from_numpy(value if value.flags.writeable else value.copy())  # shared: the run only reads
            replaced[rel] = value.reshape(original.shape).to(dtype=original.dtype, device=original.device)
        return replaced

    def run(self, values: dict[TensorRef, np.ndarray], constants: dict | None = None) -> dict[TensorRef, np.ndarray]:
        args, kwargs = self._arguments(values)
        refuse_frozen_overrides(self.region, constants, self.frozen)
        params = self._fixed or self._parameters(constants)
        fetcher = _Fetcher(self.module, self._fetch_plan, self._stop)
        handles = fetcher.install()
        out = None
        try:
            with torch.no_grad(), eval_mode(self.module):  # the block only: a whole-model pass per run is costly
                out = self._call(args, kwargs, params)
        except _Reached:
            pass
        finally:
            for handle in handles:
                handle.remove()
        tensors = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        outputs = set(self.region.outputs)
        produced = {ref: to_numpy(t) for ref, t in zip(self.call.out_refs, tensors) if ref in outputs}
        result = dict(produced) if self.outputs else {}
        for tensor in self.fetch:
            if tensor in fetcher.values:
                result[tensor] = fetcher.values[tensor]
            elif tensor in produced:
                result[tensor] = produced[tensor]
            else:
                result[tensor] = np.array(values[tensor])
        return result

    def _call(self, args: tuple, kwargs: dict, params: dict[str, torch.Tensor]):
        def call():
            with _swapped(self.module, params):
                return self.module(*args, **kwargs)

        storage = storage_of(self.model)
        if storage is None:
            return call()
        mode = HookMode(storage, None)  # a hooked model: its hooks need the op names (scoped from the root)
        with ScopeTracker(self.model, mode), mode:
            return call()

    def inputs_of(self, items: Iterable[Any], on_item: Callable[[dict[TensorRef, np.ndarray]], None]) -> None:
        """For each model-input item, the region's inputs and context, read where the module is called
        (the forward stops there)."""
        wanted = set(self.region.inputs)
        for item in items:
            found: dict[TensorRef, np.ndarray] = {}

            def take(module, args, kwargs, found=found):
                leaves = pytree.tree_leaves({"args": args, "kwargs": kwargs})
                for name, leaf, ref in zip(self.call.names, leaves, self.call.refs):
                    if ref is not None and ref in wanted:
                        found[ref] = to_numpy(leaf)
                    elif ref is None and isinstance(leaf, torch.Tensor):
                        found[TensorRef(CONTEXT_PREFIX + name)] = to_numpy(leaf)
                raise _Reached

            handle = self.module.register_forward_pre_hook(take, with_kwargs=True)
            try:
                args, kwargs = split_item(self.model, item)
                with torch.no_grad(), eval_mode(self.model):
                    if storage_of(self.model) is None:
                        self.model(*args, **kwargs)  # a plain model: no per-op dispatch needed
                    else:
                        run_model(self.model, args, kwargs)
            except _Reached:
                pass
            finally:
                handle.remove()
            on_item(found)


@contextlib.contextmanager
def _swapped(module: nn.Module, params: dict[str, torch.Tensor]) -> Iterator[None]:
    """``module``'s parameters/buffers named in ``params`` replaced by those tensors inside the block."""
    saved = []
    try:
        for name, value in params.items():
            owner_name, _, attr = name.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            table = owner._parameters if attr in owner._parameters else owner._buffers
            saved.append((table, attr, table[attr]))
            table[attr] = value
        yield
    finally:
        for table, attr, value in reversed(saved):
            table[attr] = value


class _Reached(Exception):
    """Stops a forward once the region's module is reached."""


def _reshaped_from(graph: Graph, tensor: TensorRef) -> TensorRef | None:
    """The tensor ``tensor`` is a reshape of with the same last axis (a Linear's input flattened to rows
    inside the module, as GPT-2's ``Conv1D`` does): the same token rows, fetched where it is an argument."""
    node = graph.node(tensor.node)
    if node.kind not in (OpKind.RESHAPE, OpKind.FLATTEN) or not node.inputs or node.inputs[0] is None:
        return None
    source = node.inputs[0]
    before, after = graph.tensor_shape(source), graph.tensor_shape(tensor)
    return source if before and after and before[-1] == after[-1] else None


def _single_call(calls: dict[str, list[ModuleCall]], path: str) -> ModuleCall:
    recorded = calls.get(path, [])
    if len(recorded) != 1:
        raise UnsupportedModelError(
            f"module {path!r} is called {len(recorded)} times in one forward: the PyTorch runner calls a module "
            "run once"
        )
    return recorded[0]


def _named_tensor(module: nn.Module, name: str) -> torch.Tensor:
    owner, _, attr = name.rpartition(".")
    return getattr(module.get_submodule(owner) if owner else module, attr)
