"""Which tensors are constants (folded away) and their values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from nncompress.backends.onnx.naming import resolve_node_names, topological_order
from nncompress.backends.onnx.op_map import NON_FOLDABLE, SHAPE_OPS, is_default_domain
from nncompress.backends.onnx.shapes import TensorType
from nncompress.errors import UnsupportedModelError


@dataclass
class ModelIndex:
    """Lookups over one model: resolved node names, producers, initializers and folded nodes."""

    model: onnx.ModelProto
    names: list[str]
    order: list[int]
    by_name: dict[str, onnx.NodeProto]
    producer: dict[str, tuple[int, int]]  # tensor -> (node index, output port)
    initializers: dict[str, onnx.TensorProto]
    input_names: list[str]
    folded: set[int] = field(default_factory=set)
    producer_node: dict[str, onnx.NodeProto] = field(default_factory=dict)

    def is_constant(self, tensor: str) -> bool:
        if tensor in self.initializers:
            return True
        prod = self.producer.get(tensor)
        return prod is not None and prod[0] in self.folded


def build_index(model: onnx.ModelProto) -> ModelIndex:
    """Index ``model`` (its graph is read, never changed)."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    input_names = [i.name for i in graph.input if i.name not in initializers]
    nodes = list(graph.node)
    names = resolve_node_names(nodes, input_names)
    producer = {out: (i, p) for i, n in enumerate(nodes) for p, out in enumerate(n.output) if out}
    index = ModelIndex(
        model=model,
        names=names,
        order=topological_order(nodes),
        by_name=dict(zip(names, nodes)),
        producer=producer,
        initializers=initializers,
        input_names=input_names,
    )
    index.folded = _fold(nodes, index.order, set(initializers))
    index.producer_node = {tensor: nodes[i] for tensor, (i, _) in producer.items()}
    return index


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _fold(nodes: list[onnx.NodeProto], order: list[int], constants: set[str]) -> set[int]:
    """Indices of nodes computed only from constants or from shapes."""
    folded: set[int] = set()
    for i in order:
        node = nodes[i]
        if not is_default_domain(node) or _has_subgraph(node) or node.op_type in NON_FOLDABLE:
            continue
        inputs = [x for x in node.input if x]
        if node.op_type in SHAPE_OPS or (node.op_type == "Constant" and not inputs):
            fold = True
        else:
            fold = bool(inputs) and all(x in constants for x in inputs)
        if fold:
            folded.add(i)
            constants.update(out for out in node.output if out)
    return folded


def initializer_array(init: onnx.TensorProto) -> np.ndarray:
    """The value of an initializer; a clear error when its external data was not loaded."""
    try:
        return numpy_helper.to_array(init)
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedModelError(
            f"initializer {init.name!r} cannot be read ({exc}); load the model with "
            "onnx.load(path, load_external_data=True)"
        ) from exc


def _shape_constant(node: onnx.NodeProto, types: Mapping[str, TensorType]) -> onnx.NodeProto:
    """A Constant node equal to a Shape/Size node, from the static shape of its input."""
    shape = (types.get(node.input[0]) or (None, None))[1]
    if shape is None or any(d < 0 for d in shape):
        raise UnsupportedModelError(f"constant {node.output[0]!r} depends on the dynamic shape of {node.input[0]!r}")
    if node.op_type == "Size":
        value = np.array(int(np.prod(shape)), dtype=np.int64)
    else:
        attrs = {a.name: a.i for a in node.attribute}
        value = np.array(shape[attrs.get("start", 0) : attrs.get("end", len(shape))], dtype=np.int64)
    return onnx.helper.make_node("Constant", [], [node.output[0]], value=numpy_helper.from_array(value))


def _ancestors(
    tensor: str,
    producers: Mapping[str, onnx.NodeProto],
    initializers: Mapping[str, onnx.TensorProto],
    types: Mapping[str, TensorType],
) -> tuple[list[onnx.NodeProto], dict[str, onnx.TensorProto]]:
    """The nodes and initializers ``tensor`` is computed from (Shape/Size replaced by constants)."""
    nodes: dict[int, onnx.NodeProto] = {}
    inits: dict[str, onnx.TensorProto] = {}
    stack, seen = [tensor], set()
    while stack:
        name = stack.pop()
        if not name or name in seen:
            continue
        seen.add(name)
        if name in initializers:
            inits[name] = initializers[name]
            continue
        node = producers.get(name)
        if node is None:
            raise UnsupportedModelError(f"tensor {tensor!r} is not a constant (it depends on {name!r})")
        if id(node) in nodes:
            continue
        if node.op_type in SHAPE_OPS:
            nodes[id(node)] = _shape_constant(node, types)
            continue
        nodes[id(node)] = node
        stack.extend(node.input)
    return list(nodes.values()), inits


def evaluate_tensor(
    model: onnx.ModelProto,
    tensor: str,
    producers: Mapping[str, onnx.NodeProto],
    initializers: Mapping[str, onnx.TensorProto],
    types: Mapping[str, TensorType],
) -> np.ndarray:
    """The value of constant ``tensor`` (an initializer, or evaluated from its constant subgraph)."""
    if tensor in initializers:
        return initializer_array(initializers[tensor])
    nodes, inits = _ancestors(tensor, producers, initializers, types)
    nodes = [nodes[i] for i in topological_order(nodes)]
    graph = onnx.helper.make_graph(nodes, "constant", [], [onnx.ValueInfoProto(name=tensor)], list(inits.values()))
    sub = onnx.helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    sub.functions.extend(model.functions)
    try:
        return np.asarray(ReferenceEvaluator(sub).run(None, {})[0])
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedModelError(f"constant {tensor!r} could not be evaluated: {exc}") from exc
