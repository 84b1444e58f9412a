"""Deterministic node names shared by every adapter method, and a topological node order."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

import onnx

from nncompress.errors import UnsupportedModelError

OUTPUT_PREFIX = "output/"


def output_node_name(output: str) -> str:
    """Graph name of the OUTPUT node for model output ``output``."""
    return OUTPUT_PREFIX + output


def unique_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base_k`` with the smallest k not in ``taken``; the name is added to ``taken``."""
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def resolve_node_names(nodes: Sequence[onnx.NodeProto], reserved: Iterable[str] = ()) -> list[str]:
    """One unique name per node: its own name where it is set and unique, else a fallback.

    The first node carrying a name keeps it; empty or repeated names become ``<OpType>_<index>``
    (or ``<name>_<index>`` for repeats), suffixed until unique. ``reserved`` names (model inputs)
    are never given to a node.
    """
    taken = set(reserved)
    names: list[str | None] = []
    for node in nodes:
        if node.name and node.name not in taken:
            taken.add(node.name)
            names.append(node.name)
        else:
            names.append(None)
    for i, node in enumerate(nodes):
        if names[i] is None:
            base = f"{node.name or node.op_type}_{i}"
            name, k = base, 0
            while name in taken:
                k += 1
                name = f"{base}_{k}"
            taken.add(name)
            names[i] = name
    return names  # type: ignore[return-value]


def subgraph_refs(node: onnx.NodeProto) -> set[str]:
    """Every tensor name read inside ``node``'s subgraphs (an over-approximation of outer refs)."""
    refs: set[str] = set()
    for attr in node.attribute:
        graphs = list(attr.graphs)
        if attr.HasField("g"):
            graphs.append(attr.g)
        for graph in graphs:
            for inner in graph.node:
                refs.update(name for name in inner.input if name)
                refs |= subgraph_refs(inner)
    return refs


def node_reads(node: onnx.NodeProto) -> list[str]:
    """Explicit inputs plus names read by subgraphs."""
    reads = [name for name in node.input if name]
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        reads.extend(subgraph_refs(node))
    return reads


def topological_order(nodes: Sequence[onnx.NodeProto]) -> list[int]:
    """Node indices in a topological order, keeping the stored order wherever it is valid."""
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    deps = [{producer[n] for n in node_reads(node) if producer.get(n, i) != i} for i, node in enumerate(nodes)]
    if all(d < i for i, ds in enumerate(deps) for d in ds):
        return list(range(len(nodes)))
    users: list[list[int]] = [[] for _ in nodes]
    for i, ds in enumerate(deps):
        for d in ds:
            users[d].append(i)
    missing = [len(ds) for ds in deps]
    ready = [i for i, m in enumerate(missing) if m == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for user in users[i]:
            missing[user] -= 1
            if missing[user] == 0:
                heapq.heappush(ready, user)
    if len(order) != len(nodes):
        raise UnsupportedModelError("the ONNX graph has a cycle; it cannot be put in topological order")
    return order
