"""Backend-neutral graph of a model's inference computation.

Constants and shape computations are not nodes: they appear as constant inputs of the nodes that
read them. Every node output is addressed by a ``TensorRef``; every node input by an ``InputRef``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from nncompress.graph.ops import OpKind


@dataclass(frozen=True, order=True)
class TensorRef:
    """Output ``port`` of node ``node``."""

    node: str
    port: int = 0


@dataclass(frozen=True, order=True)
class InputRef:
    """Input ``port`` of node ``node``."""

    node: str
    port: int


@dataclass(frozen=True)
class WeightInfo:
    """Where a weighted node keeps its constant weight and how the weight is laid out.

    ``out_axis`` indexes output channels and ``in_axis`` the input channels reduced over;
    ``groups`` is the convolution group count (1 for matmuls).
    """

    port: int
    shape: tuple[int, ...]
    out_axis: int
    in_axis: int
    groups: int = 1


@dataclass(frozen=True)
class BiasInfo:
    """A constant added per output channel after a weighted node.

    ``node``/``port`` locate the constant (the weighted node itself, or a following Add);
    ``output`` is the tensor that carries the biased result; ``shape`` is the constant's shape.
    """

    node: str
    port: int
    shape: tuple[int, ...]
    output: TensorRef


@dataclass
class Node:
    name: str
    kind: OpKind
    op_type: str
    inputs: list[TensorRef | None]  # per input port: the producing tensor, None where constant
    output_shapes: list[tuple | None] = field(default_factory=list)
    output_dtypes: list[str] = field(default_factory=list)  # "float", "int", "bool"
    const_ports: dict[int, tuple[int, ...]] = field(default_factory=dict)  # port -> constant shape
    weight: WeightInfo | None = None
    bias: BiasInfo | None = None
    attrs: dict = field(default_factory=dict)

    def activation_ports(self) -> list[int]:
        return [p for p, t in enumerate(self.inputs) if t is not None]


class Graph:
    """Nodes in topological order plus consumer lookup.

    ``has_dataflow`` is False for a graph of layers read without running the model (a PyTorch model
    without an example input): its nodes are not connected, so patterns along edges cannot be found.
    """

    def __init__(self, nodes: list[Node] | tuple[Node, ...] = (), has_dataflow: bool = True):
        self.has_dataflow = has_dataflow
        self.nodes: dict[str, Node] = {n.name: n for n in nodes}
        self._consumers: dict[TensorRef, list[InputRef]] = {}
        for node in nodes:
            for port, tensor in enumerate(node.inputs):
                if tensor is not None:
                    self._consumers.setdefault(tensor, []).append(InputRef(node.name, port))

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def consumers(self, tensor: TensorRef) -> list[InputRef]:
        return self._consumers.get(tensor, [])

    def producer(self, ref: InputRef) -> TensorRef | None:
        return self.nodes[ref.node].inputs[ref.port]

    def successors(self, name: str) -> list[Node]:
        node = self.nodes[name]
        seen: dict[str, Node] = {}
        for port in range(max(1, len(node.output_shapes))):
            for ref in self.consumers(TensorRef(name, port)):
                seen.setdefault(ref.node, self.nodes[ref.node])
        return list(seen.values())

    def predecessors(self, name: str) -> list[Node]:
        return [self.nodes[t.node] for t in self.nodes[name].inputs if t is not None]

    def inputs(self) -> list[Node]:
        return [n for n in self if n.kind is OpKind.INPUT]

    def outputs(self) -> list[Node]:
        return [n for n in self if n.kind is OpKind.OUTPUT]

    def tensor_dtype(self, tensor: TensorRef) -> str:
        dtypes = self.nodes[tensor.node].output_dtypes
        return dtypes[tensor.port] if tensor.port < len(dtypes) else "float"

    def tensor_shape(self, tensor: TensorRef) -> tuple | None:
        shapes = self.nodes[tensor.node].output_shapes
        return shapes[tensor.port] if tensor.port < len(shapes) else None

    def dump(self) -> str:
        """A compact text listing, one node a line (for debugging and golden tests)."""
        lines = []
        for n in self:
            ins = ", ".join("const" if t is None else f"{t.node}:{t.port}" for t in n.inputs)
            lines.append(f"{n.name} [{n.kind.value}/{n.op_type}] ({ins})")
        return "\n".join(lines)
