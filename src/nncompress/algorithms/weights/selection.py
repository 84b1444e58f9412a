"""Which weights are compressed and how (reference section 2.4), with the group-size fallback.

- Candidates: Linear (MatMul/Gemm with a constant weight), Embedding and convolution weights, minus
  the ignored scope, in topological order.
- INT8 modes: every candidate gets the primary per-channel configuration.
- 4-bit modes: every candidate first gets the backup configuration (INT8_ASYM per channel by default);
  the *ratio-defining* weights get the primary one: Linear weights except the last Linear, plus the
  last Linear and the embeddings when ``all_layers``. Convolutions always keep the backup precision.
- A weight read by several operations (a tied embedding / lm_head: one stored constant, named alike in
  ``node.attrs["constant_names"]``) is one layer, the first reader in topological order; the other readers
  are its ``shares`` and get the same compressed weight. Its size counts once. It is compressed without
  activation statistics, since AWQ's scaling of one reader's input would be wrong for the other readers.
  The last Linear is left out of the ratio-defining set even when it shares an earlier weight (then no
  other Linear is left out).
- A group size that does not divide a layer's input channels: ERROR raises (naming the group sizes
  that would work), IGNORE keeps the layer in float, ADJUST (default) takes the largest power of two
  dividing the channels that is at most the requested size, or the backup precision below
  ``min_adjusted_group_size``; each adjusted layer is reported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from nncompress.algorithms.weights.config import LayerConfig, Mode, WeightCompressionOptions
from nncompress.errors import InvalidGroupSizeError, ValidationError
from nncompress.graph.ir import Graph, Node, TensorRef, WeightInfo
from nncompress.graph.ops import CONV_LIKE_KINDS, OpKind
from nncompress.numerics.lowbit import FIXED_GROUP_SIZES, canonical_mode
from nncompress.scopes import match_ignored_scope
from nncompress.weight_parameters import GroupSizeFallbackMode

CANDIDATE_KINDS = frozenset({OpKind.LINEAR, OpKind.EMBEDDING, *CONV_LIKE_KINDS})


@dataclass(frozen=True)
class WeightLayer:
    """One weight to compress: where it is, its size, its role and its configuration (immutable: a step
    that changes a configuration returns a new record, ``dataclasses.replace``)."""

    node: str
    kind: OpKind
    weight: WeightInfo
    config: LayerConfig
    ratio_defining: bool = False
    activation: TensorRef | None = None  # the input whose statistics data-aware methods use
    notes: tuple[str, ...] = ()
    shares: tuple[tuple[str, int], ...] = ()  # (node, port) of other operations reading this same weight

    @property
    def size(self) -> int:
        return int(np.prod(self.weight.shape, dtype=np.int64))

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[self.weight.in_axis])

    @property
    def channels_per_group(self) -> int:
        """Input channels per quantization group under the layer's configuration."""
        return self.config.channels_per_group(self.in_channels)

    def to_oi(self, weight: np.ndarray) -> np.ndarray:
        """A 2-D weight in this layer's layout as ``[out, in]`` (a view)."""
        return weight.T if self.weight.in_axis == 0 else weight

    def from_oi(self, w_oi: np.ndarray) -> np.ndarray:
        """An ``[out, in]`` matrix back in this layer's layout (a view); ``to_oi``'s inverse."""
        return w_oi.T if self.weight.in_axis == 0 else w_oi


@dataclass
class Selection:
    layers: list[WeightLayer]
    skipped: dict[str, str]  # weighted node -> why it stays float
    notes: list[str] = field(default_factory=list)


def _activation_input(node: Node) -> TensorRef | None:
    """The activation a Linear multiplies along its last axis (None for other layouts).

    That is its one non-constant input when it comes before the weight (``x @ W``, ``linear(x, W)``,
    ``addmm(b, x, W)``); with the weight first (``W @ x``) the reduced axis is not the last one.
    """
    if node.kind is not OpKind.LINEAR or node.weight is None or len(node.weight.shape) != 2:
        return None
    ports = node.activation_ports()
    if len(ports) != 1 or ports[0] > node.weight.port:
        return None
    return node.inputs[ports[0]]


def _candidates(graph: Graph, options: WeightCompressionOptions) -> tuple[list[Node], dict[str, str]]:
    ignored = match_ignored_scope(options.ignored_scope, graph)
    nodes, skipped = [], {}
    for node in graph:
        if node.kind not in CANDIDATE_KINDS or node.weight is None:
            continue
        if node.name in ignored:
            skipped[node.name] = f"ignored scope: {ignored[node.name]}"
        elif len(node.weight.shape) < 2 or min(node.weight.shape) < 1:
            skipped[node.name] = f"weight of shape {list(node.weight.shape)} has no channels to compress"
        else:
            nodes.append(node)
    return nodes, skipped


def select_layers(graph: Graph, options: WeightCompressionOptions) -> Selection:
    """The weights to compress with their configurations (before mixed precision)."""
    nodes, skipped = _candidates(graph, options)
    if not nodes:
        kinds = sorted({n.kind.value for n in graph if n.kind in CANDIDATE_KINDS})
        why = f"; weighted operations found: {', '.join(sorted(skipped))}" if skipped else ""
        raise ValidationError(
            "the model has no weights to compress: compress_weights compresses constant weights of "
            f"MatMul/Gemm (Linear), Gather (Embedding) and convolution operations{why}"
            + (f" (kinds {kinds})" if kinds else "")
        )
    linears = [n for n in nodes if n.kind is OpKind.LINEAR]
    last = linears[-1].name if linears else None
    readers = _shared_weights(nodes)
    layers = [_layer(node, options, last, readers[node.name]) for node in nodes if node.name in readers]
    selection = Selection(layers, skipped)
    for layer in layers:
        if layer.shares:
            others = ", ".join(node for node, _ in layer.shares)
            selection.notes.append(f"{others} read(s) the weight of {layer.node} (one stored tensor): it is "
                                   "compressed and stored once, without activation statistics")
    if not options.is_8bit and options.group_size != -1:
        selection.layers = _fallback(selection, options)
    if not options.is_8bit and not any(layer.ratio_defining for layer in selection.layers):
        selection.notes.append(
            f"no weight can take {options.mode.value}: only the last Linear, embeddings or convolutions were "
            "found and they keep the backup precision; pass all_layers=True to compress them too"
        )
    return selection


def _shared_weights(nodes: list[Node]) -> dict[str, tuple[tuple[str, int], ...]]:
    """First reader of each stored weight -> (node, port) of its other readers (a weight is known by
    ``attrs["constant_names"]``; nodes without a name read a weight of their own)."""
    first: dict[str, Node] = {}
    readers: dict[str, tuple[tuple[str, int], ...]] = {}
    for node in nodes:
        name = node.attrs.get("constant_names", {}).get(node.weight.port)
        owner = first.setdefault(name, node) if name is not None else node
        if owner is not node and tuple(owner.weight.shape) == tuple(node.weight.shape):
            readers[owner.name] += ((node.name, node.weight.port),)
        else:  # its own weight (the same name with another shape is not the same tensor to compress)
            readers[node.name] = ()
    return readers


def _layer(node: Node, options: WeightCompressionOptions, last: str | None,
           shares: tuple[tuple[str, int], ...] = ()) -> WeightLayer:
    """The layer of ``node`` with its role and configuration before the group-size fallback."""
    ratio_defining = False
    config = options.backup_for(int(node.weight.shape[node.weight.in_axis]))
    if options.is_8bit:
        config = LayerConfig(canonical_mode(options.mode), -1)
    elif node.kind is OpKind.LINEAR:
        ratio_defining = options.all_layers or node.name != last
    elif node.kind is OpKind.EMBEDDING:
        ratio_defining = options.all_layers
    if ratio_defining:
        config = options.primary
    activation = None if shares else _activation_input(node)
    return WeightLayer(node.name, node.kind, node.weight, config, ratio_defining, activation, shares=shares)


def valid_group_sizes(channels: int) -> list[int]:
    """Power-of-two group sizes (>= 16) that divide ``channels``, largest first."""
    sizes = [2**k for k in range(4, int(np.log2(max(channels, 1))) + 1) if channels % 2**k == 0]
    return sorted(sizes, reverse=True)


def _fallback(selection: Selection, options: WeightCompressionOptions) -> list[WeightLayer]:
    """The layers with the group-size fallback mode applied to ratio-defining layers the group size does
    not divide (new records for those)."""
    advanced = options.advanced
    mode = advanced.group_size_fallback_mode
    size = options.group_size
    bad = [layer for layer in selection.layers if layer.ratio_defining and layer.in_channels % size]
    if not bad:
        return selection.layers
    fixed = canonical_mode(options.mode) in FIXED_GROUP_SIZES
    if mode is GroupSizeFallbackMode.ERROR or fixed:
        raise _group_error(bad, size, mode is GroupSizeFallbackMode.ERROR, options.mode)
    adjusted: dict[str, list[str]] = {}
    replaced: dict[str, WeightLayer] = {}
    for layer in bad:
        channels = layer.in_channels
        if mode is GroupSizeFallbackMode.IGNORE:
            config, ratio_defining, key = LayerConfig(None), False, "float (group_size_fallback_mode='ignore')"
            note = f"group size {size} does not divide {channels} input channels: kept float"
        else:
            new = channels & -channels  # the largest power of two dividing the channels ...
            while new > size:  # ... that is at most the requested group size
                new //= 2
            if new >= advanced.min_adjusted_group_size:
                config, ratio_defining, key = LayerConfig(layer.config.mode, new), True, f"group size {new}"
            else:
                config, ratio_defining = options.backup_for(channels), False
                key = f"backup precision ({config.describe()})"
            note = f"group size {size} does not divide {channels} input channels: {key}"
        replaced[layer.node] = dataclasses.replace(
            layer, config=config, ratio_defining=ratio_defining, notes=(*layer.notes, note)
        )
        adjusted.setdefault(key, []).append(layer.node)
    for key, names in adjusted.items():
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        selection.notes.append(
            f"group size {size} does not divide the input channels of {len(names)} layer(s) ({shown}); "
            f"they use {key}. Set AdvancedCompressionParameters(group_size_fallback_mode='error') to refuse"
        )
    return [replaced.get(layer.node, layer) for layer in selection.layers]


def _group_error(bad: list[WeightLayer], size: int, explicit: bool, mode: Mode) -> InvalidGroupSizeError:
    common = set(valid_group_sizes(bad[0].in_channels))
    for layer in bad[1:]:
        common &= set(valid_group_sizes(layer.in_channels))
    names = ", ".join(f"{layer.node} ({layer.in_channels})" for layer in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    choices = ", ".join(str(s) for s in sorted(common, reverse=True)) or "none that is a power of two >= 16"
    hint = (
        "or group_size_fallback_mode='adjust' (per-layer largest fitting power of two) or 'ignore' (keep them float)"
        if explicit else f"({canonical_mode(mode).value} groups are fixed at {size})"
    )
    return InvalidGroupSizeError(
        f"group_size={size} does not divide the input channels of {names}{more}. Group sizes that divide "
        f"all of them: {choices}; or -1 (per-channel); {hint}"
    )
