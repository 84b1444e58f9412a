"""``IgnoredScope``: operations to leave uncompressed, matched strictly by default."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from nncompress.errors import ValidationError
from nncompress.graph.ir import Graph


@dataclass
class Subgraph:
    """All operations on paths from any of ``inputs`` to any of ``outputs`` (names)."""

    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


@dataclass
class IgnoredScope:
    """Operations to ignore, by exact ``names``, regex ``patterns`` (``re.match``), backend op
    ``types`` or ``subgraphs``. With ``validate=True`` a rule that matches nothing is an error."""

    names: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    subgraphs: list[Subgraph] = field(default_factory=list)
    validate: bool = True


def match_ignored_scope(scope: IgnoredScope | None, graph: Graph) -> dict[str, str]:
    """{node name: rule that matched}. Raises ValidationError for unmatched rules when validating."""
    if scope is None:
        return {}
    if not isinstance(scope, IgnoredScope):
        raise ValidationError(f"ignored_scope must be an nncompress.IgnoredScope; got {type(scope).__name__}")
    matched: dict[str, str] = {}
    unmatched: list[str] = []
    for name in scope.names:
        if name in graph.nodes:
            matched.setdefault(name, f"name {name!r}")
        else:
            unmatched.append(f"name {name!r}")
    for pattern in scope.patterns:
        hits = _match_pattern(pattern, graph)
        for hit in hits:
            matched.setdefault(hit, f"pattern {pattern!r}")
        if not hits:
            unmatched.append(f"pattern {pattern!r}")
    for op_type in scope.types:
        hits = [n.name for n in graph if n.op_type == op_type]
        for hit in hits:
            matched.setdefault(hit, f"type {op_type!r}")
        if not hits:
            unmatched.append(f"type {op_type!r}")
    for sub in scope.subgraphs:
        hits = _subgraph_nodes(sub, graph)
        for hit in hits:
            matched.setdefault(hit, f"subgraph {sub.inputs}->{sub.outputs}")
        if not hits:
            unmatched.append(f"subgraph inputs={sub.inputs} outputs={sub.outputs}")
    if unmatched and scope.validate:
        types = sorted({n.op_type for n in graph})
        raise ValidationError(
            "ignored_scope rules matched no operation: " + "; ".join(unmatched)
            + f". The model's operation types are {types}; use nncompress.build_graph(model) to list names,"
            " or IgnoredScope(validate=False) to allow unmatched rules."
        )
    return matched


def _match_pattern(pattern: str, graph: Graph) -> list[str]:
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ValidationError(f"ignored_scope pattern {pattern!r} is not a valid regular expression: {exc}") from exc
    return [n.name for n in graph if regex.match(n.name)]


def _subgraph_nodes(sub: Subgraph, graph: Graph) -> list[str]:
    missing = [n for n in [*sub.inputs, *sub.outputs] if n not in graph.nodes]
    if missing:
        return []
    forward = _reachable(graph, sub.inputs, graph.successors)
    backward = _reachable(graph, sub.outputs, graph.predecessors)
    return [name for name in graph.nodes if name in forward and name in backward]


def _reachable(graph: Graph, starts: list[str], step) -> set[str]:
    seen = set(starts)
    stack = list(starts)
    while stack:
        for nxt in step(stack.pop()):
            if nxt.name not in seen:
                seen.add(nxt.name)
                stack.append(nxt.name)
    return seen
