"""Weight compression: select layers, gather statistics, assign precisions, compress one weight at a time.

Weights are read, transformed and encoded one by one inside a generator; the backend stores each
compressed weight as soon as it is produced (``EditStream``), so at most one float weight copy
exists at a time besides the input model.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from nncompress.algorithms.checks import check_finite_weight
from nncompress.algorithms.weights import data_aware
from nncompress.algorithms.weights.activations import ActivationStats
from nncompress.algorithms.weights.awq import AWQPlan, plan_awq
from nncompress.algorithms.weights.config import WeightCompressionOptions
from nncompress.algorithms.weights.mixed_precision import assign_mixed_precision
from nncompress.algorithms.weights.report import WeightCompressionReport
from nncompress.algorithms.weights.selection import WeightLayer, select_layers
from nncompress.graph.edits import CompressWeight, EditStream
from nncompress.graph.ops import OpKind
from nncompress.numerics.lowbit import CompressedWeight
from nncompress.progress import progress_iter


class _Context:
    """What the per-layer steps share: adapter, model, options, statistics, report."""

    def __init__(self, adapter, model, options: WeightCompressionOptions, report: WeightCompressionReport):
        self.adapter = adapter
        self.model = model
        self.options = options
        self.report = report
        self.stats: dict[str, ActivationStats] = {}  # layer node -> statistics of its input
        self.awq = AWQPlan()
        self._checked: set[str] = set()  # nodes whose weights were checked for NaN/Inf

    def read(self, layer: WeightLayer) -> np.ndarray:
        """The layer's float weight; ValidationError (on its first read) when it holds NaN or Inf."""
        weight = self.adapter.get_constant(self.model, layer.node, layer.weight.port)
        if layer.node not in self._checked:
            check_finite_weight(weight, layer.node)
            self._checked.add(layer.node)
        return weight

    def stats_of(self, layer: WeightLayer) -> ActivationStats | None:
        return self.stats.get(layer.node)


def run_weight_compression(adapter, model, options: WeightCompressionOptions) -> tuple[Any, WeightCompressionReport]:
    """The compressed model and the report."""
    report = WeightCompressionReport(backend=adapter.capabilities.name, algorithm="WeightCompression")
    start = time.perf_counter()
    graph = adapter.build_graph(model)
    selection = select_layers(graph, options)
    report.notes += selection.notes
    report.skipped.update(selection.skipped)
    layers = selection.layers
    ctx = _Context(adapter, model, options, report)
    if options.needs_statistics:
        ctx.stats = data_aware.collect_statistics(adapter, model, layers, options, report)
        report.timings["statistics"] = time.perf_counter() - start
    elif options.advanced.statistics_path is not None:
        report.notes.append("statistics_path is set but no data-aware method runs: no statistics were needed")
    if options.ratio < 1.0 and not options.is_8bit:
        report.notes.append(assign_mixed_precision(layers, options, ctx.read, ctx.stats_of))
    if options.awq:
        ctx.awq = plan_awq(graph, layers, ctx)
        report.notes.append(ctx.awq.summary)
    stream = EditStream(_edits(ctx, layers), options=options.advanced.backend_params)
    result = adapter.apply(model, stream)
    for name, why in report.skipped.items():
        report.add_layer(name, "float", 32, 0, False)
        report.layers[name] = f"float ({why})"
    report.timings["total"] = time.perf_counter() - start
    return result, report


def _edits(ctx: _Context, layers: list[WeightLayer]) -> Iterator:
    """Compress each weight in turn; yield its edit (and its LoRA correction, AWQ multiplies)."""
    tied: dict[tuple, CompressedWeight] = {}
    linear_shapes = {layer.weight.shape for layer in layers if layer.kind is OpKind.LINEAR}
    total = sum(layer.size for layer in layers)
    ctx.report.timings.setdefault("compression", 0.0)
    # largest weights first: while they are processed, few compressed weights exist yet (lower peak memory)
    ordered = sorted(layers, key=lambda layer: -layer.size)
    for layer in progress_iter(ordered, len(ordered), "Applying weight compression"):
        started = time.perf_counter()
        config = layer.config
        bits = config.bits
        ctx.report.add_layer(layer.node, config.describe(), bits, layer.size, layer.ratio_defining)
        if config.mode is None:
            yield from ctx.awq.float_edits(layer, ctx)
            continue
        weight = ctx.awq.scaled_weight(layer, ctx.read(layer))
        compressed, extra = data_aware.compress_layer(layer, weight, ctx)
        del weight
        if layer.kind is not OpKind.EMBEDDING or layer.weight.shape in linear_shapes:
            compressed = _reuse_tied(tied, layer, compressed)
        ctx.report.timings["compression"] += time.perf_counter() - started
        yield CompressWeight(layer.node, layer.weight.port, compressed, f"{layer.node}/weight{layer.weight.port}")
        yield from extra
        del compressed, extra  # stored by the backend by now: release before reading the next weight
    yield from ctx.awq.multiply_edits()
    ctx.report.notes.append(f"{len(layers)} weights with {total / 1e6:.2f}M parameters processed")


def _reuse_tied(tied: dict[tuple, CompressedWeight], layer: WeightLayer, weight: CompressedWeight) -> CompressedWeight:
    """The same object for identical compressed weights of an embedding and a Linear (tied lm_head)."""
    key = (weight.mode, weight.shape, weight.axis, weight.group_size)
    if layer.kind is OpKind.EMBEDDING:
        tied[key] = weight
        return weight
    other = tied.get(key)
    if other is not None and np.array_equal(other.data, weight.data) and np.array_equal(other.scale, weight.scale):
        return other
    return weight
