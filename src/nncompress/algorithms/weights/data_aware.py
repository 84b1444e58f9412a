"""Statistics collection and the per-layer compression steps (scale estimation / GPTQ, encoding,
LoRA correction), each a ``LayerJob -> LayerJob`` function.

The data-aware methods work on the weight as ``[out, in]`` grouped to ``[out, groups, group]``;
results are turned back into the layer's own layout before encoding.
"""

from __future__ import annotations

import numpy as np

from nncompress.algorithms.weights import gptq, lora, scale_estimation, stats_cache
from nncompress.algorithms.weights.activations import ActivationStats, StatsNeeds
from nncompress.algorithms.weights.config import WeightCompressionOptions
from nncompress.algorithms.weights.gptq import GPTQFactors
from nncompress.algorithms.weights.job import LayerJob
from nncompress.algorithms.weights.selection import WeightLayer
from nncompress.errors import CalibrationError
from nncompress.graph.ir import TensorRef
from nncompress.numerics.encoding import CompressedWeight, encode
from nncompress.numerics.grids import fit_codebook
from nncompress.numerics.lowbit import group, reduction_axes
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


def to_layout(values: np.ndarray | None, layer: WeightLayer) -> np.ndarray | None:
    """Scale/zero point ``[out, groups, 1]`` in the layer's stored layout."""
    if values is None:
        return None
    if layer.config.group_size == -1:
        return layer.from_oi(values.reshape(values.shape[0], 1))
    return values.transpose(1, 2, 0) if layer.weight.in_axis == 0 else values


def uses_data(job: LayerJob, options: WeightCompressionOptions) -> bool:
    """Whether a data-aware method (scale estimation, GPTQ, LoRA correction) applies to ``job``."""
    stats = job.stats
    methods = options.scale_estimation or options.gptq or options.lora_correction
    return job.config.is_primary_low_bit and stats is not None and stats.count > 0 and bool(methods)


def estimate_step(job: LayerJob, options: WeightCompressionOptions, factors: GPTQFactors) -> LayerJob:
    """GPTQ (the updated weight as ``target``) and/or scale estimation: per-group ``scale``/``zero_point``."""
    if not uses_data(job, options):
        return job
    layer, stats = job.layer, job.stats
    w_oi = np.ascontiguousarray(layer.to_oi(job.weight), dtype=np.float32)
    scale = zero_point = None
    if options.gptq:
        se_stats = stats if options.scale_estimation else None
        w_oi, scale, zero_point = gptq.run(w_oi, stats, layer, options.advanced, se_stats, factors)
    elif options.scale_estimation:
        x = stats.mean_matrix(options.advanced.scale_estimation_params.subset_size)
        scale, zero_point = scale_estimation.estimate(w_oi, x, stats.channel_max(), layer, options.advanced)
    return job.but(target=layer.from_oi(w_oi), scale=scale, zero_point=zero_point)


def encode_step(job: LayerJob, options: WeightCompressionOptions) -> LayerJob:
    """The compressed weight: the estimated scales when a step found them, else round to nearest."""
    layer, config = job.layer, job.config
    target = job.weight if job.target is None else job.target
    if job.scale is None:
        compressed = _rtn(layer, target, options.advanced)
    else:
        compressed = encode(
            target, config.mode, layer.weight.in_axis, config.group_size, layer.weight.out_axis,
            to_layout(job.scale, layer), to_layout(job.zero_point, layer),
        )
    return job.but(compressed=compressed, target=None)


def lora_step(job: LayerJob, options: WeightCompressionOptions) -> LayerJob:
    """Adds the LoRA-correction edit of the residual ``weight - compressed`` when LoRA correction applies."""
    if not options.lora_correction or not uses_data(job, options):
        return job
    edit = lora.correction(job.layer, job.weight, job.compressed, job.stats, options.advanced)
    return job.but(edits=(*job.edits, edit))


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
