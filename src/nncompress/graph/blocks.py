"""The repeated blocks of a model (transformer layers), found from its dataflow alone.

A *cut* is a float tensor that is, at its position in topological order, the only float tensor of the
*stream* still waiting for consumers: everything later depends on earlier computation only through it
(the residual stream between transformer layers; every layer output of a plain sequential network).
The stream is what depends on the model's weights (nodes downstream of a weighted node); tensors that
do not (attention masks, rotary tables, shape arithmetic) and integer tensors are *side inputs*: the
same for every block, computed once with the first block's input.

Segments between consecutive cuts that hold no Linear are merged into the next one; the rest are grouped
by the period of their weight-shape signatures (a Llama layer is an attention segment and an MLP
segment), so that a block is one transformer layer whatever the backend names its nodes. A model
without repetition gets one block per segment: one region per group of weighted layers.
"""

from __future__ import annotations

from dataclasses import dataclass

from nncompress.graph.ir import Graph, Node, TensorRef
from nncompress.graph.ops import OpKind


@dataclass(frozen=True)
class Block:
    """A region of the graph between two cuts.

    ``input``: the stream tensor entering it (None: the block starts at the model inputs); ``side``:
    other tensors its nodes read from outside; ``outputs``: the stream tensor leaving it (or, for the
    last block, what the model outputs read from it); ``nodes``: its nodes in topological order;
    ``linears``: its Linear nodes with a weight.
    """

    input: TensorRef | None
    side: tuple[TensorRef, ...]
    outputs: tuple[TensorRef, ...]
    nodes: tuple[str, ...]
    linears: tuple[str, ...]

    @property
    def inputs(self) -> tuple[TensorRef, ...]:
        return ((self.input,) if self.input is not None else ()) + self.side


def _is_seed(node: Node) -> bool:
    """A weighted node whose weight is a matrix or more (not a small constant vector such as ``inv_freq``)."""
    return node.weight is not None and sum(1 for d in node.weight.shape if d > 1) >= 2


def stream_nodes(graph: Graph) -> set[str]:
    """Names of the nodes that depend on a weighted node (the stream), and the float model inputs that
    weighted nodes read directly (an input a layer branches from)."""
    stream: set[str] = set()
    for node in graph.inputs():
        readers = [graph.node(ref.node) for ref in graph.consumers(TensorRef(node.name))]
        if graph.tensor_dtype(TensorRef(node.name)) == "float" and any(_is_seed(r) for r in readers):
            stream.add(node.name)
    for node in graph:
        if _is_seed(node) or any(t is not None and t.node in stream for t in node.inputs):
            stream.add(node.name)
    return stream


def _float(graph: Graph, tensor: TensorRef) -> bool:
    return graph.tensor_dtype(tensor) == "float"


def cut_positions(graph: Graph, stream: set[str]) -> list[tuple[int, TensorRef]]:
    """(position, tensor) of every cut, in order (positions index ``list(graph)``)."""
    order = list(graph)
    last_use: dict[TensorRef, int] = {}
    for i, node in enumerate(order):
        for tensor in node.inputs:
            if tensor is not None and tensor.node in stream and _float(graph, tensor):
                last_use[tensor] = max(last_use.get(tensor, -1), i)
    ending: dict[int, list[TensorRef]] = {}
    for tensor, end in last_use.items():
        ending.setdefault(end, []).append(tensor)
    produced_by: dict[str, list[TensorRef]] = {}
    for tensor in last_use:
        produced_by.setdefault(tensor.node, []).append(tensor)
    live: set[TensorRef] = set()
    cuts = []
    for i, node in enumerate(order):
        for tensor in ending.get(i, ()):
            live.discard(tensor)
        produced = produced_by.get(node.name, []) if node.name in stream else []
        live.update(t for t in produced if last_use[t] > i)
        if len(live) == 1 and produced and next(iter(live)) in produced:
            cuts.append((i, next(iter(live))))
    return cuts


def _segments(graph: Graph, stream: set[str]) -> list[tuple[TensorRef | None, list[str], TensorRef | None]]:
    """(input cut, stream nodes, output cut) between consecutive cuts; the first has no input cut."""
    order = [node.name for node in graph]
    cuts = cut_positions(graph, stream)
    bounds = [(-1, None)] + cuts + [(len(order) - 1, None)]
    segments = []
    for (start, entering), (end, leaving) in zip(bounds, bounds[1:]):
        names = [name for name in order[start + 1: end + 1] if name in stream]
        if names:
            segments.append((entering, names, leaving))
    return segments


def _linears(graph: Graph, names: list[str]) -> list[str]:
    return [n for n in names if graph.node(n).kind is OpKind.LINEAR and graph.node(n).weight is not None]


def _period(signatures: list[tuple]) -> int:
    """The smallest period that most of the signature sequence repeats with (1 when none does)."""
    count = len(signatures)
    for period in range(1, max(count // 2, 1) + 1):
        pairs = count - period
        same = sum(signatures[i] == signatures[i + period] for i in range(pairs))
        # a leading and a trailing group may differ (stem, head); everything else repeats
        if pairs > 0 and same >= max(pairs - 2 * period, 1) and same >= period:
            return period
    return 1


def _descends(graph: Graph, tensor: TensorRef, source: TensorRef, position: dict[str, int]) -> bool:
    """Whether ``tensor`` is computed from ``source`` (backward search, not before ``source``'s node)."""
    stack, seen = [tensor.node], set()
    while stack:
        name = stack.pop()
        if name == source.node:
            return True
        if name in seen or position[name] < position[source.node]:
            continue
        seen.add(name)
        stack.extend(t.node for t in graph.node(name).inputs if t is not None)
    return False


def _is_residual(graph: Graph, tensor: TensorRef, position: dict[str, int]) -> bool:
    """Whether ``tensor`` (through conversions) is the skip input of an Add whose other input is computed
    from it: a residual stream entering a layer (pre- or post-norm alike)."""
    stack = [tensor]
    while stack:
        current = stack.pop()
        for ref in graph.consumers(current):
            node = graph.node(ref.node)
            if node.kind in (OpKind.CONVERT, OpKind.IDENTITY):
                stack.append(TensorRef(ref.node))
            elif node.kind is OpKind.ADD:
                others = [t for p, t in enumerate(node.inputs) if t is not None and p != ref.port]
                if any(_descends(graph, other, tensor, position) for other in others):
                    return True
    return False


def _boundary(graph: Graph, gap: list, position: dict[str, int]) -> int:
    """How many of the Linear-free segments ``gap`` before a block go to the earlier block: the boundary
    is the first cut entering a residual Add, else the last cut; identity-only segments right after it
    (an eval-mode dropout closing the embeddings or a sub-layer) go to the earlier part too, so that a
    block starts where the layer does whether or not the backend's graph keeps the identity."""
    cuts = [gap[0][0]] + [leaving for _, _, leaving in gap]
    residual = [k for k, cut in enumerate(cuts) if cut is not None and _is_residual(graph, cut, position)]
    split = residual[0] if residual else len(gap)
    while split < len(gap) and all(graph.node(n).kind is OpKind.IDENTITY for n in gap[split][1]):
        split += 1
    return split


def _gated(graph: Graph, cut: TensorRef | None) -> bool:
    """Whether ``cut`` is a product of two activations, one of them a Linear's output (a gated MLP's
    ``act(gate) * up``): the Linear reading it is scaled with the one before by AWQ."""
    if cut is None or graph.node(cut.node).kind is not OpKind.MUL:
        return False
    sources = [graph.node(t.node) for t in graph.node(cut.node).inputs if t is not None]
    return len(sources) == 2 and any(s.kind is OpKind.LINEAR for s in sources)


def _merged(graph: Graph, segments: list) -> list[tuple[TensorRef | None, list[str], TensorRef | None]]:
    """One entry per segment holding a Linear, the Linear-free segments between them split at a layer
    boundary; the segments before the first (embeddings) and after the last are left out."""
    position = {node.name: i for i, node in enumerate(graph)}
    merged: list = []
    gap: list = []
    for segment in segments:
        if not _linears(graph, segment[1]):
            if segment[0] is not None:  # the first segment starts at the model inputs: not a block's part
                gap.append(segment)
            continue
        entering, names = segment[0], list(segment[1])
        if gap:
            split = _boundary(graph, gap, position)
            head, tail = gap[:split], gap[split:]
            if merged and head:
                first, body, _ = merged[-1]
                merged[-1] = (first, body + [n for _, part, _ in head for n in part], head[-1][2])
            if tail:
                entering, names = tail[0][0], [n for _, part, _ in tail for n in part] + names
        if merged and not gap and _gated(graph, entering):  # keep Linear -> Multiply -> Linear together (AWQ)
            first, body, _ = merged[-1]
            merged[-1] = (first, body + names, segment[2])
        else:
            merged.append((entering, names, segment[2]))
        gap = []
    return merged


def find_blocks(graph: Graph) -> list[Block]:
    """The blocks holding the graph's Linear layers, in order (see the module docstring)."""
    segments = _segments(graph, stream_nodes(graph))
    merged = _merged(graph, segments)
    if not merged:
        return []
    signatures = [tuple(graph.node(n).weight.shape for n in _linears(graph, names)) for _, names, _ in merged]
    period = _period(signatures)
    grouped, i = [], 0
    while i < len(merged):
        span = period if signatures[i: i + period] == signatures[:period] and i + period <= len(merged) else 1
        part = merged[i: i + span]
        grouped.append((part[0][0], [n for _, names, _ in part for n in names], part[-1][2]))
        i += span
    first = _signature(graph, grouped[0][1])
    last = max((k for k, group in enumerate(grouped) if _signature(graph, group[1]) == first), default=0)
    if last >= 1:
        _align_last(graph, grouped, last, segments)
    return [_block(graph, *group) for group in grouped]


def _signature(graph: Graph, names: list[str]) -> tuple:
    return tuple(graph.node(n).weight.shape for n in _linears(graph, names))


def _tail(graph: Graph, names: list[str]) -> int:
    """Stream nodes after the last Linear of ``names``."""
    return len(names) - 1 - max(i for i, n in enumerate(names) if n in set(_linears(graph, names)))


def _align_last(graph: Graph, grouped: list, last: int, segments: list) -> None:
    """End the last repeated block where the others end (as many nodes after its last Linear): a final
    norm then goes with the head after it, and a post-norm layer keeps its norm (``grouped`` in place)."""
    want = _tail(graph, grouped[last - 1][1])
    if _tail(graph, grouped[last][1]) == want:
        return
    flat = [n for _, names, _ in segments for n in names]
    cut_after = {names[-1]: leaving for _, names, leaving in segments if leaving is not None}
    entering, names, _ = grouped[last]
    end = flat.index(_linears(graph, names)[-1]) + want
    if end >= len(flat) or flat[end] not in cut_after:
        return
    boundary = cut_after[flat[end]]
    start = flat.index(names[0])
    grouped[last] = (entering, flat[start: end + 1], boundary)
    if last + 1 < len(grouped):
        _, following, leaving = grouped[last + 1]
        stop = flat.index(following[-1])
        grouped[last + 1] = (boundary, flat[end + 1: stop + 1], leaving)


def _block(graph: Graph, entering: TensorRef | None, names: list[str], leaving: TensorRef | None) -> Block:
    inside = set(names)
    side: dict[TensorRef, None] = {}
    for name in names:
        for tensor in graph.node(name).inputs:
            if tensor is not None and tensor.node not in inside and tensor != entering:
                side.setdefault(tensor)
    if leaving is not None:
        outputs = (leaving,)
    else:
        outputs = tuple(dict.fromkeys(
            t for node in graph.outputs() for t in node.inputs if t is not None and t.node in inside
        ))
    return Block(entering, tuple(side), outputs, tuple(names), tuple(_linears(graph, names)))
