"""Builds the neutral ``Graph`` of an OpenVINO model."""

from __future__ import annotations

import numpy as np
import openvino as ov

from nncompress.graph.bias import attach_following_add_biases
from nncompress.graph.ir import Graph, Node, TensorRef
from nncompress.graph.ops import WEIGHTED_KINDS

from .folding import ConstantEvaluator, folded_ops
from .naming import node_names
from .op_map import op_kind, weight_info


def shape_tuple(shape: ov.PartialShape) -> tuple | None:
    """Static dims as ints, dynamic dims as -1; None for a dynamic rank."""
    if shape.rank.is_dynamic:
        return None
    return tuple(d.get_length() if d.is_static else -1 for d in shape)


def dtype_class(element_type: ov.Type) -> str:
    if element_type == ov.Type.boolean:
        return "bool"
    return "float" if element_type.is_real() else "int"


class GraphBuilder:
    """One pass over ``model.get_ordered_ops()`` producing nodes, then bias detection (``graph.bias``)."""

    def __init__(self, model: ov.Model):
        self.model = model
        self.names = node_names(model)
        self.folded = folded_ops(model)
        self.evaluator = ConstantEvaluator()

    def build(self) -> Graph:
        nodes = [self._node(op) for op in self.model.get_ordered_ops() if op not in self.folded]
        graph = Graph(nodes)
        attach_following_add_biases(graph)
        return graph

    def _node(self, op: ov.Node) -> Node:
        op_type = op.get_type_name()
        inputs: list[TensorRef | None] = []
        const_ports: dict[int, tuple] = {}
        for port, value in enumerate(op.input_values()):
            source = value.get_node()
            if source in self.folded:
                inputs.append(None)
                const_ports[port] = shape_tuple(value.get_partial_shape()) or ()
            else:
                inputs.append(TensorRef(self.names[source], value.get_index()))
        attrs = self._attrs(op, op_type, const_ports)
        kind = op_kind(op_type, set(const_ports), attrs, const_ports.get(1))
        outputs = [] if op_type == "Result" else list(op.outputs())
        return Node(
            name=self.names[op],
            kind=kind,
            op_type=op_type,
            inputs=inputs,
            output_shapes=[shape_tuple(o.get_partial_shape()) for o in outputs],
            output_dtypes=[dtype_class(o.get_element_type()) for o in outputs],
            const_ports=const_ports,
            weight=weight_info(op_type, const_ports, attrs) if kind in WEIGHTED_KINDS else None,
            attrs=attrs,
        )

    def _attrs(self, op: ov.Node, op_type: str, const_ports: dict[int, tuple]) -> dict:
        try:
            attrs = dict(op.get_attributes()) if op_type not in ("Parameter", "Result") else {}
        except Exception:  # attributes are for debugging only; some ops (bodies) do not list them
            attrs = {}
        if op_type == "Gather" and 2 in const_ports:
            attrs["axis"] = self._gather_axis(op)
        if op_type in ("GroupConvolution", "GroupConvolutionBackpropData") and 1 in const_ports:
            attrs["groups"] = const_ports[1][0] if const_ports[1] else 1
        return attrs

    def _gather_axis(self, op: ov.Node) -> int:
        try:
            axis = int(np.asarray(self.evaluator.tensor(op.input_value(2)).data).reshape(-1)[0])
        except Exception:  # an axis OpenVINO cannot fold stays "unknown" (treated as 0)
            return 0
        rank = op.get_input_partial_shape(0).rank
        return axis + rank.get_length() if axis < 0 and rank.is_static else axis
