"""Quantizer groups: the quantizers that must be reverted together to bring operations back to float."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nncompress.graph.edits import QuantizeActivation, QuantizeWeight, SetConstant
from nncompress.graph.ir import Graph

ACTIVATIONS_AND_WEIGHTS = "activations_and_weights"
ONLY_ACTIVATIONS = "only_activations"
RESTORE_MODES = (ACTIVATIONS_AND_WEIGHTS, ONLY_ACTIVATIONS)


@dataclass(frozen=True)
class QuantizerGroup:
    """Operations that become float together and the indices of the edits that quantize them.

    An activation quantizer shared by several operations (its ``targets``) ties them into one group.
    ``quantizers`` names the reverted quantizers (for messages when ``operations`` is empty, e.g. an
    output quantizer).
    """

    operations: tuple[str, ...]
    edit_ids: frozenset[int]
    quantizers: tuple[str, ...]

    @property
    def label(self) -> str:
        return ", ".join(self.operations or self.quantizers)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        self.parent.setdefault(item, item)
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, items: Sequence[str]) -> None:
        roots = [self.find(i) for i in items]
        for root in roots[1:]:
            self.parent[root] = roots[0]


def bias_owners(graph: Graph) -> dict[tuple[str, int], str]:
    """(node, port) of each bias constant -> the weighted operation it belongs to."""
    return {(n.bias.node, n.bias.port): n.name for n in graph if n.bias is not None}


def _edit_operations(edits: Sequence, targets: dict[str, tuple[str, ...]], owners: dict) -> list[tuple[str, ...]]:
    """The operations each edit serves (empty for edits that are never reverted)."""
    served: list[tuple[str, ...]] = []
    for edit in edits:
        if isinstance(edit, QuantizeActivation):
            served.append(targets.get(edit.name, ()))
        elif isinstance(edit, QuantizeWeight):
            served.append((edit.node,))
        elif isinstance(edit, SetConstant) and (edit.node, edit.port) in owners:
            served.append((owners[(edit.node, edit.port)],))
        else:
            served.append(())
    return served


def build_groups(
    graph: Graph, setup, edits: Sequence, restore_mode: str = ACTIVATIONS_AND_WEIGHTS
) -> list[QuantizerGroup]:
    """Group ``edits`` (from ``run_ptq``) by the operations they quantize, in graph order.

    ``only_activations`` keeps weight quantizers and bias corrections: a group then reverts just the
    activation quantizers feeding its operations.
    """
    targets: dict[str, tuple[str, ...]] = {}
    for q in setup.activations:
        targets[q.name] = tuple(dict.fromkeys(targets.get(q.name, ()) + tuple(q.targets)))
    served = _edit_operations(edits, targets, bias_owners(graph))
    uf = _UnionFind()
    for edit, ops in zip(edits, served):
        if isinstance(edit, QuantizeActivation):
            uf.union([f"op:{o}" for o in ops] or [f"q:{edit.name}"])
    members: dict[str, list[int]] = {}
    for index, (edit, ops) in enumerate(zip(edits, served)):
        if isinstance(edit, QuantizeActivation):
            key = f"op:{ops[0]}" if ops else f"q:{edit.name}"
        elif ops and restore_mode == ACTIVATIONS_AND_WEIGHTS:
            key = f"op:{ops[0]}"
        else:
            continue
        members.setdefault(uf.find(key), []).append(index)
    order = {name: i for i, name in enumerate(graph.nodes)}
    groups = [_group(edits, served, ids, order) for ids in members.values()]
    groups = [g for g in groups if any(isinstance(edits[i], (QuantizeActivation, QuantizeWeight)) for i in g.edit_ids)]
    return sorted(groups, key=lambda g: min((order.get(o, len(order)) for o in g.operations), default=len(order)))


def _group(edits: Sequence, served: list, ids: list[int], order: dict[str, int]) -> QuantizerGroup:
    ops = {o for i in ids for o in served[i]}
    names = tuple(edits[i].name for i in ids if isinstance(edits[i], (QuantizeActivation, QuantizeWeight)))
    return QuantizerGroup(tuple(sorted(ops, key=lambda o: order.get(o, len(order)))), frozenset(ids), names)


def edits_without(edits: Sequence, groups: Sequence[QuantizerGroup]) -> list:
    """``edits`` minus those of ``groups`` (the edits of a model with those groups reverted)."""
    dropped = set().union(*(g.edit_ids for g in groups)) if groups else set()
    return [e for i, e in enumerate(edits) if i not in dropped]
