"""Kinds, weights and biases of the weighted ONNX operators."""

from __future__ import annotations

import onnx

from nncompress.graph.ir import BiasInfo, TensorRef, WeightInfo
from nncompress.graph.ops import OpKind

Inputs = list[TensorRef | None]
ConstPorts = dict[int, tuple[int, ...]]
Classified = tuple[OpKind, WeightInfo | None, BiasInfo | None]


def _attr(node: onnx.NodeProto, name: str, default):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _is_act(inputs: Inputs, port: int) -> bool:
    return port < len(inputs) and inputs[port] is not None


def _own_bias(name: str, const_ports: ConstPorts, port: int, channels: int) -> BiasInfo | None:
    shape = const_ports.get(port)
    if shape is None or tuple(shape) != (channels,):
        return None
    return BiasInfo(name, port, tuple(shape), TensorRef(name, 0))


def _conv(name: str, node: onnx.NodeProto, inputs: Inputs, const_ports: ConstPorts) -> Classified:
    w = const_ports.get(1)
    if w is None or len(w) < 3 or not _is_act(inputs, 0):
        return OpKind.OTHER, None, None
    groups = int(_attr(node, "group", 1))
    if node.op_type == "ConvTranspose":
        weight = WeightInfo(1, tuple(w), 1, 0, groups)
        return OpKind.CONV_TRANSPOSE, weight, _own_bias(name, const_ports, 2, w[1] * groups)
    depthwise = groups > 1 and w[0] == groups and w[1] == 1
    kind = OpKind.DEPTHWISE_CONV if depthwise else OpKind.CONV
    return kind, WeightInfo(1, tuple(w), 0, 1, groups), _own_bias(name, const_ports, 2, w[0])


def _matmul(inputs: Inputs, const_ports: ConstPorts) -> Classified:
    if _is_act(inputs, 0) and _is_act(inputs, 1):
        return OpKind.MATMUL, None, None
    w = const_ports.get(1)
    if w is not None and len(w) >= 2 and _is_act(inputs, 0):
        return OpKind.LINEAR, WeightInfo(1, tuple(w), len(w) - 1, len(w) - 2), None
    w = const_ports.get(0)
    if w is not None and len(w) >= 2 and _is_act(inputs, 1):
        return OpKind.LINEAR, WeightInfo(0, tuple(w), len(w) - 2, len(w) - 1), None
    return OpKind.OTHER, None, None


def _gemm(name: str, node: onnx.NodeProto, inputs: Inputs, const_ports: ConstPorts) -> Classified:
    if _is_act(inputs, 0) and _is_act(inputs, 1):
        return OpKind.MATMUL, None, None
    w = const_ports.get(1)
    if w is not None and len(w) == 2 and _is_act(inputs, 0):
        out_axis, in_axis = (0, 1) if _attr(node, "transB", 0) else (1, 0)
        bias = None
        if float(_attr(node, "beta", 1.0)) == 1.0:
            bias = _own_bias(name, const_ports, 2, w[out_axis])
        return OpKind.LINEAR, WeightInfo(1, tuple(w), out_axis, in_axis), bias
    w = const_ports.get(0)
    if w is not None and len(w) == 2 and _is_act(inputs, 1):
        out_axis, in_axis = (1, 0) if _attr(node, "transA", 0) else (0, 1)
        return OpKind.LINEAR, WeightInfo(0, tuple(w), out_axis, in_axis), None
    return OpKind.OTHER, None, None


def _gather(node: onnx.NodeProto, inputs: Inputs, const_ports: ConstPorts) -> Classified:
    table = const_ports.get(0)
    if table is not None and len(table) == 2 and _is_act(inputs, 1) and _attr(node, "axis", 0) in (0, -2):
        return OpKind.EMBEDDING, WeightInfo(0, tuple(table), 0, 1), None
    return OpKind.GATHER, None, None


def classify(name: str, node: onnx.NodeProto, inputs: Inputs, const_ports: ConstPorts, kind: OpKind) -> Classified:
    """(kind, weight, bias) of a node whose base kind is ``kind``."""
    if kind in (OpKind.CONV, OpKind.CONV_TRANSPOSE):
        return _conv(name, node, inputs, const_ports)
    if kind is OpKind.LINEAR:
        if node.op_type == "Gemm":
            return _gemm(name, node, inputs, const_ports)
        return _matmul(inputs, const_ports)
    if kind is OpKind.GATHER:
        return _gather(node, inputs, const_ports)
    return kind, None, None
