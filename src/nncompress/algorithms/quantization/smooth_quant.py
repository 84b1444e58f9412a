"""SmoothQuant: move activation outliers into the weights of the MatMuls that read them.

For a group of linear layers reading one tensor, s_i = a_i^alpha / w_i^(1-alpha) per input channel
(a: activation abs-max, w: weight abs-max over output channels); weights are scaled by s and the
tensor by 1/s for those layers only.
"""

from __future__ import annotations

import numpy as np

from nncompress.algorithms.checks import check_finite_weight
from nncompress.graph.edits import InsertMultiply, SetConstant
from nncompress.graph.ir import Graph, InputRef, Node, TensorRef
from nncompress.graph.ops import OpKind
from nncompress.statistics.collectors import AbsMaxCollector
from nncompress.statistics.runner import StatisticsPlan

_CLIP_MIN = 1e-5
_SCALE_MAX = 100.0
_EPS = 1e-8


class SmoothQuant:
    def __init__(self, graph: Graph, ignored: set[str], alpha_matmul: float, alpha_conv: float):
        self.graph = graph
        self.alphas = {OpKind.LINEAR: alpha_matmul, OpKind.CONV: alpha_conv}
        self.groups: dict[TensorRef, list[Node]] = {}
        for node in graph:
            alpha = self.alphas.get(node.kind, -1.0)
            if alpha < 0 or node.name in ignored or node.weight is None:
                continue
            port = node.activation_ports()
            if len(port) != 1 or node.weight.groups != 1:
                continue
            self.groups.setdefault(node.inputs[port[0]], []).append(node)
        self._stats: dict[TensorRef, AbsMaxCollector] = {}

    def register(self, plan: StatisticsPlan) -> None:
        for tensor, nodes in self.groups.items():
            axis = 1 if nodes[0].kind is OpKind.CONV else -1
            self._stats[tensor] = plan.add(tensor, AbsMaxCollector(axis))

    def edits(self, adapter, model) -> list:
        edits: list = []
        for tensor, nodes in self.groups.items():
            # a channel without any finite calibration value (NaN) is treated as a quiet one
            act = np.maximum(np.nan_to_num(self._stats[tensor].result(), nan=0.0), _CLIP_MIN)
            weights = {n.name: adapter.get_constant(model, n.name, n.weight.port) for n in nodes}
            for node in nodes:
                check_finite_weight(weights[node.name], node.name)
            if any(w.shape[n.weight.in_axis] != act.size for n, w in zip(nodes, weights.values())):
                continue
            scale = self._group_scale(nodes, weights, act)
            for node in nodes:
                shape = [1] * weights[node.name].ndim
                shape[node.weight.in_axis] = -1
                scaled = weights[node.name] * scale.reshape(shape)
                edits.append(SetConstant(node.name, node.weight.port, scaled.astype(np.float32)))
            consumers = tuple(InputRef(n.name, n.activation_ports()[0]) for n in nodes)
            edits.append(InsertMultiply(tensor, consumers, self._multiplier(nodes[0], 1.0 / scale), _name(tensor)))
        return edits

    def _group_scale(self, nodes: list[Node], weights: dict, act: np.ndarray) -> np.ndarray:
        """The member's scale with the best min/max balance serves the whole group."""
        best, best_ratio = None, -1.0
        for node in nodes:
            w = weights[node.name]
            other = tuple(a for a in range(w.ndim) if a != node.weight.in_axis % w.ndim)
            w_max = np.maximum(np.abs(w).max(axis=other), _CLIP_MIN)
            alpha = self.alphas[node.kind]
            s = act**alpha / (w_max ** (1 - alpha) + _EPS)
            s = np.clip(s, np.quantile(s, 0.1), _SCALE_MAX).astype(np.float32)
            ratio = float(s.min() / s.max())
            if ratio > best_ratio:
                best, best_ratio = s, ratio
        return best

    def _multiplier(self, node: Node, values: np.ndarray) -> np.ndarray:
        if node.kind is OpKind.CONV:
            return values.reshape(1, -1, 1, 1).astype(np.float32)
        return values.astype(np.float32)


def _name(tensor: TensorRef) -> str:
    return f"{tensor.node}/nncompress_smooth_quant_{tensor.port}"
