"""Graph capture: one forward pass under the hook mode, recording every op on activations.

A tensor is an *activation* when it is a model input or the output of a recorded op (tracked by
object identity through weak references; user tensors are never wrapped or changed). An op with at
least one activation input becomes a ``Node``; ops on constants only (parameters, buffers, tensors
created in ``forward``) and ops that only read shapes (``zeros_like``, ``size()``) are folded: their
results are constants. Integer and boolean activations (token ids, masks) are nodes with dtype
"int"/"bool". Hooks of an already hooked model that act on activations (quantizers, multipliers)
are nodes named after the hook; hooks on constants (weight quantizers) are not.
"""

from __future__ import annotations

import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nncompress.errors import GraphCaptureError
from nncompress.graph.bias import attach_following_add_biases
from nncompress.graph.ir import BiasInfo, Graph, Node, TensorRef
from nncompress.graph.ops import OpKind as K

from .fake_quantize import FakeQuantizer, Multiply
from .hooks import is_storage_path, storage_of
from .inputs import eval_mode, split_item
from .mode import HookMode, Observer, OpCall, op_signature, output_tensors, run_model
from .op_map import op_spec


def dtype_class(tensor: torch.Tensor) -> str:
    if tensor.dtype is torch.bool:
        return "bool"
    return "float" if tensor.is_floating_point() or tensor.is_complex() else "int"


def value_shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else ()


@dataclass
class Capture:
    """A captured graph plus where its constants live in the model."""

    graph: Graph
    port_params: dict[tuple[str, int], str] = field(default_factory=dict)  # (node, port) -> parameter name
    const_values: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict)  # unnamed weights/biases
    param_uses: Counter = field(default_factory=Counter)  # parameter name -> constant ports reading it


def model_constants(model: nn.Module) -> dict[int, str]:
    """id(parameter or buffer) -> qualified name (first name of shared ones; hooks excluded)."""
    names: dict[int, str] = {}
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if not is_storage_path(name):
            names.setdefault(id(tensor), name)
    return names


MAX_ADD_BIAS_VALUES = 1 << 16  # a computed Add constant this small may be a layer's bias


class Recorder(Observer):
    """Builds the nodes of a capture while the model runs."""

    def __init__(self, model: nn.Module):
        self.constants = model_constants(model)
        self.refs: dict[int, tuple[TensorRef, weakref.ref]] = {}
        self.nodes: list[Node] = []
        self.capture = Capture(Graph([]))
        # small computed constants of Adds (e.g. ``x + self.b.view(1, -1, 1, 1)``): kept until ``finish``
        # knows which of them are a layer's bias
        self._add_constants: dict[tuple[str, int], torch.Tensor] = {}

    def ref(self, value: Any) -> TensorRef | None:
        if not isinstance(value, torch.Tensor):
            return None
        entry = self.refs.get(id(value))
        return entry[0] if entry is not None and entry[1]() is value else None

    def track(self, value: torch.Tensor, ref: TensorRef) -> None:
        self.refs[id(value)] = (ref, weakref.ref(value))

    def on_input(self, name: str, value: torch.Tensor) -> None:
        self.nodes.append(Node(name, K.INPUT, "input", [], [tuple(value.shape)], [dtype_class(value)]))
        self.track(value, TensorRef(name, 0))

    def on_output(self, name: str, value: torch.Tensor) -> None:
        ref = self.ref(value)
        if ref is not None:
            self.nodes.append(Node(name, K.OUTPUT, "output", [ref]))

    def on_hook(self, name: str, module: nn.Module, value: torch.Tensor, result: torch.Tensor) -> None:
        ref = self.ref(value)
        if ref is None:
            return  # a hook on a constant (weight quantizer, replaced constant) stays folded
        if isinstance(module, Multiply):
            node = Node(name, K.MUL, "Multiply", [ref, None], const_ports={1: tuple(module.scale.shape)})
        else:
            op_type = "FakeQuantize" if isinstance(module, FakeQuantizer) else type(module).__name__
            node = Node(name, K.OTHER, op_type, [ref])
        node.output_shapes, node.output_dtypes = [tuple(result.shape)], [dtype_class(result)]
        self.nodes.append(node)
        self.track(result, TensorRef(name, 0))

    def on_op(self, call: OpCall, out: Any) -> None:
        for leaf in call.leaves:  # every read of a parameter, folded ops included
            if isinstance(leaf, torch.Tensor) and id(leaf) in self.constants:
                self.capture.param_uses[self.constants[id(leaf)]] += 1
        values = [call.hooked[i] for i in call.ports]
        inputs = [self.ref(v) for v in values]
        if call.info.shape_only or not any(r is not None for r in inputs):
            return
        active = [r is not None for r in inputs]
        spec = op_spec(call.info, values, active, call.args, call.kwargs)
        const_ports = {p: value_shape(v) for p, v in enumerate(values) if not active[p]}
        outputs = output_tensors(out)
        node = Node(
            name=call.name,
            kind=spec.kind,
            op_type=call.info.base,
            inputs=inputs,
            output_shapes=[tuple(t.shape) for t in outputs],
            output_dtypes=[dtype_class(t) for t in outputs],
            const_ports=const_ports,
            weight=spec.weight,
            attrs=dict(spec.attrs or {}, function=call.info.qualified, signature=op_signature(call.info, values)),
        )
        if spec.bias_port is not None:
            node.bias = BiasInfo(call.name, spec.bias_port, const_ports[spec.bias_port], TensorRef(call.name, 0))
        self._note_constants(node, [call.leaves[i] for i in call.ports], spec)
        self.nodes.append(node)
        for port, tensor in enumerate(outputs):
            self.track(tensor, TensorRef(call.name, port))

    def _note_constants(self, node: Node, originals: list, spec) -> None:
        keep = {spec.bias_port} | ({spec.weight.port} if spec.weight is not None else set())
        for port in node.const_ports:
            value = originals[port]
            if not isinstance(value, torch.Tensor):
                continue
            name = self.constants.get(id(value))
            if name is not None:
                self.capture.port_params[(node.name, port)] = name
            elif port in keep:
                self.capture.const_values[(node.name, port)] = value.detach().clone()
            elif node.kind is K.ADD and value.numel() <= MAX_ADD_BIAS_VALUES:
                self._add_constants[(node.name, port)] = value.detach().clone()

    def finish(self) -> Capture:
        graph = Graph(self.nodes)
        attach_following_add_biases(graph)
        for node in graph:
            bias = node.bias
            key = (bias.node, bias.port) if bias is not None else None
            if key in self._add_constants:
                self.capture.const_values[key] = self._add_constants[key]
        self._add_constants.clear()
        self.capture.graph = graph
        return self.capture


def capture_graph(model: nn.Module, item: Any) -> Capture:
    """Run ``model`` once on ``item`` and record its graph; GraphCaptureError names where it failed."""
    recorder = Recorder(model)
    mode = HookMode(storage_of(model), recorder)
    args, kwargs = split_item(model, item)
    try:
        with torch.no_grad(), eval_mode(model):
            run_model(model, args, kwargs, recorder, mode)
    except Exception as exc:
        raise GraphCaptureError(failure_message(model, mode, exc)) from exc
    capture = recorder.finish()
    if not capture.graph.inputs():
        raise GraphCaptureError(
            f"no tensor input of {type(model).__name__}.forward was found in the example input "
            f"({type(item).__name__}); give a tensor, a tuple of positional arguments or a dict of keyword arguments"
        )
    return capture


def failure_message(model: nn.Module, mode: HookMode, exc: Exception) -> str:
    """Where a run failed: the operation and the module scope."""
    scope = mode.scopes[-1] if mode.scopes else ""
    module = dict(model.named_modules()).get(scope, model)
    where = f"module '{scope}' ({type(module).__name__})" if scope else f"the root module ({type(model).__name__})"
    if mode.failed_op is not None:
        op, qualified = mode.failed_op
        at = f"in operation '{op}' ({qualified})"
    elif mode.current is not None:
        at = f"after operation '{mode.current[0]}' (in Python code, not in a torch operation)"
    else:
        at = "before the first torch operation"
    return f"graph capture failed {at} in {where}: {type(exc).__name__}: {exc}"
