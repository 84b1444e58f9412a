"""Activation-aware weight scaling (AWQ, modified as in the reference, section 2.7).

Patterns (the target is a 4-bit Linear reading the pattern's output on input 0):
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

import copy
from dataclasses import dataclass, field

import numpy as np

from nncompress.algorithms.weights.activations import ActivationStats
from nncompress.algorithms.weights.selection import WeightLayer
from nncompress.errors import ValidationError
from nncompress.graph.edits import InputRef, InsertMultiply, SetConstant
from nncompress.graph.ir import Graph
from nncompress.graph.ops import ATOMIC_ACTIVATION_KINDS, OpKind
from nncompress.numerics.lowbit import fake_quantize
from nncompress.progress import progress_iter
from nncompress.weight_parameters import AdvancedAWQParameters


@dataclass
class AWQPlan:
    """Per-node scales found by AWQ, applied when each weight is read for compression."""

    input_scales: dict[str, np.ndarray] = field(default_factory=dict)  # target -> s (input channels)
    output_scales: dict[str, np.ndarray] = field(default_factory=dict)  # merge Linear -> 1 / s (outputs)
    multiplies: list[InsertMultiply] = field(default_factory=list)
    summary: str = ""

    def scaled_weight(self, layer: WeightLayer, weight: np.ndarray) -> np.ndarray:
        """``weight`` with its pending AWQ scales applied (input and/or output channels)."""
        for scales, axis in ((self.input_scales, layer.weight.in_axis), (self.output_scales, layer.weight.out_axis)):
            if layer.node in scales:
                shape = [1] * weight.ndim
                shape[axis] = -1
                weight = weight * scales[layer.node].reshape(shape).astype(np.float32)
        return weight

    def float_edits(self, layer: WeightLayer, ctx) -> list:
        """A SetConstant when a layer that stays float carries AWQ scales."""
        if layer.node not in self.input_scales and layer.node not in self.output_scales:
            return []
        return [SetConstant(layer.node, layer.weight.port, self.scaled_weight(layer, ctx.read(layer)))]

    def multiply_edits(self) -> list[InsertMultiply]:
        return list(self.multiplies)


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
            merge is not None and source.kind is OpKind.LINEAR and len(merge.weight.shape) == 2
            and merge.weight.shape[merge.weight.out_axis] == target.in_channels
            and len(graph.consumers(producer.inputs[sources.index(source)])) == 1
        ):
            return "Linear->Multiply->Linear", merge
    if any(s.kind in ATOMIC_ACTIVATION_KINDS for s in sources):
        return "Activation->Multiply->Linear", None
    return None


def _oi(weight: np.ndarray, layer: WeightLayer) -> np.ndarray:
    return weight.T if layer.weight.in_axis == 0 else weight


def search_scale(
    w_oi: np.ndarray, x: np.ndarray, stat: np.ndarray, layer: WeightLayer, params: AdvancedAWQParameters
) -> np.ndarray:
    """The per-input-channel scale ``s`` for weight ``[out, in]`` and inputs ``x`` ``[in, n]``."""
    channels = w_oi.shape[1]
    group = layer.config.group_size if layer.config.group_size != -1 else channels
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
        quantized = fake_quantize(w[None] * candidates[:, None, :], layer.config.mode, (2,))
        out = np.einsum("aog,agn->aon", quantized, xg[None] / candidates[:, :, None])
        losses = np.abs(out - reference[None]).mean(axis=(1, 2))
        best = int(np.argmin(losses))
        if losses[best] < np.abs(reference).max():
            scale[cols] = candidates[best]
    return scale


def _statistics(layer: WeightLayer, w_oi: np.ndarray, stats: ActivationStats | None, params) -> tuple:
    if stats is not None and stats.count and params.prefer_data_aware_scaling:
        return stats.mean_matrix(params.subset_size).T, stats.channel_max()
    stat = 1.0 / np.maximum(np.abs(w_oi).mean(axis=0), np.finfo(np.float32).eps)
    return np.eye(w_oi.shape[1], dtype=np.float32), stat


def _groups(graph: Graph, layers: list[WeightLayer]) -> list[tuple[str, list, WeightLayer | None]]:
    """(pattern, targets, merge Linear) per input tensor of 4-bit Linear layers that AWQ can scale."""
    by_node = {layer.node: layer for layer in layers}
    by_input: dict = {}
    for layer in layers:
        if layer.config.is_primary_4bit and layer.activation is not None:
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
    if any(layer.config.is_primary_4bit for layer in layers):
        raise ValidationError(
            "awq=True needs the model's dataflow graph to find its patterns, and this model's graph was built "
            "without running it (a PyTorch model is traced only when a dataset is given): pass "
            "dataset=nncompress.Dataset([...]) with at least one model input, or set awq=False"
        )


def plan_awq(graph: Graph, layers: list[WeightLayer], ctx) -> AWQPlan:
    """Find the AWQ patterns among 4-bit Linear layers and compute their scales.

    Scales are searched on the stacked weights of a pattern's targets (one target per pattern today;
    scaling other shared inputs through inserted multiplies was tried and raised SmolLM2's perplexity).
    """
    plan = AWQPlan()
    params = ctx.options.advanced.awq_params
    _require_dataflow(graph, layers)
    groups = _groups(graph, layers)
    patterns: dict[str, int] = {}
    for pattern, targets, merge in progress_iter(groups, len(groups), "AWQ"):
        w_oi = np.concatenate([_oi(ctx.read(t), t) for t in targets], axis=0)
        stats = ctx.stats_of(targets[0])
        x, stat = _statistics(targets[0], w_oi, stats, params)
        scale = search_scale(w_oi, x, stat, targets[0], params)
        del w_oi
        patterns[pattern] = patterns.get(pattern, 0) + len(targets)
        for target in targets:
            plan.input_scales[target.node] = scale
        if merge is not None:
            plan.output_scales[merge.node] = plan.output_scales.get(merge.node, 1.0) / scale
        else:
            consumers = tuple(InputRef(t.node, 0) for t in targets)
            plan.multiplies.append(InsertMultiply(targets[0].activation, consumers, 1.0 / scale,
                                                  f"{targets[0].node}/awq_mul"))
        if stats is not None:
            scaled = copy.copy(stats)
            scaled.scale_inputs(1.0 / scale)
            for target in targets:
                ctx.stats[target.node] = scaled
    plan.summary = _summary(layers, patterns)
    return plan


def _summary(layers: list[WeightLayer], patterns: dict[str, int]) -> str:
    candidates = sum(1 for t in layers if t.config.is_primary_4bit and t.activation is not None)
    if not patterns:
        return (
            f"AWQ: no pattern matched among {candidates} 4-bit Linear layers (it applies to Linear->Multiply->Linear, "
            "Activation->Multiply->Linear and Activation->Linear); weights were not scaled"
        )
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(patterns.items()))
    return f"AWQ applied to {sum(patterns.values())} of {candidates} 4-bit Linear layers ({kinds})"
