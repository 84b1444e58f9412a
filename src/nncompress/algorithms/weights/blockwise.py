"""Block-wise data-aware weight compression: one block (transformer layer) at a time on cached inputs.

The inputs of the first block are captured once per calibration item (``Adapter.region_inputs``: the
forward stops where the block starts); values every block reads alike (attention mask, rotary tables,
the runner's context) are kept from that capture. Then, per block:

1. run the block with its float weights (``Adapter.region_runner``), fetching the inputs of its
   Linear layers into the statistics the enabled methods need (``ActivationStats``) and a small sample
   of token rows (the report's output errors);
2. compress its layers: AWQ on the block's patterns, then the per-layer steps of ``pipeline`` (scale
   estimation, GPTQ, encoding, LoRA correction); their edits go to the backend as they are produced;
3. with GPTQ, run the block with its compressed weights (dequantized, AWQ and LoRA folded in) to
   produce the next block's inputs: GPTQ solves each layer against the inputs the already compressed
   layers before it produce, as published. Without GPTQ the next block reads the float outputs of step 1
   (one run per block): AWQ, scale estimation and LoRA correction fit a layer's float outputs on float
   inputs, as published, and measured better so (SmolLM2 INT4_ASYM AWQ + scale estimation: perplexity
   23.89 on float inputs, 24.29 on compressed-upstream inputs).

When a later block cannot run (the backend's region runner, or a run of it, raises UnsupportedModelError or
NotImplementedError), that block and every later one are compressed with statistics from one whole-model
run of the user's float model (the edits go to the backend's copy), AWQ still planned per block; the cached
block inputs are freed, the report notes which block and why. A first block that cannot run sends the whole
call to the whole-model path (``prepare``).

Peak memory: the model, one block's input/output activations for the calibration set, one block's
statistics. Mixed precision with a data-aware metric ranks every layer of the model before anything is
compressed: a first pass through the blocks with float weights and float inputs collects only the
metric's per-sample scalars (the same ranking as the whole-model statistics gave).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from nncompress.algorithms.weights import data_aware
from nncompress.algorithms.weights.activations import ActivationStats, StatsNeeds
from nncompress.algorithms.weights.awq import AWQPlan, plan_awq
from nncompress.algorithms.weights.awq import summary as awq_summary
from nncompress.algorithms.weights.blockwise_layers import (
    SAMPLE_ROWS,
    TokenSample,
    algorithms,
    effective_weight,
    output_errors,
)
from nncompress.algorithms.weights.config import WeightCompressionOptions
from nncompress.algorithms.weights.gptq import GPTQFactors
from nncompress.algorithms.weights.job import LayerJob
from nncompress.algorithms.weights.mixed_precision import assign_mixed_precision
from nncompress.algorithms.weights.pipeline import LayerCompressor
from nncompress.algorithms.weights.report import WeightCompressionReport
from nncompress.algorithms.weights.selection import WeightLayer
from nncompress.errors import CalibrationError, UnsupportedModelError
from nncompress.graph.blocks import Block, find_blocks
from nncompress.graph.ir import Graph, TensorRef
from nncompress.graph.ops import OpKind
from nncompress.graph.regions import region_between
from nncompress.log import logger
from nncompress.memory import release_free_memory
from nncompress.progress import ProgressSteps
from nncompress.statistics import batches
from nncompress.statistics.runner import NonFiniteTally, _check_some_finite, calibration_items, require_several_passes

REFUSED = (UnsupportedModelError, NotImplementedError)  # a backend that cannot run a block (or run it so)


@dataclass
class _Block:
    """A block with its layers and the tensors to fetch."""

    block: Block
    layers: list[WeightLayer]
    fetch: tuple[TensorRef, ...]


def data_layer(layer: WeightLayer, options: WeightCompressionOptions) -> bool:
    """Whether ``layer`` reads activation statistics (any data-aware method may apply to it)."""
    return layer.activation is not None and layer.ratio_defining and layer.kind is OpKind.LINEAR


def plan_blocks(graph: Graph, layers: list[WeightLayer], options: WeightCompressionOptions) -> list[_Block] | None:
    """The blocks up to the last one holding a layer that needs statistics; None when the model has none
    or some such layer lies outside every block."""
    if not graph.has_dataflow:
        return None
    blocks = find_blocks(graph)
    if not _repeats(graph, blocks):
        return None
    by_node = {layer.node: layer for layer in layers}
    planned = []
    for block in blocks:
        mine = [by_node[name] for name in block.linears if name in by_node]
        fetch = tuple(dict.fromkeys(layer.activation for layer in mine if data_layer(layer, options)))
        planned.append(_Block(block, mine, fetch))
    needing = [k for k, item in enumerate(planned) if item.fetch]
    covered = {layer.node for item in planned for layer in item.layers}
    if not needing or any(data_layer(layer, options) and layer.node not in covered for layer in layers):
        return None
    return planned[: needing[-1] + 1]


def _repeats(graph: Graph, blocks: list[Block]) -> bool:
    """Whether two blocks hold Linear layers of the same shapes (transformer layers). Models without such
    repetition keep whole-model statistics: their blocks are single layers, which not every backend can run
    alone (a PyTorch region must be one module), and results must not depend on the backend."""
    signatures = [tuple(graph.node(n).weight.shape for n in block.linears) for block in blocks if block.linears]
    return len(set(signatures)) < len(signatures)


class BlockwiseCompression:
    """The block-wise pipeline of one ``compress_weights`` call (see the module docstring)."""

    def __init__(self, adapter, model, graph: Graph, blocks: list[_Block], options: WeightCompressionOptions,
                 report: WeightCompressionReport, read):
        self.adapter, self.model, self.graph, self.blocks = adapter, model, graph, blocks
        self.options, self.report, self.read = options, report, read
        self.needs, self.samples = data_aware._needs(options)
        self.stream: list[np.ndarray | dict] = []  # per item: the current block's stream input
        self.shared: list[dict[TensorRef, np.ndarray]] = []  # per item: values every block reads alike
        self.multiplies: list = []
        self.awq_patterns: dict[str, int] = {}
        self.nonfinite = NonFiniteTally()  # non-finite values of the captured and fetched tensors
        self.fallen: int | None = None  # the first block compressed with whole-model statistics
        self.whole: dict[str, ActivationStats] = {}  # their statistics by layer node

    @property
    def compressed_stream(self) -> bool:
        """Whether a block's inputs come from the compressed blocks before it (GPTQ) or the float ones."""
        return self.options.gptq

    # ------------------------------------------------------------------ running blocks

    def _runner(self, item: _Block, fetch, outputs: bool = True):
        """The block's runner; without ``outputs`` it computes the fetched tensors only (GPTQ's float runs)."""
        region = region_between(self.graph, item.block.inputs, item.block.outputs, name=item.block.nodes[-1])
        runner = self.adapter.region_runner(self.model, region, fetch, outputs=outputs)
        if self.shared:
            self._complete(runner, item)
        return runner

    def _complete(self, runner, item: _Block) -> None:
        """Collect the values a block reads that the first block's capture did not give (another mask or
        shape value), in one more run of the model over the calibration items."""
        known = set(self.shared[0]) | {item.block.input}
        missing = [t for t in (*runner.region.inputs, *runner.context) if t not in known]
        if not missing:
            return
        values: list[dict] = []
        items = calibration_items(self.options.dataset, len(self.shared))
        self.adapter.collect(self.model, missing, items, values.append)
        for shared, extra in zip(self.shared, values):
            shared.update(extra)

    def _second_block_values(self, runner) -> tuple[TensorRef, ...]:
        """What the second block reads beyond the first one's inputs and context (another mask or shape
        value): read in the capture's runs where the backend can, instead of one more run of the model."""
        if len(self.blocks) < 2:
            return ()
        try:
            other = self._runner(self.blocks[1], ())  # before the capture: nothing to complete yet
        except REFUSED:  # the block falls back when its turn comes (``_measure``)
            return ()
        known = {*runner.region.inputs, *runner.context, self.blocks[1].block.input}
        return tuple(dict.fromkeys(t for t in (*other.region.inputs, *other.context) if t not in known))

    def capture(self) -> None:
        """The first block's inputs (and the shared values) for every calibration item."""
        first = self.blocks[0]
        runner = self._runner(first, ())
        key = first.block.input
        items = calibration_items(self.options.dataset, self.samples)

        def on_item(values: dict[TensorRef, np.ndarray]) -> None:
            for tensor, value in values.items():
                if tensor in first.block.inputs:
                    self.nonfinite.update(len(self.stream), tensor, value)
            self.stream.append(values.get(key) if key is not None else None)
            self.shared.append({t: v for t, v in values.items() if t != key})

        self.adapter.region_inputs(self.model, runner, items, on_item, self._second_block_values(runner))
        if not self.stream:
            raise CalibrationError("the calibration dataset yielded no items; give at least one model input")
        self.report.calibration_items = len(self.stream)
        _check_some_finite(self.nonfinite, len(self.stream))

    def _values(self, item: _Block, index: int) -> dict[TensorRef, np.ndarray]:
        values = dict(self.shared[index])
        if item.block.input is not None:
            values[item.block.input] = self.stream[index]
        return values

    def _run(self, runner, item: _Block, constants, collectors: dict[TensorRef, list], keep_output: bool) -> None:
        """Run the block on every item: fetched tensors to ``collectors``; the output replaces the stream."""
        output = item.block.outputs[0] if item.block.outputs else None
        if constants:  # the compressed pass: what AWQ and GPTQ freed since the last run, before it grows the heap
            release_free_memory()  # (a float run follows the end-of-block trim: nothing to give back, 7 ms saved)
        batching = batches.Batching()
        stream = item.block.input

        def values_of(index: int) -> dict[TensorRef, np.ndarray]:
            return self._values(item, index)

        for indices in batches.groups(len(self.stream), values_of, stream):
            for index, result in batches.results(runner, values_of, stream, indices, constants, batching):
                for tensor, targets in collectors.items():
                    self.nonfinite.update(index, tensor, result[tensor])
                    for target in targets:
                        target.update(result[tensor])
                if keep_output:
                    self.stream[index] = result[output]
        release_free_memory()  # the run's freed activations: glibc keeps ~350 MB of them otherwise (SmolLM2)

    # ------------------------------------------------------------------ passes

    def rank(self, layers: list[WeightLayer], steps) -> list[WeightLayer]:
        """Mixed precision with a data-aware metric: a float pass collecting the metric's scalars."""
        needs = StatsNeeds(metrics=frozenset([self.options.sensitivity_metric]))
        stream = list(self.stream)
        stats: dict[str, ActivationStats] = {}
        for k, item in enumerate(self.blocks):
            steps.step(f"Mixed precision statistics (block {k + 1}/{len(self.blocks)})")
            collected = {t: ActivationStats(needs, self.samples) for t in item.fetch}
            try:
                more = k + 1 < len(self.blocks)
                runner = self._runner(item, item.fetch, outputs=more or not item.fetch)
                self._run(runner, item, None, {t: [s] for t, s in collected.items()}, more)
            except REFUSED as error:  # the compression pass reuses these statistics from block k on
                self.stream = []
                self._fall_back(k, error, f"block {k + 1} could not run on its own")
                stats.update(self.whole)
                break
            stats.update((layer.node, collected[layer.activation]) for layer in item.layers
                         if layer.activation in collected)
        self.stream = stream
        ranked, note = assign_mixed_precision(layers, self.options, self.read, lambda layer: stats.get(layer.node))
        self.report.notes.append(note)
        self.set_layers(ranked)
        return ranked

    def set_layers(self, layers: list[WeightLayer]) -> None:
        """Use ``layers`` (new records after mixed precision) in the blocks."""
        by_node = {layer.node: layer for layer in layers}
        for item in self.blocks:
            item.layers = [by_node[layer.node] for layer in item.layers]

    def edits(self, compressor: LayerCompressor, steps) -> Iterator:
        """Compress the blocks in order, yielding each layer's edits as it is compressed."""
        needing = [k for k, item in enumerate(self.blocks) if self._data(item)]
        for k, item in enumerate(self.blocks):
            if not needing or k > needing[-1]:  # nothing after this reads statistics: no more runs
                for layer in item.layers:
                    yield from compressor.edits(compressor.compress(LayerJob(layer), AWQPlan()))
                continue
            last = k == needing[-1]
            by_node, samples, runner = self._measure(k, item, last, steps)
            awq = AWQPlan()
            if self.options.awq:
                steps.step(f"Block {k + 1}/{len(self.blocks)}: AWQ")
                awq = plan_awq(self.graph, item.layers, self.read, by_node, self.options.advanced.awq_params)
                self.multiplies += awq.multiplies
                for pattern, count in awq.patterns.items():
                    self.awq_patterns[pattern] = self.awq_patterns.get(pattern, 0) + count
            steps.step(f"Block {k + 1}/{len(self.blocks)}: {self._methods()}")
            compressor.factors = GPTQFactors()  # factorizations of this block's Hessians only
            # with GPTQ: the next block's inputs, unless whole-model statistics serve it (``rank`` found so)
            advance = self.compressed_stream and not last and runner is not None and self.fallen != k + 1
            if runner is not None and (not advance or runner.fetch):
                runner = None  # not run again: its session and memory pool go before the layers' work
            constants = {}
            for layer in item.layers:
                original = self.read(layer) if layer.activation in samples else None
                job = compressor.compress(LayerJob(layer, by_node.get(layer.node)), awq)
                yield from compressor.edits(job)
                if advance:
                    constants[(layer.node, layer.weight.port)] = effective_weight(job, awq)
                if original is not None:
                    self._errors(job, original, samples[layer.activation].matrix(), awq)
                del job, original
            if advance:
                steps.step(f"Block {k + 1}/{len(self.blocks)}: compressed outputs")
                self._advance(k, item, runner, constants)
            del runner, by_node, samples, constants
            if last:  # no block reads the cached activations again (the layers outside the blocks come next)
                self._free_stream()
            release_free_memory()  # the block's activations and temporaries: back to the system

    def _measure(self, k: int, item: _Block, last: bool, steps) -> tuple[dict, dict, object]:
        """Block ``k``'s statistics by layer node, token samples by tensor and runner, from a run with its
        float weights; from the whole-model statistics (no samples, no runner) once a block could not run."""
        if self.fallen is None or k < self.fallen:
            data = self._data(item)
            fetch = tuple(dict.fromkeys(layer.activation for layer in data))
            steps.step(f"Block {k + 1}/{len(self.blocks)}: statistics")
            stats = {t: ActivationStats(self.needs, self.samples) for t in fetch}
            samples = {t: TokenSample(SAMPLE_ROWS, len(self.stream)) for t in fetch}
            keep = not (last or self.compressed_stream)  # the float outputs are the next block's inputs
            try:
                runner = self._runner(item, fetch, outputs=keep or not fetch)  # fetching nothing: runs compressed
                if fetch or keep:
                    collectors = {t: [stats[t], samples[t]] for t in fetch}
                    self._run(runner, item, None, collectors, keep)
            except REFUSED as error:
                del stats, samples
                self._free_stream()
                self._fall_back(k, error, f"block {k + 1} could not run on its own")
            else:
                _check_some_finite(self.nonfinite, len(self.stream))
                data_aware._check_tokens(stats, self.report)
                return {layer.node: stats[layer.activation] for layer in data}, samples, runner
        steps.step(f"Block {k + 1}/{len(self.blocks)}: whole-model statistics")
        self._free_stream()  # a fall-back found by ``rank``: the blocks before it are done
        return {layer.node: self.whole[layer.node] for layer in self._data(item)}, {}, None

    def _advance(self, k: int, item: _Block, runner, constants: dict) -> None:
        """The next block's inputs: block ``k`` run with its compressed weights (``constants``); ``runner``:
        the statistics run's when it fetches nothing, else None (a runner without fetches is made)."""
        try:
            runner = self._runner(item, ()) if runner is None else runner  # fetches nothing: no copies of inputs
            self._run(runner, item, {key: value for key, value in constants.items() if value is not None}, {}, True)
        except REFUSED as error:
            self._free_stream()
            self._fall_back(k + 1, error, f"block {k + 1} could not run with its compressed weights")

    def _free_stream(self) -> None:
        if self.stream:
            self.stream, self.shared = [], []
            release_free_memory()

    def _fall_back(self, first: int, error: Exception, what: str) -> None:
        """Statistics of the data-aware layers of blocks ``first``.. from one whole-model run of the float
        model (the user's model: edits go to the backend's copy), after a block could not run."""
        blocks = f"block {first + 1}" if first + 1 == len(self.blocks) else f"blocks {first + 1} to {len(self.blocks)}"
        require_several_passes(self.options.dataset, f"{what} in the block-wise pipeline ({error}), so {blocks} "
                                                     "need statistics from a whole-model pass")
        layers = [layer for item in self.blocks[first:] for layer in item.layers if data_layer(layer, self.options)]
        started = time.perf_counter()
        self.whole = data_aware.collect_statistics(self.adapter, self.model, layers, self.options, self.report)
        skipped, self.report.nonfinite = self.report.nonfinite, None  # the block runs' tally is the report's
        self.report.timings["statistics"] = self.report.timings.get("statistics", 0.0) + time.perf_counter() - started
        self.fallen = first
        inputs = ("; with GPTQ their inputs are the float model's, no longer those of the compressed blocks "
                  "before them" if self.options.gptq else "")
        note = (f"block-wise: {what} ({type(error).__name__}: {error}); {blocks} compressed with statistics "
                f"from a whole-model run of the float model{inputs}")
        self.report.notes.append(note)
        logger.warning("%s", note)
        if skipped is not None:
            self.report.notes.append(f"whole-model statistics of {blocks}: {skipped}")

    def _data(self, item: _Block) -> list[WeightLayer]:
        """The block's layers that read statistics (after mixed precision: the primary-precision ones)."""
        return [layer for layer in item.layers if data_layer(layer, self.options) and layer.config.is_primary_low_bit]

    def _methods(self) -> str:
        options = self.options
        names = [n for on, n in ((options.scale_estimation, "scale estimation"), (options.gptq, "GPTQ"),
                                 (options.lora_correction, "LoRA correction")) if on]
        return " + ".join(names) or "compression"

    def _errors(self, job: LayerJob, original: np.ndarray, x: np.ndarray, awq: AWQPlan) -> None:
        """The report's output errors of one layer: round to nearest vs what the pipeline produced."""
        if job.compressed is not None and len(x):
            before, after = output_errors(job, original, x, awq)
            self.report.add_layer_detail(job.layer.node, algorithms(job, self.options), job.layer.config.describe(),
                                         before, after)


def prepare(adapter, model, graph: Graph, layers: list[WeightLayer], options: WeightCompressionOptions,
            report: WeightCompressionReport, read) -> tuple[BlockwiseCompression | None, str]:
    """The pipeline with the first block's inputs captured, or (None, why the whole-model path runs)."""
    if options.advanced.statistics_path is not None:
        return None, "statistics_path is set: statistics of the whole model are cached and reused"
    if not hasattr(adapter, "region_runner"):
        return None, f"the {adapter.capabilities.name} backend has no region runner"
    blocks = plan_blocks(graph, layers, options)
    if blocks is None:
        return None, "no repeated blocks holding every data-aware layer were found in the graph"
    pipeline = BlockwiseCompression(adapter, model, graph, blocks, options, report, read)
    started = time.perf_counter()
    try:
        pipeline.capture()
    except (UnsupportedModelError, NotImplementedError) as error:
        return None, f"the first block cannot run on its own ({error})"
    report.timings["statistics"] = time.perf_counter() - started
    return pipeline, ""


def run(pipeline: BlockwiseCompression, layers: list[WeightLayer], compressor_factory) -> Iterator:
    """Every edit: the blocks in order, then the layers outside them, then AWQ's multiplies.
    ``compressor_factory(layers)`` makes the ``LayerCompressor`` once the precisions are final."""
    options, report = pipeline.options, pipeline.report
    blocks = pipeline.blocks
    total = len(blocks) * (4 if options.awq else 3) + (len(blocks) if options.data_aware_mixed_precision else 0)
    with ProgressSteps(total, "Weight compression") as steps:
        if options.data_aware_mixed_precision:
            layers = pipeline.rank(layers, steps)
        compressor = compressor_factory(layers)
        yield from pipeline.edits(compressor, steps)
    inside = {layer.node for item in blocks for layer in item.layers}
    rest = [LayerJob(layer) for layer in layers if layer.node not in inside]
    for job in rest:
        yield from compressor.edits(compressor.compress(job, AWQPlan()))
    yield from pipeline.multiplies
    _check_some_finite(pipeline.nonfinite, report.calibration_items)
    report.nonfinite = pipeline.nonfinite.summary()
    if report.nonfinite is not None:
        logger.warning("%s", report.nonfinite)
    if options.awq:
        report.notes.append(awq_summary(layers, pipeline.awq_patterns))
    stream = "compressed" if pipeline.compressed_stream else "float"
    ran = f"{pipeline.fallen} of {len(blocks)}" if pipeline.fallen is not None else f"{len(blocks)}"
    report.notes.append(
        f"block-wise: {ran} blocks run on {report.calibration_items} cached calibration items "
        f"(inputs of each block from the {stream} blocks before it); {len(rest)} weights outside them "
        "compressed without statistics"
    )
