"""Hand-made neutral graphs for placement tests."""

from __future__ import annotations

from nncompress.graph.ir import BiasInfo, Graph, Node, TensorRef, WeightInfo
from nncompress.graph.ops import OpKind as K


class G:
    def __init__(self):
        self.nodes: list[Node] = []

    def input(self, name: str, shape=(1, 3, 8, 8), dtype: str = "float") -> TensorRef:
        self.nodes.append(Node(name, K.INPUT, "Parameter", [], [shape], [dtype]))
        return TensorRef(name)

    def op(self, name, kind, inputs, *, const_ports=(), weight=False, shape=(1, 3, 8, 8), dtype="float", outputs=1):
        ins = list(inputs)
        consts = {}
        for port in const_ports:
            ins.insert(port, None)
            consts[port] = (3,)
        node = Node(name, kind, kind.value, ins, [shape] * outputs, [dtype] * outputs, consts)
        if weight:
            node.inputs.append(None)
            node.const_ports[len(node.inputs) - 1] = (3, 3, 1, 1)
            node.weight = WeightInfo(len(node.inputs) - 1, (3, 3, 1, 1), 0, 1)
        self.nodes.append(node)
        return TensorRef(name)

    def conv(self, name, x, kind=K.CONV, bias=False):
        t = self.op(name, kind, [x], weight=True)
        if bias:
            node = self.nodes[-1]
            node.bias = BiasInfo(name, 2, (3,), t)
        return t

    def output(self, x, name="out"):
        self.nodes.append(Node(f"output/{name}", K.OUTPUT, "Result", [x], [], []))

    def build(self) -> Graph:
        return Graph(self.nodes)
