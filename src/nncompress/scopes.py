"""``IgnoredScope``: operations to leave uncompressed, matched strictly by default."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from nncompress.errors import ValidationError
from nncompress.graph.ir import Graph
from nncompress.parameters import api  # noqa: F401 (NNCF's nncf.scopes.api)


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
    from nncompress.foreign import adopt

    scope = adopt(scope, IgnoredScope, "ignored_scope")
    if not isinstance(scope, IgnoredScope):
        raise ValidationError(f"ignored_scope must be an nncompress.IgnoredScope; got {type(scope).__name__}")
    matched: dict[str, str] = {}
    unmatched: list[str] = []
    for name in scope.names:
        if name in graph.nodes:
            matched.setdefault(name, f"name {name!r}")
        else:
            unmatched.append(f"name {name!r}{_closest(name, graph)}")
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


def _closest(name: str, graph: Graph) -> str:
    """The graph's names nearest to an unmatched ``name`` (e.g. an old-style PyTorch op name), as a hint."""
    close = difflib.get_close_matches(name, list(graph.nodes), n=3, cutoff=0.6)
    return f" (closest names: {', '.join(repr(c) for c in close)})" if close else ""


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


# NNCF's helper functions of ``nncf.scopes``, over nncompress' graph (``NNCFGraph`` is ``Graph``).
NNCFGraph = Graph


def convert_ignored_scope_to_list(ignored_scope: IgnoredScope | None) -> list[str]:
    """The scope in NNCF's list form: names as they are, regex patterns prefixed with ``{re}``."""
    if ignored_scope is None:
        return []
    if ignored_scope.types or ignored_scope.subgraphs:
        raise ValidationError(
            f"an ignored scope with types {ignored_scope.types} or subgraphs {ignored_scope.subgraphs} has no list "
            "form; only names and patterns convert"
        )
    return [*ignored_scope.names, *(f"{{re}}{pattern}" for pattern in ignored_scope.patterns)]


def get_difference_ignored_scope(ignored_scope_1: IgnoredScope, ignored_scope_2: IgnoredScope) -> IgnoredScope:
    """The rules of ``ignored_scope_1`` that ``ignored_scope_2`` does not have."""
    return IgnoredScope(
        names=[n for n in ignored_scope_1.names if n not in ignored_scope_2.names],
        patterns=[p for p in ignored_scope_1.patterns if p not in ignored_scope_2.patterns],
        types=[t for t in ignored_scope_1.types if t not in ignored_scope_2.types],
        subgraphs=[s for s in ignored_scope_1.subgraphs if s not in ignored_scope_2.subgraphs],
        validate=ignored_scope_1.validate,
    )


def get_ignored_node_names_from_ignored_scope(
    ignored_scope: IgnoredScope, nncf_graph: Graph, strict: bool = True
) -> set[str]:
    """Names of the operations of ``nncf_graph`` the scope matches; with ``strict`` an unmatched rule raises."""
    scope = IgnoredScope(ignored_scope.names, ignored_scope.patterns, ignored_scope.types, ignored_scope.subgraphs,
                         validate=strict)
    return set(match_ignored_scope(scope, nncf_graph))


def get_ignored_node_names_from_subgraph(graph: Graph, subgraph: Subgraph) -> list[str]:
    """Names of the operations on paths from the subgraph's inputs to its outputs."""
    return _subgraph_nodes(subgraph, graph)


def get_matched_ignored_scope_info(
    ignored_scope: IgnoredScope, nncf_graphs: list[Graph]
) -> tuple[IgnoredScope, dict[str, set[str]]]:
    """The rules of ``ignored_scope`` that match an operation in any of ``nncf_graphs`` (as a scope), and
    {rule kind ("names", "patterns", "types", "subgraphs"): matched operation names}."""
    found: dict[str, set[str]] = {}
    kept: dict[str, list] = {"names": [], "patterns": [], "types": [], "subgraphs": []}
    for kind in kept:
        for rule in getattr(ignored_scope, kind):
            hits = set()
            for graph in nncf_graphs:
                hits |= set(match_ignored_scope(IgnoredScope(**{kind: [rule]}, validate=False), graph))
            if hits:
                kept[kind].append(rule)
                found.setdefault(kind, set()).update(hits)
    return IgnoredScope(**kept, validate=ignored_scope.validate), found


def validate_ignored_scope(ignored_scope: IgnoredScope, nncf_graphs: list[Graph]) -> None:
    """Raise ValidationError naming every rule of ``ignored_scope`` that matches no operation in any graph."""
    matched, _ = get_matched_ignored_scope_info(ignored_scope, nncf_graphs)
    missing = get_difference_ignored_scope(ignored_scope, matched)
    rules = [f"{kind} {getattr(missing, kind)}" for kind in ("names", "patterns", "types", "subgraphs")
             if getattr(missing, kind)]
    if rules:
        raise ValidationError(
            "ignored_scope rules matched no operation: " + "; ".join(rules)
            + ". Use nncompress.build_graph(model) to list names, or IgnoredScope(validate=False)."
        )
