"""Channel-dependency groups for filter pruning, on the neutral graph (no backend).

A *group* is a set of producers (conv / linear layers) whose output channels must share one keep-mask:
elementwise ops (add, mul, sub, div, max, min) join the tensors they combine, depthwise convs and
batch norms pass their input's channels through, concat lays the channels of its inputs side by side,
and flatten/reshape into a Linear turns each channel into a block of input features.

Every tensor carrying prunable channels gets a ``Layout``: its channel axis and the segments along it
(which group each run of channels comes from, ``None`` for channels no group owns). Walking the graph
once in topological order propagates layouts; every consumer (conv/linear input channels) and follower
(batch/group norm, depthwise conv) records the layout it reads, so its slice of each group (offsets
from a concat, blocks from a flatten) is known. A group is skipped, with a reason, when pruning it is
not allowed or not provably safe: an op whose channel semantics are unknown blocks every group reaching
it (never guess).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from nncompress.graph.ir import Graph, Node, TensorRef
from nncompress.graph.ops import ATOMIC_ACTIVATION_KINDS, WEIGHTED_KINDS
from nncompress.graph.ops import OpKind as K
from nncompress.log import logger

PRODUCER_KINDS = frozenset({K.CONV, K.CONV_TRANSPOSE, K.LINEAR})
JOIN_KINDS = frozenset({K.ADD, K.SUB, K.MUL, K.DIV, K.MAXIMUM, K.MINIMUM, K.POW})
# ops that keep every channel where it is (values may change, channels do not mix)
IDENTITY_KINDS = ATOMIC_ACTIVATION_KINDS - {K.PRELU} | {
    K.MAX_POOL, K.AVG_POOL, K.IDENTITY, K.CONVERT, K.INTERPOLATE, K.SQRT, K.RECIPROCAL, K.EXP, K.ERF,
}
RESHAPE_KINDS = frozenset({K.RESHAPE, K.FLATTEN, K.SQUEEZE, K.UNSQUEEZE})
REDUCE_KINDS = frozenset({K.REDUCE_MEAN, K.REDUCE_SUM, K.REDUCE_MAX})


@dataclass(frozen=True)
class Segment:
    """``channels`` consecutive channels taken from group ``group`` (None: channels no group owns)."""

    group: int | None
    channels: int


@dataclass(frozen=True)
class Layout:
    """Where prunable channels sit in a tensor: ``axis`` (negative), segments in order, and ``block``:
    how many consecutive features each channel occupies (>1 after a flatten of spatial dims)."""

    axis: int
    segments: tuple[Segment, ...]
    block: int = 1

    @property
    def channels(self) -> int:
        return sum(s.channels for s in self.segments)


@dataclass(frozen=True)
class ConsumerSlice:
    """Node ``node`` reads a group's channels at feature ``offset`` of its input, ``block`` features each."""

    node: str
    offset: int
    block: int = 1


@dataclass
class ChannelGroup:
    """Producers sharing one channel mask, who reads those channels, and why it is skipped (if it is)."""

    id: int
    channels: int
    producers: list[str]
    consumers: list[ConsumerSlice] = field(default_factory=list)  # conv / linear input channels
    followers: list[str] = field(default_factory=list)  # batch / group norms and depthwise convs
    reasons: list[str] = field(default_factory=list)

    @property
    def prunable(self) -> bool:
        return not self.reasons

    @property
    def reason(self) -> str | None:
        return "; ".join(self.reasons) if self.reasons else None


@dataclass(frozen=True)
class PruningRules:
    """Feasibility switches of §6.2 (NNCF's ``prune_first_conv``, ``prune_downsample_convs``)."""

    prune_first_conv: bool = False
    prune_downsample_convs: bool = False
    ignored: frozenset[str] = frozenset()  # node names in the ignored scope


@dataclass(frozen=True)
class NodeMasks:
    """Keep-masks of one node: ``out`` over its output channels, ``inp`` over its input features."""

    out: np.ndarray | None = None
    inp: np.ndarray | None = None


class ChannelGroups:
    """The groups of a graph plus the layout every consumer and follower reads."""

    def __init__(self, graph: Graph, groups: list[ChannelGroup], reads: dict[str, Layout], owner: dict[int, int]):
        self.graph = graph
        self.groups = groups
        self.reads = reads  # node -> layout of the channels it reads (raw group ids)
        self._owner = owner  # raw group id -> index in ``groups``

    def __iter__(self):
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def prunable(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def group_of(self, producer: str) -> ChannelGroup | None:
        return next((g for g in self.groups if producer in g.producers), None)

    def expand(self, layout: Layout, keep: dict[int, np.ndarray]) -> np.ndarray:
        """The keep-mask over a tensor's features for ``layout`` (groups missing from ``keep``: all kept)."""
        parts = []
        for seg in layout.segments:
            group = None if seg.group is None else self.groups[self._owner[seg.group]]
            mask = keep.get(group.id) if group is not None and group.prunable else None
            parts.append(np.ones(seg.channels, bool) if mask is None else np.asarray(mask, bool))
        return np.repeat(np.concatenate(parts), layout.block)

    def node_masks(self, keep: dict[int, np.ndarray]) -> dict[str, NodeMasks]:
        """Per node, the output-channel and input-feature masks ``keep`` (group id -> bool mask) implies."""
        result: dict[str, NodeMasks] = {}
        for group in self.groups:
            mask = keep.get(group.id) if group.prunable else None
            if mask is not None:
                for name in group.producers:
                    result[name] = NodeMasks(out=np.asarray(mask, bool))
        for name, layout in self.reads.items():
            mask = self.expand(layout, keep)
            if mask.all():
                continue
            node = self.graph.node(name)
            if node.kind in PRODUCER_KINDS:
                result[name] = NodeMasks(result.get(name, NodeMasks()).out, mask)
            else:  # followers: channels pass through
                result[name] = NodeMasks(mask, mask)
        return result


class _Builder:
    """One topological walk of the graph propagating layouts (see the module docstring)."""

    def __init__(self, graph: Graph, rules: PruningRules):
        self.graph = graph
        self.rules = rules
        self.parent: list[int] = []
        self.sizes: list[int] = []
        self.producers: list[list[str]] = []
        self.reasons: list[list[str]] = []
        self.layouts: dict[TensorRef, Layout] = {}
        self.reads: dict[str, Layout] = {}
        self.after_weighted: set[str] = set()

    # --- union-find over raw group ids ---
    def new_group(self, producer: str, channels: int) -> int:
        self.parent.append(len(self.parent))
        self.sizes.append(channels)
        self.producers.append([producer])
        self.reasons.append([])
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int, where: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.sizes[ra] != self.sizes[rb]:
            counts = f"{self.sizes[ra]} and {self.sizes[rb]}"
            self.block_groups([ra, rb], f"unequal channel counts {counts} joined at {where}")
        self.parent[rb] = ra
        self.producers[ra] += self.producers[rb]
        self.reasons[ra] += [r for r in self.reasons[rb] if r not in self.reasons[ra]]

    def block_groups(self, groups: Iterable[int | None], reason: str) -> None:
        for g in groups:
            if g is not None and reason not in self.reasons[self.find(g)]:
                self.reasons[self.find(g)].append(reason)

    def block(self, layouts: Iterable[Layout | None], reason: str) -> None:
        for layout in layouts:
            if layout is not None:
                self.block_groups((s.group for s in layout.segments), reason)

    # --- the walk ---
    def run(self) -> None:
        for node in self.graph:
            preds = self.graph.predecessors(node.name)
            if any(p.name in self.after_weighted or p.kind in WEIGHTED_KINDS for p in preds):
                self.after_weighted.add(node.name)
            self.visit(node)

    def inputs(self, node: Node) -> list[Layout | None]:
        return [self.layouts.get(t) if t is not None else None for t in node.inputs]

    def shape(self, tensor: TensorRef | None) -> tuple | None:
        return None if tensor is None else self.graph.tensor_shape(tensor)

    def set_out(self, node: Node, layout: Layout | None) -> None:
        if layout is not None:
            self.layouts[TensorRef(node.name, 0)] = layout

    def visit(self, node: Node) -> None:
        layouts = self.inputs(node)
        if node.kind is K.INPUT or not any(layouts) and node.kind not in PRODUCER_KINDS:
            return  # nothing prunable flows here
        handler = _HANDLERS.get(node.kind, _identity if node.kind in IDENTITY_KINDS else _unknown)
        handler(self, node, layouts)


def _describe(node: Node) -> str:
    return f"'{node.name}' ({node.kind.value})"


def _unknown(b: _Builder, node: Node, layouts: list[Layout | None]) -> None:
    b.block(layouts, f"its channels reach {_describe(node)}, an op whose channel semantics are unknown")


def _output(b: _Builder, node: Node, layouts: list[Layout | None]) -> None:
    b.block(layouts, f"its channels reach the model output '{node.name}' without a layer that absorbs them")


def _identity(b: _Builder, node: Node, layouts: list[Layout | None]) -> None:
    active = [lay for lay in layouts if lay is not None]
    consts = [math.prod(shape) for shape in node.const_ports.values()]
    if len(node.activation_ports()) != 1 or any(n != 1 for n in consts):
        return _unknown(b, node, layouts)
    b.set_out(node, active[0])


def _channel_axis_ok(b: _Builder, node: Node, layout: Layout, tensor: TensorRef, axis: int) -> bool:
    shape = b.shape(tensor)
    expected = None if shape is None else (axis - len(shape) if axis >= 0 else axis)
    if layout.axis != expected:
        b.block([layout], f"{_describe(node)} reads the channels on another axis than its channel axis")
        return False
    return True


def _producer(b: _Builder, node: Node, layouts: list[Layout | None]) -> None:
    weight = node.weight
    groups = int(node.attrs.get("groups", weight.groups if weight else 1) or 1)
    layout = layouts[0] if layouts else None
    conv = node.kind is not K.LINEAR
    if layout is not None and _channel_axis_ok(b, node, layout, node.inputs[0], 1 if conv else -1):
        if groups > 1:
            b.block([layout], f"consumed by grouped convolution {_describe(node)} (groups={groups})")
        elif conv and layout.block != 1:
            b.block([layout], f"{_describe(node)} reads flattened channels")
        else:
            b.reads[node.name] = layout
    if weight is None:
        return _unknown(b, node, layouts)
    out_shape = node.output_shapes[0] if node.output_shapes else None
    gid = b.new_group(node.name, weight.shape[weight.out_axis] * (groups if node.kind is K.CONV_TRANSPOSE else 1))
    _producer_rules(b, node, gid, groups)
    if out_shape is None:
        b.block_groups([gid], f"the output shape of {_describe(node)} is unknown")
        return
    axis = 1 - len(out_shape) if conv else -1
    b.set_out(node, Layout(axis, (Segment(gid, b.sizes[gid]),)))


def _producer_rules(b: _Builder, node: Node, gid: int, groups: int) -> None:
    rules = b.rules
    if node.name in rules.ignored:
        b.block_groups([gid], f"{_describe(node)} is in the ignored scope")
    if groups > 1:
        b.block_groups([gid], f"{_describe(node)} is a grouped convolution (groups={groups}) that is not depthwise")
    if node.kind is K.LINEAR and len(node.weight.shape) != 2:
        b.block_groups([gid], f"{_describe(node)} is a batched linear")
    if node.kind is K.CONV and not rules.prune_downsample_convs and _strided(node):
        b.block_groups([gid], f"{_describe(node)} is a downsampling conv (strides {node.attrs.get('strides')}); "
                       "set prune_downsample_convs to prune it")
    if node.kind is not K.LINEAR and node.name not in b.after_weighted and not rules.prune_first_conv:
        b.block_groups([gid], f"{_describe(node)} is the first convolution; set prune_first_conv to prune it")


def _strided(node: Node) -> bool:
    """Stride > 1 on some axis (unknown strides count as downsampling: never guess)."""
    strides = node.attrs.get("strides")
    return strides is None or any(int(s) > 1 for s in strides)


def _follower(b: _Builder, node: Node, layouts: list[Layout | None]) -> None:
    """Batch norm, group norm, depthwise conv: per-channel parameters that follow the input mask."""
    layout = layouts[0]
    if layout is None or any(lay is not None for lay in layouts[1:]):
        return _unknown(b, node, layouts)
    if not _channel_axis_ok(b, node, layout, node.inputs[0], 1):
        return
    if layout.block != 1:
        return b.block([layout], f"{_describe(node)} reads flattened channels")
    if node.kind is K.GROUP_NORM and node.attrs.get("num_groups") != layout.channels:
        return b.block([layout], f"{_describe(node)} normalises groups of channels together "
                       f"(num_groups={node.attrs.get('num_groups')}, channels={layout.channels})")
    if node.kind is K.DEPTHWISE_CONV and not b.rules.prune_downsample_convs and _strided(node):
        return b.block([layout], f"depthwise conv {_describe(node)} downsamples (strides {node.attrs.get('strides')}); "
                       "set prune_downsample_convs to prune it")
    if node.name in b.rules.ignored:
        return b.block([layout], f"{_describe(node)} is in the ignored scope")
    b.reads[node.name] = layout
    b.set_out(node, layout)


def _join(b: _Builder, node: Node, layouts: list[Layout | None]) -> None:
    """Inputs combined channel by channel: their groups share one mask."""
    ports = node.activation_ports()
    base = next(lay for lay in layouts if lay is not None)
    for port in ports:
        other, shape = layouts[port], b.shape(node.inputs[port])
        if other is None:
            if shape is not None and (len(shape) < -base.axis or shape[base.axis] == 1):
                continue  # broadcast along the channel axis
            b.block([base], f"joined at {_describe(node)} with channels that no prunable layer produces")
        elif other.axis != base.axis or other.block != base.block or (
            [s.channels for s in other.segments] != [s.channels for s in base.segments]
        ):
            counts = f"{[s.channels for s in base.segments]} vs {[s.channels for s in other.segments]}"
            b.block([base, other], f"unequal channel counts joined at {_describe(node)} ({counts})")
        else:
            for mine, theirs in zip(base.segments, other.segments, strict=True):
                if (mine.group is None) != (theirs.group is None):
                    b.block_groups([mine.group, theirs.group],
                                   f"joined at {_describe(node)} with channels that no prunable layer produces")
                elif mine.group is not None:
                    b.union(mine.group, theirs.group, _describe(node))
    if any(math.prod(shape) != 1 for shape in node.const_ports.values()):
        return b.block(layouts, f"{_describe(node)} applies a per-channel constant")
    b.set_out(node, base)


def _concat(b: _Builder, node: Node, layouts: list[Layout | None]) -> None:
    out_shape = node.output_shapes[0] if node.output_shapes else None
    axis = node.attrs.get("axis")
    if axis is None or out_shape is None or node.const_ports:
        return _unknown(b, node, layouts)
    axis = axis - len(out_shape) if axis >= 0 else axis
    active = [lay for lay in layouts if lay is not None]
    if any(lay.axis != axis for lay in active):
        return _join(b, node, layouts)  # concatenated along another axis: channels line up
    if any(lay.block != 1 for lay in active):
        return b.block(active, f"{_describe(node)} concatenates flattened channels")
    segments: list[Segment] = []
    for port, layout in enumerate(layouts):
        if layout is not None:
            segments += layout.segments
        else:
            segments.append(Segment(None, b.shape(node.inputs[port])[axis]))
    b.set_out(node, Layout(axis, tuple(segments)))


def _reshape(b: _Builder, node: Node, layouts: list[Layout | None]) -> None:
    """Flatten/reshape that keeps each channel's features contiguous (e.g. [N, C, H, W] -> [N, C*H*W])."""
    layout, src, dst = layouts[0], b.shape(node.inputs[0]), node.output_shapes[0] if node.output_shapes else None
    if layout is None or src is None or dst is None:
        return _unknown(b, node, layouts)
    pos = len(src) + layout.axis
    pre, width, post = math.prod(src[:pos]), src[pos], math.prod(src[pos + 1:])
    for axis in range(len(dst)):
        if math.prod(dst[:axis]) != pre:
            continue
        if dst[axis] == width and math.prod(dst[axis + 1:]) == post:
            return b.set_out(node, Layout(axis - len(dst), layout.segments, layout.block))
        if dst[axis] == width * post and math.prod(dst[axis + 1:]) == 1:
            return b.set_out(node, Layout(axis - len(dst), layout.segments, layout.block * post))
    b.block([layout], f"{_describe(node)} reshapes {src} to {dst}, mixing the channel axis")


def _reduce(b: _Builder, node: Node, layouts: list[Layout | None]) -> None:
    layout, src = layouts[0], b.shape(node.inputs[0])
    axes = node.attrs.get("axes")
    if axes is None or src is None or len(node.activation_ports()) != 1:
        return _unknown(b, node, layouts)
    axes = sorted({a % len(src) for a in axes})
    pos = len(src) + layout.axis
    if pos in axes:
        return b.block([layout], f"{_describe(node)} reduces over the channel axis")
    if node.attrs.get("keepdims", True):
        return b.set_out(node, layout)
    new_pos = pos - sum(1 for a in axes if a < pos)
    b.set_out(node, Layout(new_pos - (len(src) - len(axes)), layout.segments, layout.block))


_HANDLERS = {
    K.OUTPUT: _output,
    **{k: _producer for k in PRODUCER_KINDS},
    K.DEPTHWISE_CONV: _follower,
    K.BATCH_NORM: _follower,
    K.GROUP_NORM: _follower,
    **{k: _join for k in JOIN_KINDS},
    K.CONCAT: _concat,
    **{k: _reshape for k in RESHAPE_KINDS},
    **{k: _reduce for k in REDUCE_KINDS},
}


def _merge_shared(b: _Builder, shared: Iterable[Iterable[str]]) -> None:
    """Nodes running one module (shared weights): one output mask, and identical input masks."""
    for names in shared:
        names = [n for n in names if n in b.graph.nodes]
        groups = [_own_group(b, n) for n in names]
        groups = [g for g in groups if g is not None]
        for g in groups[1:]:
            b.union(groups[0], g, f"shared weights of {names}")
        read = [b.reads[n] for n in names if n in b.reads]
        if len(read) != len(names) and read:
            b.block(read, f"the shared layer {names} reads pruned channels in only some of its calls")
            continue
        for other in read[1:]:
            if [s.channels for s in other.segments] != [s.channels for s in read[0].segments] or (
                other.block != read[0].block
            ):
                b.block([read[0], other], f"the shared layer {names} reads differently laid out channels")
                continue
            for mine, theirs in zip(read[0].segments, other.segments, strict=True):
                if (mine.group is None) != (theirs.group is None):
                    b.block_groups([mine.group, theirs.group], f"the shared layer {names} reads unprunable channels")
                elif mine.group is not None:
                    b.union(mine.group, theirs.group, f"shared layer {names}")


def _own_group(b: _Builder, name: str) -> int | None:
    return next((g for g, producers in enumerate(b.producers) if b.parent[g] == g and name in producers), None)


def _collect(b: _Builder) -> ChannelGroups:
    roots = sorted({b.find(g) for g in range(len(b.parent))})
    owner_index = {root: i for i, root in enumerate(roots)}
    owner = {g: owner_index[b.find(g)] for g in range(len(b.parent))}
    order = {name: i for i, name in enumerate(b.graph.nodes)}
    groups = [ChannelGroup(i, b.sizes[root], sorted(b.producers[root], key=order.__getitem__),
                           reasons=list(b.reasons[root])) for i, root in enumerate(roots)]
    for name, layout in b.reads.items():
        offset = 0
        for seg in layout.segments:
            if seg.group is not None:
                group = groups[owner[seg.group]]
                if b.graph.node(name).kind in PRODUCER_KINDS:
                    group.consumers.append(ConsumerSlice(name, offset, layout.block))
                elif name not in group.followers:
                    group.followers.append(name)
            offset += seg.channels * layout.block
    return ChannelGroups(b.graph, groups, dict(b.reads), owner)


def channel_groups(
    graph: Graph,
    rules: PruningRules | None = None,
    shared: Iterable[Iterable[str]] = (),
    log: bool = True,
) -> ChannelGroups:
    """The channel-dependency groups of ``graph`` (see the module docstring).

    ``shared``: sets of node names that run one layer (weights shared by several calls). With ``log``,
    every group that cannot be pruned is logged with its reason, one line each.
    """
    if not graph.has_dataflow:
        from nncompress.errors import GraphCaptureError

        raise GraphCaptureError("channel groups need a graph with dataflow: capture the model on an example input")
    builder = _Builder(graph, rules or PruningRules())
    builder.run()
    _merge_shared(builder, shared)
    result = _collect(builder)
    if log:
        log_skipped(result)
    return result


def log_skipped(groups: ChannelGroups) -> None:
    """One INFO line per group that cannot be pruned, with its producers and the reason."""
    for group in groups:
        if not group.prunable:
            producers = ", ".join(group.producers)
            logger.info(f"filter pruning: group {group.id} ({producers}) is not pruned: {group.reason}")
