"""Where quantizers go: requests at quantizable inputs, propagated up through quantize-agnostic ops,
merged at branches, unified across Concat inputs; fused chains take none inside."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from nncompress.graph.ir import Graph, InputRef, Node, TensorRef
from nncompress.graph.ops import ELEMENTWISE_KINDS, OpKind
from nncompress.graph.patterns import attention_output_matmuls, find_fused_groups, internal_tensors
from nncompress.hardware.rules import SYM, TRANSFORMER_IGNORED_KINDS, OpRule, Trait, rule_for


@dataclass(frozen=True)
class ActivationQuantizer:
    """One activation quantizer. ``consumers`` None: shared by every consumer of ``tensor``."""

    tensor: TensorRef
    consumers: tuple[InputRef, ...] | None
    modes: frozenset[str]
    per_channel: bool
    targets: tuple[str, ...]  # the quantized operations it serves
    unified: int | None = None  # quantizers with the same id share one range

    @property
    def name(self) -> str:
        if self.consumers is None:
            return f"{self.tensor.node}/fq_output_{self.tensor.port}"
        first = self.consumers[0]
        return f"{first.node}/fq_input_{first.port}"


@dataclass(frozen=True)
class WeightQuantizer:
    node: str
    port: int
    axis: int
    half_range: bool = False

    @property
    def name(self) -> str:
        return f"{self.node}/fq_weights_{self.port}"


@dataclass
class QuantizationSetup:
    activations: list[ActivationQuantizer] = field(default_factory=list)
    weights: list[WeightQuantizer] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # node -> why it was left in float


@dataclass(frozen=True)
class _Request:
    at: InputRef
    modes: frozenset[str]
    per_channel: bool
    targets: tuple[str, ...]
    unified: int | None = None


@dataclass
class PlacementOptions:
    rules: dict
    transformer: bool = False
    merge_branches: bool = True
    quantize_outputs: bool = False
    overflow_fix_first_layer: bool = False
    overflow_fix_all: bool = False
    fuse_linear_arithmetic: bool = True
    per_channel_activations: bool = True
    cpu_spr: bool = False  # Sapphire Rapids: one quantized input per Add; Mul quantized in transformers


def find_quantization_setup(graph: Graph, ignored: dict[str, str], options: PlacementOptions) -> QuantizationSetup:
    """The quantizers for ``graph`` with ``ignored`` ({node: reason}) nodes left in float."""
    ignored = dict(ignored)
    if options.transformer:
        for name in attention_output_matmuls(graph):
            ignored.setdefault(name, "attention output MatMul (transformer pattern)")
        for node in graph:
            if node.kind in TRANSFORMER_IGNORED_KINDS and not (options.cpu_spr and node.kind is OpKind.MUL):
                ignored.setdefault(node.name, f"{node.kind.value} inputs stay float in transformers")
    fused = find_fused_groups(graph, options.fuse_linear_arithmetic)
    planner = _Planner(graph, ignored, options, internal_tensors(graph, fused))
    setup = QuantizationSetup(skipped={k: v for k, v in ignored.items() if k in graph.nodes})
    setup.activations = planner.place(planner.initial_requests())
    if options.cpu_spr:
        setup.activations = _one_quantized_add_input(graph, setup.activations)
    setup.weights = _weight_quantizers(graph, ignored, options)
    return setup


def _one_quantized_add_input(graph: Graph, quantizers: list[ActivationQuantizer]) -> list[ActivationQuantizer]:
    """Drop one of the two quantizers serving only an Add: the one whose tensor does not branch, or,
    when both come from Conv/MatMul, the one on the larger tensor."""
    dropped: set[int] = set()
    for node in graph:
        if node.kind is not OpKind.ADD:
            continue
        own = [i for i, q in enumerate(quantizers) if q.targets == (node.name,) and i not in dropped]
        if len(own) != 2:
            continue
        dropped.add(_add_input_to_drop(graph, [quantizers[i] for i in own], own))
    return [q for i, q in enumerate(quantizers) if i not in dropped]


def _add_input_to_drop(graph: Graph, pair: list[ActivationQuantizer], indices: list[int]) -> int:
    branching = [len(graph.consumers(q.tensor)) > 1 for q in pair]
    if branching[0] != branching[1]:
        return indices[branching.index(False)]
    producers = [graph.node(q.tensor.node).kind for q in pair]
    if all(kind in (OpKind.CONV, OpKind.LINEAR, OpKind.MATMUL, OpKind.DEPTHWISE_CONV) for kind in producers):
        sizes = [_numel(graph.tensor_shape(q.tensor)) for q in pair]
        return indices[0] if sizes[0] >= sizes[1] else indices[1]
    return indices[1]


def _numel(shape) -> int:
    if not shape:
        return 0
    return int(np.prod([d if isinstance(d, int) and d > 0 else 1 for d in shape]))


class _Planner:
    def __init__(self, graph: Graph, ignored: dict[str, str], options: PlacementOptions, internal: set):
        self.graph, self.ignored, self.options, self.internal = graph, ignored, options, internal
        self._next_group = 0
        self._unify_parent: dict[int, int] = {}

    def rule(self, node: Node) -> OpRule:
        return rule_for(node.kind, self.options.rules)

    def initial_requests(self) -> list[_Request]:
        requests = []
        for node in self.graph:
            if node.name in self.ignored:
                continue
            if node.kind is OpKind.OUTPUT and self.options.quantize_outputs:
                requests.append(_Request(InputRef(node.name, 0), frozenset({SYM, "asymmetric"}), False, ()))
                continue
            rule = self.rule(node)
            if rule.trait is not Trait.QUANTIZABLE:
                continue
            ports = [p for p in node.activation_ports() if self._quantizable_tensor(node.inputs[p])]
            if rule.activation_ports is not None:
                ports = [p for p in ports if p in rule.activation_ports]
            if node.kind in ELEMENTWISE_KINDS and len(node.activation_ports()) < 2:
                continue  # an elementwise op with a constant operand needs no input quantizer
            modes = rule.activation_modes
            if self.options.transformer and node.kind is OpKind.MATMUL:
                modes = frozenset({SYM})
            for port in ports:
                requests.append(_Request(InputRef(node.name, port), modes, rule.per_channel_activations, (node.name,)))
        return requests

    def _quantizable_tensor(self, tensor: TensorRef | None) -> bool:
        return tensor is not None and tensor not in self.internal and self.graph.tensor_dtype(tensor) == "float"

    def place(self, requests: list[_Request]) -> list[ActivationQuantizer]:
        pending: dict[str, list[_Request]] = {}
        for req in requests:
            pending.setdefault(self.graph.producer(req.at).node, []).append(req)
        placed: list[ActivationQuantizer] = []
        for node in reversed(list(self.graph)):
            reqs = pending.pop(node.name, None)
            if reqs:
                self._resolve(node, reqs, pending, placed)
        order = {name: i for i, name in enumerate(self.graph.nodes)}
        placed.sort(key=lambda q: (order[q.tensor.node], q.tensor.port))
        return self._finalize_unified(placed)

    def _resolve(self, node: Node, reqs: list[_Request], pending: dict, placed: list) -> None:
        """Requests arriving at ``node``'s outputs: merge and move up, or place where they are."""
        rule = self.rule(node)
        movable = node.name not in self.ignored and rule.trait in (Trait.AGNOSTIC, Trait.CONCAT)
        if movable and self._all_consumers_requested(node, reqs, whole_node=True):
            merged = self._merge(reqs)
            if merged is not None and self._move_up(node, rule, merged, pending):
                return
        by_tensor: dict[TensorRef, list[_Request]] = {}
        for req in reqs:
            by_tensor.setdefault(self.graph.producer(req.at), []).append(req)
        for tensor, group in by_tensor.items():
            merged = self._merge(group) if self.options.merge_branches else None
            if merged is None:
                placed.extend(self._quantizer(tensor, (r.at,), r) for r in group)
                continue
            # one quantizer serves the requesting branches; the others keep reading the float tensor
            consumers = None if self._covers(tensor, group) else tuple(r.at for r in group)
            placed.append(self._quantizer(tensor, consumers, merged))

    def _all_consumers_requested(self, node: Node, reqs: list[_Request], whole_node: bool) -> bool:
        wanted = {r.at for r in reqs}
        ports = range(max(1, len(node.output_shapes)))
        consumers = {c for p in ports for c in self.graph.consumers(TensorRef(node.name, p))}
        return bool(consumers) and consumers == wanted and (self.options.merge_branches or len(reqs) == 1)

    def _covers(self, tensor: TensorRef, reqs: list[_Request]) -> bool:
        return {r.at for r in reqs} == set(self.graph.consumers(tensor))

    def _merge(self, reqs: list[_Request]) -> _Request | None:
        modes = frozenset.intersection(*(r.modes for r in reqs))
        if not modes:
            return None
        targets = tuple(dict.fromkeys(t for r in reqs for t in r.targets))
        groups = {r.unified for r in reqs if r.unified is not None}
        unified = self._union(groups) if groups else None
        return _Request(reqs[0].at, modes, all(r.per_channel for r in reqs), targets, unified)

    def _move_up(self, node: Node, rule: OpRule, merged: _Request, pending: dict) -> bool:
        ports = [p for p in node.activation_ports() if self.graph.tensor_dtype(node.inputs[p]) == "float"]
        if rule.trait is Trait.AGNOSTIC:
            if len(ports) != 1:
                return False
            moved = [replace(merged, at=InputRef(node.name, ports[0]))]
        else:
            group = merged.unified if merged.unified is not None else self._new_group()
            moved = [replace(merged, at=InputRef(node.name, p), per_channel=False, unified=group) for p in ports]
        for req in moved:
            tensor = node.inputs[req.at.port]
            if tensor in self.internal:
                return False
        for req in moved:
            pending.setdefault(node.inputs[req.at.port].node, []).append(req)
        return True

    def _quantizer(self, tensor: TensorRef, consumers, req: _Request) -> ActivationQuantizer:
        shape = self.graph.tensor_shape(tensor)
        per_channel = self.options.per_channel_activations and req.per_channel and shape is not None and len(shape) >= 3
        return ActivationQuantizer(tensor, consumers, req.modes, per_channel, req.targets, req.unified)

    def _new_group(self) -> int:
        self._next_group += 1
        self._unify_parent[self._next_group] = self._next_group
        return self._next_group

    def _find(self, group: int) -> int:
        while self._unify_parent[group] != group:
            group = self._unify_parent[group]
        return group

    def _union(self, groups: set[int]) -> int:
        roots = sorted({self._find(g) for g in groups})
        for other in roots[1:]:
            self._unify_parent[other] = roots[0]
        return roots[0]

    def _finalize_unified(self, placed: list[ActivationQuantizer]) -> list[ActivationQuantizer]:
        result = []
        for q in placed:
            if q.unified is not None:
                q = replace(q, unified=self._find(q.unified), per_channel=False)
            result.append(q)
        return result


def _weight_quantizers(graph: Graph, ignored: dict[str, str], options: PlacementOptions) -> list[WeightQuantizer]:
    first_convs = _first_convolutions(graph) if options.overflow_fix_first_layer else set()
    result = []
    for node in graph:
        if node.weight is None or node.name in ignored or not rule_for(node.kind, options.rules).quantize_weights:
            continue
        half = options.overflow_fix_all and node.kind is not OpKind.EMBEDDING or node.name in first_convs
        result.append(WeightQuantizer(node.name, node.weight.port, node.weight.out_axis, half))
    return result


def _first_convolutions(graph: Graph) -> set[str]:
    """The first convolution reached from each model input (breadth first)."""
    found = set()
    for start in graph.inputs():
        frontier, seen = [start], {start.name}
        while frontier:
            hits = [n for n in frontier if n.kind in (OpKind.CONV, OpKind.DEPTHWISE_CONV, OpKind.CONV_TRANSPOSE)]
            if hits:
                found.add(hits[0].name)
                break
            nxt = []
            for n in frontier:
                for s in graph.successors(n.name):
                    if s.name not in seen:
                        seen.add(s.name)
                        nxt.append(s)
            frontier = nxt
    return found
