"""Statistics collection and the per-layer data-aware steps (scale estimation, GPTQ, LoRA correction).

The data-aware methods work on the weight as ``[out, in]`` grouped to ``[out, groups, group]``;
results are turned back into the layer's own layout before encoding.
"""

from __future__ import annotations

import numpy as np

from nncompress.algorithms.weights import stats_cache
from nncompress.algorithms.weights.activations import ActivationStats, StatsNeeds
from nncompress.algorithms.weights.config import WeightCompressionOptions
from nncompress.algorithms.weights.selection import WeightLayer
from nncompress.errors import CalibrationError
from nncompress.graph.ir import TensorRef
from nncompress.numerics.grids import fit_codebook
from nncompress.numerics.lowbit import CompressedWeight, encode, group, reduction_axes
from nncompress.parameters import CompressWeightsMode as Mode
from nncompress.statistics.runner import StatisticsPlan, report_nonfinite, run_statistics, tensor_label


def collect_statistics(
    adapter, model, layers: list[WeightLayer], options: WeightCompressionOptions, report
) -> dict[str, ActivationStats]:
    """Statistics of the input of every ratio-defining Linear (by node); ``report`` gets the items used,
    what non-finite values were skipped, and a note on the statistics cache when one is configured."""
    needs, samples = _needs(options)
    tensors: dict[TensorRef, list[str]] = {}
    for layer in layers:
        if layer.activation is not None and layer.ratio_defining:
            tensors.setdefault(layer.activation, []).append(layer.node)
    if not tensors:
        return {}
    by_tensor, report.calibration_items, note = _cached_or_collected(
        adapter, model, list(tensors), needs, samples, options, report
    )
    if note:
        report.notes.append(note)
    _check_tokens(by_tensor, report)
    return {node: by_tensor[tensor] for tensor, nodes in tensors.items() for node in nodes}


def _check_tokens(by_tensor: dict[TensorRef, ActivationStats], report) -> None:
    """Note the tokens dropped for non-finite values; CalibrationError when a tensor kept none."""
    dropped = {t: s.dropped_tokens for t, s in by_tensor.items() if s.dropped_tokens}
    if not dropped:
        return
    empty = [t for t in dropped if by_tensor[t].count == 0]
    if empty:
        raise CalibrationError(
            f"every token of tensor {tensor_label(empty[0])!r} held a NaN or Inf value in every calibration "
            "item: no whole token vector is left for the activation statistics; check the calibration data"
        )
    report.notes.append(
        f"{sum(dropped.values())} tokens of {len(dropped)} tensors held NaN/Inf values and were left out of the "
        "activation statistics (means, variances and Hessians use whole token vectors)"
    )


def _needs(options: WeightCompressionOptions) -> tuple[StatsNeeds, int]:
    """What the enabled methods need, and how many calibration items (the largest subset asked for)."""
    advanced = options.advanced
    means = options.awq or options.scale_estimation or options.lora_correction
    metric = options.sensitivity_metric if options.data_aware_mixed_precision else None
    needs = StatsNeeds(means=bool(means), metrics=frozenset([metric] if metric else []), hessian=options.gptq)
    sizes = [size for enabled, size in (
        (metric is not None, options.subset_size),
        (options.awq, advanced.awq_params.subset_size),
        (options.scale_estimation, advanced.scale_estimation_params.subset_size),
        (options.gptq, advanced.gptq_params.subset_size),
        (options.lora_correction, advanced.lora_correction_params.subset_size),
    ) if enabled]
    return needs, min(options.subset_size, max(sizes, default=options.subset_size))


def _cached_or_collected(
    adapter, model, tensors: list[TensorRef], needs: StatsNeeds, samples: int, options, report
):
    path = options.advanced.statistics_path
    if path is None:
        return *_collect(adapter, model, tensors, needs, samples, options.dataset, report), None
    file = stats_cache.cache_file(path)
    cached = stats_cache.load(file, tensors, needs, samples)
    if cached is not None:
        return *cached, f"statistics loaded from {file} ({cached[1]} calibration items; the model was not run)"
    wide = stats_cache.collected_needs(needs)
    stats, count = _collect(adapter, model, tensors, wide, samples, options.dataset, report)
    stats_cache.save(file, stats, wide, samples, count)
    return stats, count, f"statistics of {count} calibration items saved to {file}"


def _collect(adapter, model, tensors: list[TensorRef], needs: StatsNeeds, samples: int, dataset, report):
    plan = StatisticsPlan()
    stats = {tensor: plan.add(tensor, ActivationStats(needs, samples)) for tensor in tensors}
    count = run_statistics(adapter, model, plan, dataset, samples, "Statistics")
    report_nonfinite(plan, report)
    return stats, count


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
    if not config.is_primary_4bit or stats is None or stats.count == 0 or not data_aware:
        return _rtn(layer, weight, options.advanced), []
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
    ) if scale is not None else _rtn(layer, final, options.advanced)
    extra = []
    if options.lora_correction:
        extra.append(lora.correction(layer, weight, compressed, stats, options.advanced))
    return compressed, extra


def _rtn(layer: WeightLayer, weight: np.ndarray, advanced) -> CompressedWeight:
    """Round to nearest (range search, user and fitted codebooks as ``advanced`` says)."""
    config, info = layer.config, layer.weight
    mode, book = config.mode, advanced.codebook if config.mode is Mode.CODEBOOK else None
    if mode is Mode.ADAPTIVE_CODEBOOK:  # a codebook fitted to this weight, stored as a CODEBOOK weight
        book, mode = _fitted_codebook(layer, weight, advanced.adaptive_codebook_params), Mode.CODEBOOK
    return encode(weight, mode, info.in_axis, config.group_size, info.out_axis, search=advanced.range_search,
                  book=book)


def _fitted_codebook(layer: WeightLayer, weight: np.ndarray, params) -> np.ndarray:
    """The weight normalized per scale group to [-1, 1], clustered into ``num_elements`` values."""
    grouped = group(np.asarray(weight, np.float32), layer.weight.in_axis, layer.config.group_size)
    axes = reduction_axes(grouped.ndim, layer.weight.in_axis, layer.config.group_size, layer.weight.out_axis)
    amax = np.maximum(np.abs(grouped).max(axis=axes, keepdims=True), 1e-30)
    return fit_codebook(grouped / amax, params.num_elements, params.value_type)
