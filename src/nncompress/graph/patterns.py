"""Fused patterns (no quantizer inside) and ignored patterns on the neutral graph."""

from __future__ import annotations

from nncompress.graph.ir import Graph, Node, TensorRef
from nncompress.graph.ops import (
    ARITHMETIC_KINDS,
    ATOMIC_ACTIVATION_KINDS,
    LINEAR_KINDS,
)
from nncompress.graph.ops import OpKind as K

_AGNOSTIC_PATH_KINDS = frozenset(
    {K.RESHAPE, K.TRANSPOSE, K.SQUEEZE, K.UNSQUEEZE, K.FLATTEN, K.GATHER, K.CONCAT, K.IDENTITY}
)


def _sole_consumer(graph: Graph, node: Node) -> Node | None:
    """The only consumer of ``node``'s single output, if it has exactly one."""
    consumers = graph.consumers(TensorRef(node.name, 0))
    if len(consumers) != 1 or len(node.output_shapes) > 1:
        return None
    return graph.node(consumers[0].node)


def _has_const_input(node: Node) -> bool:
    return len(node.activation_ports()) == 1 and bool(node.const_ports)


def _swish_tail(graph: Graph, node: Node) -> list[Node] | None:
    """[sigmoid, mul] when ``node``'s output x feeds exactly sigmoid(x) and x * sigmoid(x)."""
    tensor = TensorRef(node.name, 0)
    consumers = [graph.node(r.node) for r in graph.consumers(tensor)]
    if len(consumers) != 2:
        return None
    gates = [c for c in consumers if c.kind in (K.SIGMOID, K.HARD_SIGMOID)]
    muls = [c for c in consumers if c.kind is K.MUL]
    if len(gates) != 1 or len(muls) != 1:
        return None
    mul, gate = muls[0], gates[0]
    if set(mul.inputs) != {tensor, TensorRef(gate.name, 0)}:
        return None
    return [gate, mul]


def _activation_step(graph: Graph, node: Node) -> list[Node]:
    """The activation following ``node`` (atomic op or swish decomposition), or []."""
    swish = _swish_tail(graph, node)
    if swish:
        return swish
    nxt = _sole_consumer(graph, node)
    if nxt is not None and nxt.kind in ATOMIC_ACTIVATION_KINDS:
        return [nxt]
    return []


def _extend(graph: Graph, chain: list[Node], kinds, const_only: bool) -> bool:
    nxt = _sole_consumer(graph, chain[-1])
    if nxt is None or nxt.kind not in kinds or (const_only and not _has_const_input(nxt)):
        return False
    chain.append(nxt)
    return True


def _linear_chain(graph: Graph, head: Node, arithmetic: bool) -> list[Node]:
    """Linear op + [bias] + [batch norm] + [arithmetic] + [activation]."""
    chain = [head]
    _extend(graph, chain, {K.ADD}, const_only=True)
    _extend(graph, chain, {K.BATCH_NORM}, const_only=False)
    _extend(graph, chain, ARITHMETIC_KINDS, const_only=not arithmetic)
    chain.extend(_activation_step(graph, chain[-1]))
    return chain


def _scale_shift_chain(graph: Graph, head: Node) -> list[Node]:
    chain = [head]
    if _extend(graph, chain, {K.MUL}, const_only=True):
        _extend(graph, chain, {K.ADD, K.SUB}, const_only=True)
    return chain


def find_fused_groups(graph: Graph, linear_arithmetic: bool = True) -> dict[str, list[str]]:
    """{first node: names of the fused chain}. Tensors inside a chain take no quantizer.

    ``linear_arithmetic``: a Conv/MatMul may fuse with a following Add/Mul of another activation.
    """
    groups: dict[str, list[str]] = {}
    taken: set[str] = set()
    for node in graph:
        if node.name in taken:
            continue
        if node.kind in LINEAR_KINDS:
            chain = _linear_chain(graph, node, linear_arithmetic)
        elif node.kind is K.BATCH_NORM:
            chain = [node, *_activation_step(graph, node)]
        elif node.kind in (K.LAYER_NORM, K.GROUP_NORM):
            chain = _scale_shift_chain(graph, node)
        elif node.kind is K.MUL and _has_const_input(node):
            chain = [node]
            _extend(graph, chain, {K.ADD, K.SUB}, const_only=True)
        else:
            continue
        chain = [n for n in chain if n.name not in taken]
        if len(chain) > 1:
            groups[chain[0].name] = [n.name for n in chain]
            taken.update(n.name for n in chain)
    return groups


def internal_tensors(graph: Graph, groups: dict[str, list[str]]) -> set[TensorRef]:
    """Outputs of every member of a fused chain but the last."""
    result: set[TensorRef] = set()
    for members in groups.values():
        for name in members[:-1]:
            result.add(TensorRef(name, 0))
    return result


def attention_output_matmuls(graph: Graph) -> set[str]:
    """Activation MatMuls fed (through data movement ops) by a Softmax: the attention x V products."""
    found = set()
    for node in graph:
        if node.kind is not K.MATMUL:
            continue
        for producer in graph.predecessors(node.name):
            if _reaches_softmax(graph, producer, depth=4):
                found.add(node.name)
    return found


def _reaches_softmax(graph: Graph, node: Node, depth: int) -> bool:
    if node.kind is K.SOFTMAX:
        return True
    if depth == 0 or node.kind not in _AGNOSTIC_PATH_KINDS:
        return False
    return any(_reaches_softmax(graph, p, depth - 1) for p in graph.predecessors(node.name))
