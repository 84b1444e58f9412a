"""Regions: connected parts of a graph that a backend runs on their own (``Adapter.region_runner``).

A ``Region`` names the nodes it contains, the tensors it reads from outside (``inputs``: the values a
caller feeds) and the tensors it hands back (``outputs``). It is backend-neutral: every backend's
runner executes the same region of its own graph. Model-input and model-output pseudo nodes are never
part of a region (a model input read by a region is one of its inputs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from nncompress.errors import UnsupportedModelError, ValidationError
from nncompress.graph.ir import Graph, TensorRef
from nncompress.graph.ops import OpKind

_PSEUDO = (OpKind.INPUT, OpKind.OUTPUT)


@dataclass(frozen=True)
class Region:
    """A sub-graph: ``nodes`` in graph (topological) order, the ``inputs`` it reads from outside and
    the ``outputs`` it produces for the caller (both in a stable order)."""

    name: str
    nodes: tuple[str, ...]
    inputs: tuple[TensorRef, ...]
    outputs: tuple[TensorRef, ...]


def _external_reads(graph: Graph, members: set[str]) -> list[TensorRef]:
    """Tensors read by ``members`` and produced outside them (graph order, no repeats)."""
    reads: dict[TensorRef, None] = {}
    for name in (n.name for n in graph if n.name in members):
        for tensor in graph.node(name).inputs:
            if tensor is not None and tensor.node not in members:
                reads.setdefault(tensor, None)
    return list(reads)


def region_from_nodes(
    graph: Graph, nodes: Iterable[str], outputs: Sequence[TensorRef] | None = None, name: str = ""
) -> Region:
    """The region made of ``nodes``: its inputs are every tensor they read from outside; its outputs are
    ``outputs`` or, when None, every tensor of theirs read outside them (or a model output)."""
    members = {n for n in nodes}
    unknown = sorted(n for n in members if n not in graph.nodes)
    if unknown:
        raise ValidationError(f"region nodes not in the graph: {unknown[:5]} ({len(unknown)} in all)")
    members = {n for n in members if graph.node(n).kind not in _PSEUDO}
    if not members:
        raise ValidationError("a region needs at least one computing node (model inputs/outputs are not nodes)")
    order = tuple(n.name for n in graph if n.name in members)
    if outputs is None:
        produced: dict[TensorRef, None] = {}
        for node_name in order:
            node = graph.node(node_name)
            for port in range(max(1, len(node.output_shapes))):
                tensor = TensorRef(node_name, port)
                if any(c.node not in members for c in graph.consumers(tensor)):
                    produced.setdefault(tensor, None)
        outputs = list(produced)
    return Region(name or order[-1], order, tuple(_external_reads(graph, members)), tuple(outputs))


def region_between(graph: Graph, inputs: Sequence[TensorRef], outputs: Sequence[TensorRef], name: str = "") -> Region:
    """The nodes reachable backwards from ``outputs`` without crossing ``inputs``.

    Raises ValidationError when the region would read a tensor that is neither one of ``inputs`` nor
    computed inside it (a model input not listed), naming those tensors.
    """
    for tensor in list(inputs) + list(outputs):
        if tensor.node not in graph.nodes:
            raise ValidationError(f"tensor {tensor.node}:{tensor.port} is not in the graph")
    stops = set(inputs)
    members: set[str] = set()
    unlisted: dict[TensorRef, None] = {}
    stack = [t for t in outputs if t not in stops]
    while stack:
        tensor = stack.pop()
        node = graph.node(tensor.node)
        if node.kind is OpKind.INPUT:
            unlisted.setdefault(tensor, None)
            continue
        if node.name in members:
            continue
        members.add(node.name)
        stack.extend(t for t in node.inputs if t is not None and t not in stops)
    if unlisted:
        listed = ", ".join(f"{t.node}:{t.port}" for t in unlisted)
        raise ValidationError(
            f"the region up to {[f'{t.node}:{t.port}' for t in outputs]} reads {listed}, which is neither one of "
            f"its inputs {[f'{t.node}:{t.port}' for t in inputs]} nor a constant: add it to the inputs"
        )
    if not members:
        raise ValidationError(f"no node lies between inputs {list(inputs)} and outputs {list(outputs)}")
    return region_from_nodes(graph, members, outputs, name)


def scope_region(graph: Graph, prefix: str, name: str = "") -> Region:
    """Every node whose name starts with ``prefix`` + "/" (a module's scope, e.g. ``model/layers/3``):
    inputs are all tensors it reads from outside (hidden states, attention mask, ...), outputs all its
    tensors read outside it."""
    scope = prefix.rstrip("/") + "/"
    members = [n.name for n in graph if n.name.startswith(scope) and n.kind not in _PSEUDO]
    if not members:
        raise ValidationError(f"no node of the graph is in scope {prefix!r}")
    return region_from_nodes(graph, members, None, name or prefix.rstrip("/"))


def overridable_ports(graph: Graph, region: Region) -> list[tuple[str, int]]:
    """The weight and bias ports (node, port) of the region's layers: what ``constants`` may replace."""
    members = set(region.nodes)
    ports: dict[tuple[str, int], None] = {}
    for name in region.nodes:
        node = graph.node(name)
        if node.weight is not None and node.weight.port in node.const_ports:
            ports.setdefault((name, node.weight.port), None)
        if node.bias is not None and node.bias.node in members:
            ports.setdefault((node.bias.node, node.bias.port), None)
    return list(ports)


def override_error(region: Region, key: tuple[str, int]) -> str:
    """Why ``key`` (node, port) cannot be overridden in ``region``."""
    node, port = key
    if node not in region.nodes:
        return f"constant override of {node!r}: the node is not in region {region.name!r}"
    return f"constant override of {node}:{port}: only the weight and bias inputs of the region's layers can be replaced"


def required_value(region: Region, values: Mapping[TensorRef, object], ref: TensorRef):
    """``values[ref]`` for a runner of ``region``; UnsupportedModelError naming ``ref`` when it is missing."""
    if ref not in values:
        what = "input" if ref in region.inputs else "context value (from Adapter.region_inputs)"
        raise UnsupportedModelError(f"region {region.name!r}: no value for its {what} {ref.node}:{ref.port}")
    return values[ref]


def refuse_frozen_overrides(region: Region, constants, frozen: bool) -> None:
    """A runner made with fixed constants takes no per-run overrides."""
    if constants and frozen:
        raise UnsupportedModelError(
            f"region {region.name!r}: this runner was made with fixed constants; make one without "
            "constants to override weights per run"
        )


def merged_constants(region: Region, defaults: dict, constants, frozen: bool) -> dict:
    """``defaults`` ((node, port) -> array) with the per-run ``constants`` in their place, each converted to
    its default's dtype and shape (contiguous); UnsupportedModelError for a key that cannot be overridden."""
    refuse_frozen_overrides(region, constants, frozen)
    weights = dict(defaults)
    for key, value in (constants or {}).items():
        if key not in weights:
            raise UnsupportedModelError(override_error(region, key))
        weights[key] = np.ascontiguousarray(value, dtype=weights[key].dtype).reshape(weights[key].shape)
    return weights
