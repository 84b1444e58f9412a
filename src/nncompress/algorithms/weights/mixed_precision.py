"""Mixed precision: which ratio-defining weights keep the primary (4-bit) mode (reference 2.5).

Layers are sorted by ascending sensitivity score; walking that order a layer takes the primary mode
while the primary share of ratio-defining weight elements stays within ``ratio``; the rest fall back
to the backup mode. ``E8`` is the error of INT8_ASYM per-channel quantization of the weight
(the largest per-output-channel mean squared error).

- WEIGHT_QUANTIZATION_ERROR (data-free): ``1 / (E8 + eps)``.
- HESSIAN_INPUT_ACTIVATION: ``||W8 - W||_F * h`` with ``h`` the accumulated input energy.
- MEAN/MAX_ACTIVATION_VARIANCE, MEAN_ACTIVATION_MAGNITUDE: ``statistic / E8``; embeddings score 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from nncompress.algorithms.weights.activations import ActivationStats
from nncompress.algorithms.weights.config import Mode, WeightCompressionOptions
from nncompress.algorithms.weights.selection import WeightLayer
from nncompress.graph.ops import OpKind
from nncompress.numerics.lowbit import fake_quantize, reduction_axes
from nncompress.parameters import SensitivityMetric as Metric
from nncompress.progress import progress_iter

EPS = np.finfo(np.float32).eps


def int8_errors(weight: np.ndarray, layer: WeightLayer) -> tuple[float, float]:
    """(largest per-channel mean squared INT8_ASYM error, Frobenius norm of the error)."""
    axes = reduction_axes(weight.ndim, layer.weight.in_axis, -1, layer.weight.out_axis)
    diff = fake_quantize(weight, Mode.INT8_ASYM, axes) - weight
    per_channel = np.mean(diff * diff, axis=axes)
    return float(per_channel.max()), float(np.linalg.norm(diff))


def sensitivity(
    layer: WeightLayer, weight: np.ndarray, metric: Metric, stats: ActivationStats | None
) -> float:
    """The score of one ratio-defining layer (lower goes to the primary precision first)."""
    if metric is not Metric.WEIGHT_QUANTIZATION_ERROR and layer.kind is OpKind.EMBEDDING:
        return 0.0
    e8, frobenius = int8_errors(weight, layer)
    if metric is Metric.WEIGHT_QUANTIZATION_ERROR or stats is None or stats.count == 0:
        return 1.0 / (e8 + EPS)
    if metric is Metric.HESSIAN_INPUT_ACTIVATION:
        return frobenius * stats.metric(metric)
    return stats.metric(metric) / (e8 + EPS)


def assign_mixed_precision(
    layers: list[WeightLayer],
    options: WeightCompressionOptions,
    read_weight: Callable[[WeightLayer], np.ndarray],
    stats_of: Callable[[WeightLayer], ActivationStats | None],
) -> tuple[list[WeightLayer], str]:
    """``layers`` with the most sensitive ratio-defining ones demoted to the backup mode (new layer
    records; the given ones are not changed), and a summary line."""
    defining = [layer for layer in layers if layer.ratio_defining and layer.config.mode is not None]
    metric = options.sensitivity_metric
    scores = {}
    for layer in progress_iter(defining, len(defining), "Mixed precision"):
        weight = read_weight(layer)
        scores[layer.node] = sensitivity(layer, weight, metric, stats_of(layer))
        del weight
    total = sum(layer.size for layer in defining)
    primary = 0
    order = sorted(defining, key=lambda layer: scores[layer.node])
    chosen = set()
    for layer in order:
        if (primary + layer.size) / max(total, 1) > options.ratio + 1e-9:
            break
        primary += layer.size
        chosen.add(layer.node)
    demoted = {layer.node for layer in defining if layer.node not in chosen}
    result = [_demote(layer, options, metric) if layer.node in demoted else layer for layer in layers]
    summary = (
        f"mixed precision ({metric.value}, ratio {options.ratio:g}): {len(chosen)} of {len(defining)} "
        f"ratio-defining layers, {primary / max(total, 1):.1%} of their weights, use {options.mode.value}"
    )
    return result, summary


def _demote(layer: WeightLayer, options: WeightCompressionOptions, metric: Metric) -> WeightLayer:
    config = options.backup_for(layer.in_channels)
    note = f"mixed precision ({metric.value}): {config.describe()}"
    return dataclasses.replace(layer, config=config, notes=(*layer.notes, note))
