"""Activation-aware weight scaling (AWQ, modified as in the reference, section 2.7).

Patterns (the target is a low-bit Linear reading the pattern's output on input 0):
- ``Linear -> Multiply -> Linear`` (e.g. up_proj * act(gate) -> down_proj): ``1 / s`` is folded into the
  output channels of the first Linear (its only consumer must be the Multiply);
- ``Activation -> Multiply -> Linear`` and ``Activation -> Linear``: a ``Multiply(1 / s)`` is inserted
  on the target's input.

Data-aware search: the ``max(int(hidden * percent_to_apply), 1)`` input channels with the largest
``max |token mean|`` select the quantization groups to correct; per group, ``s = clip(stat, q10, 100)^a``
for ``a`` on a grid, minimising ``mean |Q(W s) (X / s) - W X|``. Without statistics (or with
``prefer_data_aware_scaling=False``) the statistic is ``1 / mean |W column|`` and X the identity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from nncompress.algorithms.weights.activations import ActivationStats
from nncompress.algorithms.weights.selection import WeightLayer
from nncompress.errors import ValidationError
from nncompress.graph.edits import InputRef, InsertMultiply
from nncompress.graph.ir import Graph
from nncompress.graph.ops import ATOMIC_ACTIVATION_KINDS, OpKind
from nncompress.numerics.lowbit import fake_quantize
from nncompress.parallel import map_rows
from nncompress.progress import progress_iter
from nncompress.weight_parameters import AdvancedAWQParameters


@dataclass(frozen=True)
class AWQPlan:
    """What AWQ decided: per-node scales to multiply into weights, the multiplies to insert, and the
    statistics of the scaled inputs (``x / s``) of the targets, as new objects beside the given ones."""

    input_scales: Mapping[str, np.ndarray] = field(default_factory=dict)  # target -> s (input channels)
    output_scales: Mapping[str, np.ndarray] = field(default_factory=dict)  # merge Linear -> 1 / s (outputs)
    multiplies: tuple[InsertMultiply, ...] = ()
    stats: Mapping[str, ActivationStats] = field(default_factory=dict)  # target -> statistics of x / s
    summary: str = ""
    patterns: Mapping[str, int] = field(default_factory=dict)  # pattern name -> targets scaled

    def scales_of(self, node: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(input-channel, output-channel) scales of ``node``; None where AWQ does not scale it."""
        return self.input_scales.get(node), self.output_scales.get(node)

    def statistics(self, collected: Mapping[str, ActivationStats]) -> dict[str, ActivationStats]:
        """Statistics per node as the compressed layers see their inputs: ``collected``, with AWQ's targets
        replaced by the statistics of their scaled inputs (``collected`` itself is left as it is)."""
        return {**collected, **self.stats}


def scale_channels(weight: np.ndarray, layer: WeightLayer, input_scale, output_scale) -> np.ndarray:
    """``weight`` with AWQ scales multiplied into its input and/or output channels (None: not scaled)."""
    for scales, axis in ((input_scale, layer.weight.in_axis), (output_scale, layer.weight.out_axis)):
        if scales is not None:
            shape = [1] * weight.ndim
            shape[axis] = -1
            weight = weight * scales.reshape(shape).astype(np.float32)
    return weight


def _match(graph: Graph, target: WeightLayer, by_node: dict[str, WeightLayer]) -> tuple[str, WeightLayer | None] | None:
    """(pattern name, Linear to fold ``1 / s`` into or None) for ``target``; None when no pattern fits."""
    producer = graph.node(target.activation.node)
    if producer.kind in ATOMIC_ACTIVATION_KINDS:
        return "Activation->Linear", None
    if producer.kind is not OpKind.MUL or len(producer.activation_ports()) != 2:
        return None
    if len(graph.consumers(target.activation)) != 1:
        return None
    sources = [graph.node(t.node) for t in producer.inputs if t is not None]
    for source in sources:
        merge = by_node.get(source.name)
        if (
            merge is not None and not merge.shares and source.kind is OpKind.LINEAR and len(merge.weight.shape) == 2
            and merge.weight.shape[merge.weight.out_axis] == target.in_channels
            and len(graph.consumers(producer.inputs[sources.index(source)])) == 1
        ):
            return "Linear->Multiply->Linear", merge
    if any(s.kind in ATOMIC_ACTIVATION_KINDS for s in sources):
        return "Activation->Multiply->Linear", None
    return None


def search_scale(
    w_oi: np.ndarray, x: np.ndarray, stat: np.ndarray, layer: WeightLayer, params: AdvancedAWQParameters
) -> np.ndarray:
    """The per-input-channel scale ``s`` for weight ``[out, in]`` and inputs ``x`` ``[in, n]``."""
    channels = w_oi.shape[1]
    group = layer.config.channels_per_group(channels)
    top = np.argsort(-stat)[: max(int(channels * params.percent_to_apply), 1)]
    scale = np.ones(channels, np.float32)
    alphas = np.linspace(params.alpha_min, params.alpha_max, params.steps, endpoint=False, dtype=np.float32)
    for g in np.unique(top // group):
        cols = slice(g * group, (g + 1) * group)
        w, xg, s = w_oi[:, cols], x[cols], stat[cols]
        s = np.clip(s, np.quantile(s, 0.1), 100.0).astype(np.float32)
        s = np.maximum(s, np.float32(1e-8))
        reference = w @ xg
        candidates = s[None, :] ** alphas[:, None]  # [steps, group]
        losses = _losses(w, xg, reference, candidates, layer.config.mode)
        best = int(np.argmin(losses))
        if losses[best] < np.abs(reference).max():
            scale[cols] = candidates[best]
    return scale


SEARCH_ELEMENTS = 1 << 22  # quantized candidate weights held at once by the AWQ search (16 MB)


def _losses(w: np.ndarray, xg: np.ndarray, reference: np.ndarray, candidates: np.ndarray, mode) -> np.ndarray:
    """``mean |Q(w s) (x / s) - w x|`` per candidate ``s`` (rows of ``candidates``), a few candidates at a
    time (on every core) so the quantized copies stay within ``SEARCH_ELEMENTS`` values per thread."""

    def losses(start: int, stop: int) -> np.ndarray:
        chunk = candidates[start:stop]
        out = np.matmul(fake_quantize(w[None] * chunk[:, None, :], mode, (2,)), xg[None] / chunk[:, :, None])
        out -= reference[None]
        np.abs(out, out=out)
        return out.mean(axis=(1, 2))

    step = max(1, SEARCH_ELEMENTS // max(w.size, 1))
    return np.concatenate(map_rows(losses, len(candidates), step))


def _statistics(layer: WeightLayer, w_oi: np.ndarray, stats: ActivationStats | None, params) -> tuple:
    if stats is not None and stats.count and params.prefer_data_aware_scaling:
        return stats.mean_matrix(params.subset_size).T, stats.channel_max()
    stat = 1.0 / np.maximum(np.abs(w_oi).mean(axis=0), np.finfo(np.float32).eps)
    return np.eye(w_oi.shape[1], dtype=np.float32), stat


def _groups(graph: Graph, layers: list[WeightLayer]) -> list[tuple[str, list, WeightLayer | None]]:
    """(pattern, targets, merge Linear) per input tensor of low-bit Linear layers that AWQ can scale."""
    by_node = {layer.node: layer for layer in layers}
    by_input: dict = {}
    for layer in layers:
        if layer.config.is_primary_low_bit and layer.activation is not None:
            by_input.setdefault(layer.activation, []).append(layer)
    groups = []
    for targets in by_input.values():
        match = _match(graph, targets[0], by_node) if len(targets) == 1 else None
        if match is not None:
            groups.append((match[0], targets, match[1]))
    return groups


def _require_dataflow(graph: Graph, layers: list[WeightLayer]) -> None:
    """AWQ finds its patterns along the graph's edges; a graph built without tracing has none."""
    if graph.has_dataflow:
        return
    if any(layer.config.is_primary_low_bit for layer in layers):
        raise ValidationError(
            "awq=True needs the model's dataflow graph to find its patterns, and this model's graph was built "
            "without running it (a PyTorch model is traced only when a dataset is given): pass "
            "dataset=nncompress.Dataset([...]) with at least one model input, or set awq=False"
        )


def plan_awq(
    graph: Graph,
    layers: list[WeightLayer],
    read: Callable[[WeightLayer], np.ndarray],
    stats: Mapping[str, ActivationStats],
    params: AdvancedAWQParameters,
) -> AWQPlan:
    """Find the AWQ patterns among low-bit Linear layers and compute their scales.

    ``stats`` (input statistics per node) is only read: the statistics of the scaled inputs are new
    objects in the plan. Scales are searched on the stacked weights of a pattern's targets (one target
    per pattern today; scaling other shared inputs through inserted multiplies was tried and raised
    SmolLM2's perplexity).
    """
    _require_dataflow(graph, layers)
    groups = _groups(graph, layers)
    patterns: dict[str, int] = {}
    input_scales, output_scales, multiplies, scaled_stats = {}, {}, [], {}
    for pattern, targets, merge in progress_iter(groups, len(groups), "AWQ"):
        w_oi = np.concatenate([t.to_oi(read(t)) for t in targets], axis=0)
        given = stats.get(targets[0].node)
        x, stat = _statistics(targets[0], w_oi, given, params)
        scale = search_scale(w_oi, x, stat, targets[0], params)
        del w_oi
        patterns[pattern] = patterns.get(pattern, 0) + len(targets)
        for target in targets:
            input_scales[target.node] = scale
        if merge is not None:
            output_scales[merge.node] = output_scales.get(merge.node, 1.0) / scale
        else:
            consumers = tuple(InputRef(t.node, 0) for t in targets)
            multiplies.append(InsertMultiply(targets[0].activation, consumers, 1.0 / scale,
                                             f"{targets[0].node}/awq_mul"))
        if given is not None:
            scaled = given.scaled_inputs(1.0 / scale)
            scaled_stats.update((target.node, scaled) for target in targets)
    return AWQPlan(input_scales, output_scales, tuple(multiplies), scaled_stats, summary(layers, patterns), patterns)


def summary(layers: list[WeightLayer], patterns: Mapping[str, int]) -> str:
    """The report's AWQ line: how many low-bit Linear layers were scaled, by pattern."""
    candidates = sum(1 for t in layers if t.config.is_primary_low_bit and t.activation is not None)
    if not patterns:
        return (
            f"AWQ: no pattern matched among {candidates} low-bit Linear layers (it applies to "
            "Linear->Multiply->Linear, Activation->Multiply->Linear and Activation->Linear); weights were not scaled"
        )
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(patterns.items()))
    return f"AWQ applied to {sum(patterns.values())} of {candidates} low-bit Linear layers ({kinds})"
