"""Weight compression: select layers, gather statistics, assign precisions, compress one weight at a time.

Each layer is a ``LayerJob`` passed through steps (AWQ scales -> read -> scale -> estimate -> encode ->
LoRA), each returning a new job: statistics, scales and weights flow as values, never through shared
state. Weights are read, transformed and encoded one by one inside a generator; the backend stores
each compressed weight as soon as it is produced (``EditStream``), so at most one float weight copy
exists at a time besides the input model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np

from nncompress.algorithms.checks import check_finite_weight
from nncompress.algorithms.weights import data_aware
from nncompress.algorithms.weights.activations import ActivationStats
from nncompress.algorithms.weights.awq import AWQPlan, plan_awq, scale_channels
from nncompress.algorithms.weights.config import LayerConfig, WeightCompressionOptions
from nncompress.algorithms.weights.gptq import GPTQFactors
from nncompress.algorithms.weights.job import LayerJob, Step, run_steps
from nncompress.algorithms.weights.mixed_precision import assign_mixed_precision
from nncompress.algorithms.weights.report import WeightCompressionReport
from nncompress.algorithms.weights.selection import WeightLayer, select_layers
from nncompress.graph.edits import CompressWeight, EditStream, SetConstant
from nncompress.graph.ops import OpKind
from nncompress.numerics.encoding import CompressedWeight
from nncompress.numerics.lowbit import NonFiniteWeightError, canonical_mode
from nncompress.parameters import CompressWeightsMode as Mode
from nncompress.progress import progress_iter


class WeightReader:
    """Reads a layer's float weight from the model; ValidationError when it holds NaN or Inf.

    ``eager``: every weight is checked on its first read (the methods that look at a weight before
    encoding it: mixed precision, AWQ, the data-aware steps, fitted codebooks). Otherwise the encoder
    finds non-finite values from its per-group extremes (``NonFiniteWeightError``) and ``check`` then
    names them, which saves a full pass over every weight.
    """

    def __init__(self, adapter, model, eager: bool = True):
        self.adapter, self.model, self.eager = adapter, model, eager
        self._checked: set[str] = set()  # nodes whose weights were checked for NaN/Inf

    def __call__(self, layer: WeightLayer) -> np.ndarray:
        weight = self.adapter.get_constant(self.model, layer.node, layer.weight.port)
        if self.eager and layer.node not in self._checked:
            check_finite_weight(weight, layer.node)
            self._checked.add(layer.node)
        return weight

    def check(self, layer: WeightLayer) -> None:
        """ValidationError naming the non-finite values of ``layer``'s weight (read again)."""
        check_finite_weight(self.adapter.get_constant(self.model, layer.node, layer.weight.port), layer.node)


def _reads_weights_before_encoding(options: WeightCompressionOptions) -> bool:
    mixed = options.ratio < 1.0 and not options.is_8bit
    fitted = canonical_mode(options.mode) is Mode.ADAPTIVE_CODEBOOK
    return options.needs_statistics or options.awq or mixed or fitted


def run_weight_compression(adapter, model, options: WeightCompressionOptions) -> tuple[Any, WeightCompressionReport]:
    """The compressed model and the report."""
    report = WeightCompressionReport(backend=adapter.capabilities.name, algorithm="WeightCompression")
    start = time.perf_counter()
    graph = adapter.build_graph(model)
    selection = select_layers(graph, options)
    report.notes += selection.notes
    report.skipped.update(selection.skipped)
    layers = selection.layers
    read = WeightReader(adapter, model, eager=_reads_weights_before_encoding(options))
    if options.needs_statistics:
        result = _run_blockwise(adapter, model, graph, layers, options, report, read)
        if result is not None:
            return _finish(result, report, start)
    stats: dict[str, ActivationStats] = {}  # layer node -> statistics of its input
    if options.needs_statistics:
        stats = data_aware.collect_statistics(adapter, model, layers, options, report)
        report.timings["statistics"] = time.perf_counter() - start
    elif options.advanced.statistics_path is not None:
        report.notes.append("statistics_path is set but no data-aware method runs: no statistics were needed")
    if options.ratio < 1.0 and not options.is_8bit:
        layers, note = assign_mixed_precision(layers, options, read, lambda layer: stats.get(layer.node))
        report.notes.append(note)
    awq = AWQPlan()
    if options.awq:
        awq = plan_awq(graph, layers, read, stats, options.advanced.awq_params)
        report.notes.append(awq.summary)
    jobs = [LayerJob(layer, stats.get(layer.node)) for layer in layers]
    stream = EditStream(_edits(jobs, awq, read, options, report), options=options.advanced.backend_params)
    return _finish(adapter.apply(model, stream), report, start)


def _finish(result, report: WeightCompressionReport, start: float) -> tuple[Any, WeightCompressionReport]:
    for name, why in report.skipped.items():
        report.add_layer(name, "float", 32, 0, False)
        report.layers[name] = f"float ({why})"
    report.timings["total"] = time.perf_counter() - start
    return result, report


def _run_blockwise(adapter, model, graph, layers, options: WeightCompressionOptions, report, read) -> Any | None:
    """The compressed model from the block-wise pipeline, or None (with a note) where it cannot serve."""
    from nncompress.algorithms.weights import blockwise

    pipeline, why = blockwise.prepare(adapter, model, graph, layers, options, report, read)
    if pipeline is None:
        report.notes.append(f"statistics from whole-model runs: {why}")
        return None
    if options.ratio < 1.0 and not options.is_8bit and not options.data_aware_mixed_precision:
        layers, note = assign_mixed_precision(layers, options, read, lambda layer: None)
        report.notes.append(note)
        pipeline.set_layers(layers)
    linear_shapes = {layer.weight.shape for layer in layers if layer.kind is OpKind.LINEAR}

    def compressor(final_layers):
        return LayerCompressor(read, options, report, linear_shapes)

    edits = blockwise.run(pipeline, layers, compressor)
    return adapter.apply(model, EditStream(edits, options=options.advanced.backend_params))


def read_step(job: LayerJob, read: Callable[[WeightLayer], np.ndarray]) -> LayerJob:
    """The layer's float weight from the model."""
    return job.but(weight=read(job.layer))


def awq_step(job: LayerJob, plan: AWQPlan) -> LayerJob:
    """AWQ's scales and the statistics of the scaled input (the plan's, or the job's own when AWQ left
    the layer alone)."""
    input_scale, output_scale = plan.scales_of(job.layer.node)
    return job.but(input_scale=input_scale, output_scale=output_scale, stats=plan.stats.get(job.layer.node, job.stats))


def scale_step(job: LayerJob) -> LayerJob:
    """The weight with the job's AWQ scales multiplied into its channels."""
    if job.input_scale is None and job.output_scale is None:
        return job
    return job.but(weight=scale_channels(job.weight, job.layer, job.input_scale, job.output_scale))


def float_step(job: LayerJob, read: Callable[[WeightLayer], np.ndarray]) -> LayerJob:
    """A layer kept float: a SetConstant edit when AWQ scaled its weight, else nothing."""
    if job.input_scale is None and job.output_scale is None:
        return job
    scaled = scale_step(read_step(job, read))
    return job.but(edits=(*job.edits, SetConstant(job.layer.node, job.layer.weight.port, scaled.weight)))


def layer_steps(
    config: LayerConfig, awq: AWQPlan, read: Callable[[WeightLayer], np.ndarray], options: WeightCompressionOptions,
    factors: GPTQFactors,
) -> list[Step]:
    """The steps of one layer with ``config``, in order."""
    plan = partial(awq_step, plan=awq)
    if config.mode is None:
        return [plan, partial(float_step, read=read)]
    return [
        plan, partial(read_step, read=read), scale_step,
        partial(data_aware.estimate_step, options=options, factors=factors),
        partial(data_aware.encode_step, options=options), partial(data_aware.lora_step, options=options),
    ]


class LayerCompressor:
    """Passes each job through its steps and yields its edits; shared by the whole-model and the
    block-wise paths (one per run: tied weights and GPTQ factorizations are remembered across layers)."""

    def __init__(self, read, options: WeightCompressionOptions, report: WeightCompressionReport, linear_shapes):
        self.read, self.options, self.report = read, options, report
        self.linear_shapes = linear_shapes  # weight shapes of Linear layers (tied embeddings)
        self.tied: dict[tuple, CompressedWeight] = {}
        self.factors = GPTQFactors()
        report.timings.setdefault("compression", 0.0)

    def compress(self, job: LayerJob, awq: AWQPlan) -> LayerJob:
        """The job after its steps: ``compressed`` (a tied weight reused), ``edits``; weight and target dropped."""
        started = time.perf_counter()
        layer = job.layer
        self.report.add_layer(layer.node, layer.config.describe(), layer.config.bits, layer.size, layer.ratio_defining)
        try:
            job = run_steps(job, layer_steps(layer.config, awq, self.read, self.options, self.factors))
        except NonFiniteWeightError:
            self.read.check(layer)
            raise
        job = job.but(weight=None, target=None)  # only the results are needed from here on
        tied = layer.kind is not OpKind.EMBEDDING or layer.weight.shape in self.linear_shapes
        if job.compressed is not None and tied:
            job = job.but(compressed=_reuse_tied(self.tied, layer, job.compressed))
        self.report.timings["compression"] += time.perf_counter() - started
        return job

    @staticmethod
    def edits(job: LayerJob) -> Iterator:
        """The edits of a compressed job: its weight (for every operation reading it), then its corrections
        (stage order)."""
        layer = job.layer
        if job.compressed is not None:
            for node, port in ((layer.node, layer.weight.port), *layer.shares):  # a shared weight: one object
                yield CompressWeight(node, port, job.compressed, f"{node}/weight{port}")
        yield from job.edits


def _edits(
    jobs: list[LayerJob], awq: AWQPlan, read, options: WeightCompressionOptions, report: WeightCompressionReport
) -> Iterator:
    """Compress each weight in turn; yield its edit (and its LoRA correction, AWQ multiplies)."""
    linear_shapes = {job.layer.weight.shape for job in jobs if job.layer.kind is OpKind.LINEAR}
    compressor = LayerCompressor(read, options, report, linear_shapes)
    total = sum(job.layer.size for job in jobs)
    # largest weights first: while they are processed, few compressed weights exist yet (lower peak memory)
    ordered = sorted(jobs, key=lambda job: -job.layer.size)
    for job in progress_iter(ordered, len(ordered), "Applying weight compression"):
        job = compressor.compress(job, awq)
        yield from compressor.edits(job)
        del job  # stored by the backend by now: release before reading the next weight
    yield from awq.multiplies
    report.notes.append(f"{len(jobs)} weights with {total / 1e6:.2f}M parameters processed")


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
