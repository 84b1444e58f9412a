"""The neutral graph of an ONNX model."""

from __future__ import annotations

from collections.abc import Mapping

from nncompress.backends.onnx.constants import ModelIndex, evaluate_tensor
from nncompress.backends.onnx.naming import output_node_name
from nncompress.backends.onnx.op_map import base_kind, dtype_kind, node_attrs
from nncompress.backends.onnx.shapes import TensorType
from nncompress.backends.onnx.weights import classify
from nncompress.errors import NNCompressError
from nncompress.graph.bias import attach_following_add_biases
from nncompress.graph.ir import Graph, Node, TensorRef
from nncompress.graph.ops import OpKind


def tensor_ref(index: ModelIndex, tensor: str) -> TensorRef | None:
    """The graph tensor carrying ONNX tensor ``tensor`` (None for constants and unknown names)."""
    if tensor in index.input_names:
        return TensorRef(tensor, 0)
    producer = index.producer.get(tensor)
    if producer is None or producer[0] in index.folded:
        return None
    return TensorRef(index.names[producer[0]], producer[1])


def _const_shape(index: ModelIndex, tensor: str, types: Mapping[str, TensorType]) -> tuple[int, ...]:
    shape = (types.get(tensor) or (None, None))[1]
    if shape is not None:
        return tuple(shape)
    try:
        value = evaluate_tensor(index.model, tensor, index.producer_node, index.initializers, types)
    except NNCompressError:
        return ()
    return tuple(value.shape)


def _types_of(tensors, types: Mapping[str, TensorType]) -> tuple[list, list[str]]:
    shapes, dtypes = [], []
    for tensor in tensors:
        elem, shape = types.get(tensor) or (None, None)
        shapes.append(shape)
        dtypes.append(dtype_kind(elem))
    return shapes, dtypes


def _op_node(index: ModelIndex, i: int, types: Mapping[str, TensorType]) -> Node:
    proto = index.model.graph.node[i]
    name = index.names[i]
    inputs: list[TensorRef | None] = []
    const_ports: dict[int, tuple[int, ...]] = {}
    for port, tensor in enumerate(proto.input):
        if tensor and index.is_constant(tensor):
            const_ports[port] = _const_shape(index, tensor, types)
        inputs.append(tensor_ref(index, tensor) if tensor else None)
    kind, weight, bias = classify(name, proto, inputs, const_ports, base_kind(proto))
    shapes, dtypes = _types_of(proto.output, types)
    attrs = node_attrs(proto)
    if proto.domain:
        attrs["domain"] = proto.domain
    return Node(name, kind, proto.op_type, inputs, shapes, dtypes, const_ports, weight, bias, attrs)


def _io_nodes(index: ModelIndex, types: Mapping[str, TensorType]) -> tuple[list[Node], list[Node]]:
    inputs = []
    for name in index.input_names:
        shapes, dtypes = _types_of([name], types)
        inputs.append(Node(name, OpKind.INPUT, "Input", [], shapes, dtypes))
    outputs = []
    for out in index.model.graph.output:
        const_ports = {0: _const_shape(index, out.name, types)} if index.is_constant(out.name) else {}
        ref = tensor_ref(index, out.name)
        outputs.append(Node(output_node_name(out.name), OpKind.OUTPUT, "Output", [ref], const_ports=const_ports))
    return inputs, outputs


def build_graph(index: ModelIndex, types: Mapping[str, TensorType]) -> Graph:
    """Inputs, then the non-folded operations in topological order, then outputs."""
    inputs, outputs = _io_nodes(index, types)
    ops = [_op_node(index, i, types) for i in index.order if i not in index.folded]
    graph = Graph(inputs + ops + outputs)
    attach_following_add_biases(graph)
    return graph
