"""Statistics collection and the per-layer data-aware steps (scale estimation, GPTQ, LoRA correction).

The data-aware methods work on the weight as ``[out, in]`` grouped to ``[out, groups, group]``;
results are turned back into the layer's own layout before encoding.
"""

from __future__ import annotations

import numpy as np

from nncompress.algorithms.weights.activations import ActivationStats, StatsNeeds
from nncompress.algorithms.weights.config import WeightCompressionOptions
from nncompress.algorithms.weights.selection import WeightLayer
from nncompress.graph.ir import TensorRef
from nncompress.numerics.lowbit import CompressedWeight, encode
from nncompress.statistics.runner import StatisticsPlan, run_statistics


def collect_statistics(
    adapter, model, layers: list[WeightLayer], options: WeightCompressionOptions
) -> tuple[dict[str, ActivationStats], int]:
    """One calibration pass; statistics of the input of every ratio-defining Linear (by node)."""
    advanced = options.advanced
    means = options.awq or options.scale_estimation or options.lora_correction
    metric = options.sensitivity_metric if options.data_aware_mixed_precision else None
    needs = StatsNeeds(means=bool(means), metric=metric, hessian=options.gptq)
    sizes = [size for enabled, size in (
        (metric is not None, options.subset_size),
        (options.awq, advanced.awq_params.subset_size),
        (options.scale_estimation, advanced.scale_estimation_params.subset_size),
        (options.gptq, advanced.gptq_params.subset_size),
        (options.lora_correction, advanced.lora_correction_params.subset_size),
    ) if enabled]
    samples = min(options.subset_size, max(sizes, default=options.subset_size))
    plan = StatisticsPlan()
    by_tensor: dict[TensorRef, ActivationStats] = {}
    result: dict[str, ActivationStats] = {}
    for layer in layers:
        if layer.activation is None or not layer.ratio_defining:
            continue
        if layer.activation not in by_tensor:
            by_tensor[layer.activation] = plan.add(layer.activation, ActivationStats(needs, samples))
        result[layer.node] = by_tensor[layer.activation]
    if not plan:
        return {}, 0
    count = run_statistics(adapter, model, plan, options.dataset, samples, "Statistics")
    return result, count


def oi_view(weight: np.ndarray, layer: WeightLayer) -> np.ndarray:
    """The weight as ``[out, in]`` (a view)."""
    return weight.T if layer.weight.in_axis == 0 else weight


def group_size(layer: WeightLayer) -> int:
    size = layer.config.group_size
    return layer.in_channels if size == -1 else size


def to_layout(values: np.ndarray | None, layer: WeightLayer) -> np.ndarray | None:
    """Scale/zero point ``[out, groups, 1]`` in the layer's stored layout."""
    if values is None:
        return None
    if layer.config.group_size == -1:
        values = values.reshape(values.shape[0], 1)
        return values.T if layer.weight.in_axis == 0 else values
    return values.transpose(1, 2, 0) if layer.weight.in_axis == 0 else values


def compress_layer(layer: WeightLayer, weight: np.ndarray, ctx) -> tuple[CompressedWeight, list]:
    """The compressed weight of ``layer`` and any extra edits (LoRA correction)."""
    from nncompress.algorithms.weights import gptq, lora, scale_estimation

    options = ctx.options
    config = layer.config
    stats = ctx.stats_of(layer)
    data_aware = options.scale_estimation or options.gptq or options.lora_correction
    search = options.advanced.range_search
    if not config.is_primary_4bit or stats is None or stats.count == 0 or not data_aware:
        return _rtn(layer, weight, search), []
    w_oi = np.ascontiguousarray(oi_view(weight, layer), dtype=np.float32)
    scale = zero_point = None
    if options.gptq:
        se_stats = stats if options.scale_estimation else None
        w_oi, scale, zero_point = gptq.run(w_oi, stats, layer, options.advanced, se_stats)
    elif options.scale_estimation:
        x = stats.mean_matrix(options.advanced.scale_estimation_params.subset_size)
        scale, zero_point = scale_estimation.estimate(w_oi, x, stats.channel_max(), layer, options.advanced)
    final = w_oi.T if layer.weight.in_axis == 0 else w_oi
    compressed = encode(
        final, config.mode, layer.weight.in_axis, config.group_size, layer.weight.out_axis,
        to_layout(scale, layer), to_layout(zero_point, layer),
    ) if scale is not None else _rtn(layer, final, search)
    extra = []
    if options.lora_correction:
        extra.append(lora.correction(layer, weight, compressed, stats, options.advanced))
    return compressed, extra


def _rtn(layer: WeightLayer, weight: np.ndarray, search: bool) -> CompressedWeight:
    config = layer.config
    return encode(weight, config.mode, layer.weight.in_axis, config.group_size, layer.weight.out_axis, search=search)
