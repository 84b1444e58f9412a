"""Low-level graph surgery on a working copy of a model: names, initializers, rewiring, cleanup."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from nncompress.backends.onnx.constants import evaluate_tensor
from nncompress.backends.onnx.naming import (
    node_reads,
    output_node_name,
    resolve_node_names,
    topological_order,
    unique_name,
)
from nncompress.backends.onnx.shapes import infer_types
from nncompress.errors import ValidationError
from nncompress.graph.ir import InputRef, TensorRef


def name_nodes(model: onnx.ModelProto) -> None:
    """Write the resolved (unique, deterministic) name into every node of ``model``."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in inits]
    for node, name in zip(graph.node, resolve_node_names(list(graph.node), inputs)):
        node.name = name


class Editor:
    """Edits ``model`` in place; nodes added are kept aside and placed by ``finish``."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        name_nodes(model)
        self.model = model
        self.inits = {t.name: t for t in graph.initializer}
        self.input_names = {i.name for i in graph.input if i.name not in self.inits}
        self.nodes = {n.name: n for n in graph.node}
        self.producers = {out: n for n in graph.node for out in n.output if out}
        self.outputs = {output_node_name(o.name): o.name for o in graph.output}
        self.types = infer_types(model)
        self.new_nodes: list[onnx.NodeProto] = []
        self.released: set[str] = set()
        self.taken = set(self.nodes) | set(self.inits) | set(self.producers) | set(self.types)
        self.taken |= {i.name for i in graph.input} | {o.name for o in graph.output}

    # names and lookups -------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        """A tensor/node name not used anywhere in the model yet."""
        return unique_name(base, self.taken)

    def node(self, name: str) -> onnx.NodeProto:
        node = self.nodes.get(name)
        if node is None:
            raise ValidationError(f"the model has no operation named {name!r}")
        return node

    def input_name(self, ref: InputRef) -> str:
        """The tensor read by input ``ref`` (a model output's tensor for an OUTPUT node)."""
        if ref.node in self.outputs:
            return self.outputs[ref.node]
        node = self.node(ref.node)
        if not 0 <= ref.port < len(node.input) or not node.input[ref.port]:
            raise ValidationError(f"operation {ref.node!r} has no input on port {ref.port}")
        return node.input[ref.port]

    def tensor_name(self, ref: TensorRef) -> str:
        if ref.node in self.input_names and ref.port == 0:
            return ref.node
        node = self.node(ref.node)
        if not 0 <= ref.port < len(node.output):
            raise ValidationError(f"operation {ref.node!r} has no output {ref.port}")
        return node.output[ref.port]

    def elem_type(self, tensor: str) -> int:
        elem = (self.types.get(tensor) or (None, None))[0]
        return elem or onnx.TensorProto.FLOAT

    def shape(self, tensor: str) -> tuple[int, ...] | None:
        return (self.types.get(tensor) or (None, None))[1]

    def constant(self, tensor: str) -> np.ndarray:
        """The current value of constant ``tensor``."""
        return evaluate_tensor(self.model, tensor, self.producers, self.inits, self.types)

    # building ----------------------------------------------------------------------------------
    def add_initializer(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        self.inits[name] = self.model.graph.initializer[-1]
        return name

    def add_node(self, op_type: str, inputs: Sequence[str], output: str, name: str, **attrs) -> str:
        """Add a one-output node; returns the output tensor name."""
        node = onnx.helper.make_node(op_type, list(inputs), [output], name=self.fresh(name), **attrs)
        self.new_nodes.append(node)
        self.producers[output] = node
        return output

    def set_input(self, node: onnx.NodeProto, port: int, tensor: str) -> None:
        self.released.add(node.input[port])
        node.input[port] = tensor

    def rename_output(self, tensor: str) -> str:
        """Make ``tensor``'s producer write a fresh name instead; returns that name."""
        node = self.producers.pop(tensor)
        raw = self.fresh(f"{tensor}/raw")
        port = list(node.output).index(tensor)
        node.output[port] = raw
        self.producers[raw] = node
        return raw

    def rewire(self, old: str, new: str, keep: Iterable[InputRef] = (), skip: Iterable[int] = ()) -> None:
        """Every node input reading ``old`` reads ``new``, except ``keep`` inputs and ``skip`` node ids."""
        kept = set(keep)
        skipped = set(skip)
        for node in self.all_nodes():
            if id(node) in skipped:
                continue
            for port, tensor in enumerate(node.input):
                if tensor == old and InputRef(node.name, port) not in kept:
                    node.input[port] = new

    def all_nodes(self) -> list[onnx.NodeProto]:
        return list(self.model.graph.node) + self.new_nodes

    # finishing ---------------------------------------------------------------------------------
    def finish(self) -> onnx.ModelProto:
        """Drop constants no longer read, place new nodes in topological order."""
        nodes = self.all_nodes()
        keep = self._prune(nodes)
        nodes = [n for n in nodes if id(n) in keep]
        order = topological_order(nodes)
        graph = self.model.graph
        if order == list(range(len(nodes))) and len(nodes) == len(graph.node) + len(self.new_nodes):
            graph.node.extend(self.new_nodes)
        else:
            ordered = []
            for i in order:
                copy = onnx.NodeProto()
                copy.CopyFrom(nodes[i])
                ordered.append(copy)
            del graph.node[:]
            graph.node.extend(ordered)
        self.new_nodes = []
        return self.model

    def _prune(self, nodes: list[onnx.NodeProto]) -> set[int]:
        """Ids of the nodes to keep; unread initializers among released tensors are removed."""
        graph = self.model.graph
        readers = Counter(name for node in nodes for name in node_reads(node))
        readers.update(o.name for o in graph.output)
        producer = {out: node for node in nodes for out in node.output if out}
        graph_inputs = {i.name for i in graph.input}
        removed_nodes: set[int] = set()
        removed_inits: set[str] = set()
        work = list(self.released)
        while work:
            name = work.pop()
            if readers[name] > 0:
                continue
            if name in self.inits and name not in graph_inputs:
                removed_inits.add(name)
                continue
            node = producer.get(name)
            if node is None or id(node) in removed_nodes or any(readers[o] for o in node.output if o):
                continue
            removed_nodes.add(id(node))
            for tensor in node_reads(node):
                readers[tensor] -= 1
                work.append(tensor)
        for i in reversed(range(len(graph.initializer))):
            if graph.initializer[i].name in removed_inits:
                del graph.initializer[i]
        return {id(n) for n in nodes} - removed_nodes
