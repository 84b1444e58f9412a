"""Bias correction: restore each layer's mean output after its weights are quantized.

Fast (default): the mean shift a layer's weight error causes is (W - W_q) applied to the layer's
mean input, computed exactly from the weights and the input's per-channel mean (no extra inference).
Full: measure per-channel output means of the weight-quantized model on calibration data and move
each bias by the gap to the float model, layer after layer so upstream corrections are accounted for.
"""

from __future__ import annotations

import numpy as np

from nncompress.errors import UnsupportedModelError
from nncompress.graph.edits import SetConstant
from nncompress.graph.ir import Graph, Node, TensorRef, WeightInfo
from nncompress.graph.ops import OpKind, activation_channel_axis
from nncompress.graph.regions import region_from_nodes
from nncompress.log import logger
from nncompress.numerics.qparams import fake_quantize
from nncompress.progress import progress_iter
from nncompress.statistics import batches
from nncompress.statistics.collectors import MeanCollector
from nncompress.statistics.runner import StatisticsPlan

FAST_THRESHOLD = 2.0
FULL_THRESHOLD = 1000.0
NO_FINITE_INPUT = "bias correction: an input channel had no finite calibration value (all NaN/Inf)"
NO_FINITE_OUTPUT = "bias correction: an output channel had no finite calibration value (all NaN/Inf)"


def weight_error_shift(delta: np.ndarray, info: WeightInfo, input_mean: np.ndarray) -> np.ndarray:
    """Per-output-channel mean shift of ``delta`` (weight error) applied to a constant input."""
    dw = np.moveaxis(delta, (info.out_axis, info.in_axis), (0, 1))
    dw = dw.reshape(dw.shape[0], dw.shape[1], -1).sum(axis=2, dtype=np.float64)
    out_ch, in_per_group = dw.shape
    groups = info.groups
    if groups == 1:
        return (dw @ input_mean.astype(np.float64)).astype(np.float32)
    x = input_mean.astype(np.float64).reshape(groups, in_per_group)
    per_group = dw.reshape(groups, out_ch // groups, in_per_group)
    return np.einsum("goi,gi->go", per_group, x).reshape(out_ch).astype(np.float32)


def _within_threshold(shift: np.ndarray, bias: np.ndarray, threshold: float) -> bool:
    with np.errstate(divide="ignore", invalid="ignore"):
        magnitude = np.max(np.abs(shift / bias)) if bias.size else np.inf
    return bool(np.isfinite(magnitude) and magnitude < threshold)


class FastBiasCorrection:
    """Analytic bias correction of every weight-quantized layer that has a bias."""

    def __init__(self, graph: Graph, weight_nodes: list[str], threshold: float | None = None):
        self.graph = graph
        self.nodes = [graph.node(n) for n in weight_nodes if graph.node(n).bias is not None]
        self.threshold = FAST_THRESHOLD if threshold is None else threshold
        self._means: dict[str, MeanCollector] = {}

    def register(self, plan: StatisticsPlan) -> None:
        for node in self.nodes:
            tensor = node.inputs[node.activation_ports()[0]]
            self._means[node.name] = plan.add(tensor, MeanCollector(activation_channel_axis(node.kind)))

    def edits(self, adapter, model, weight_params: dict) -> tuple[list[SetConstant], dict[str, str]]:
        """Bias updates, and {node: reason} for layers left as they were."""
        edits, skipped = [], {}
        for node in self.nodes:
            if node.name not in weight_params:  # its weights stay float: nothing to correct
                continue
            reason = self._correct(node, adapter, model, weight_params[node.name], edits)
            if reason:
                skipped[node.name] = reason
        return edits, skipped

    def _correct(self, node: Node, adapter, model, params, edits: list) -> str | None:
        weight = adapter.get_constant(model, node.name, node.weight.port)
        delta = weight - fake_quantize(weight, params)
        mean = self._means[node.name].mean()
        if not np.all(np.isfinite(mean)):
            return NO_FINITE_INPUT
        try:
            shift = weight_error_shift(delta, node.weight, mean)
        except ValueError:
            return "bias correction: weight layout does not match the input channels"
        bias = adapter.get_constant(model, node.bias.node, node.bias.port)
        if shift.size != bias.size:
            return "bias correction: bias is not per output channel"
        if not _within_threshold(shift, bias.reshape(-1), self.threshold):
            return "bias correction: shift exceeds the threshold relative to the bias"
        edits.append(SetConstant(node.bias.node, node.bias.port, (bias + shift.reshape(bias.shape)).astype(np.float32)))
        return None


class _FirstItems:
    """Pass only the first ``limit`` values on to ``inner``."""

    def __init__(self, inner, limit: int):
        self.inner, self.limit, self.seen = inner, limit, 0

    def update(self, value) -> None:
        if self.seen < self.limit:
            self.inner.update(value)
        self.seen += 1


class BiasCorrection:
    """Measured bias correction on a subset of ``subset_size`` calibration items.

    Each layer is measured once every biased layer upstream of it has its final bias, so each
    correction sees the corrected outputs of the layers before it. Where the backend runs regions
    (``Adapter.region_runner``), one sequential pass does it (``_RegionPass``): the graph is cut after
    each biased layer's output and each piece runs once per item on the cached quantized-model tensors
    that cross the cut. Otherwise (a PyTorch region that is no module's scope) the layers are corrected
    in waves, one whole-model statistics pass per wave (a chain network takes one pass per layer).
    """

    def __init__(self, graph: Graph, weight_nodes: list[str], subset_size: int, threshold: float | None = None):
        self.graph = graph
        self.nodes = [graph.node(n) for n in weight_nodes if graph.node(n).bias is not None]
        self.subset_size = subset_size
        self.threshold = FULL_THRESHOLD if threshold is None else threshold
        self._float_means: dict[str, MeanCollector] = {}

    def register(self, plan: StatisticsPlan) -> None:
        for node in self.nodes:
            collector = MeanCollector(activation_channel_axis(node.kind))
            plan.add(node.bias.output, _FirstItems(collector, self.subset_size))
            self._float_means[node.name] = collector

    def edits(self, adapter, model, weight_edits: list, dataset) -> tuple[list[SetConstant], dict[str, str]]:
        """Bias updates measured on the model with only ``weight_edits`` applied."""
        if hasattr(adapter, "region_runner") and all(n.bias.output.node == n.bias.node for n in self.nodes):
            try:
                return _RegionPass(self, adapter, model, weight_edits).edits(dataset)
            except UnsupportedModelError as exc:
                logger.info("bias correction: regions cannot run on their own (%s); correcting in waves", exc)
        return self._edits_in_waves(adapter, model, weight_edits, dataset)

    def _edits_in_waves(self, adapter, model, weight_edits: list, dataset):
        biases = {n.name: adapter.get_constant(model, n.bias.node, n.bias.port) for n in self.nodes}
        upstream = self._biased_ancestors()
        done: set[str] = set()
        skipped: dict[str, str] = {}
        wave = 0
        while len(done) < len(self.nodes):
            ready = [n for n in self.nodes if n.name not in done and upstream[n.name] <= done]
            wave += 1
            measured = self._measure(adapter, model, weight_edits, biases, ready, dataset, wave)
            for node in ready:
                shift = self._float_means[node.name].mean() - measured[node.name]
                bias = biases[node.name]
                if not np.all(np.isfinite(shift)):
                    skipped[node.name] = NO_FINITE_OUTPUT
                elif shift.size == bias.size and _within_threshold(shift, bias.reshape(-1), self.threshold):
                    biases[node.name] = (bias + shift.reshape(bias.shape)).astype(np.float32)
                else:
                    skipped[node.name] = "bias correction: shift exceeds the threshold relative to the bias"
                done.add(node.name)
        return self._bias_edits({k: v for k, v in biases.items() if k not in skipped}), skipped

    def _measure(self, adapter, model, weight_edits, biases, ready, dataset, wave: int) -> dict[str, np.ndarray]:
        from nncompress.statistics.runner import run_statistics

        current = adapter.apply(model, weight_edits + self._bias_edits(biases))
        plan = StatisticsPlan()
        means = {n.name: plan.add(n.bias.output, MeanCollector(activation_channel_axis(n.kind))) for n in ready}
        run_statistics(adapter, current, plan, dataset, self.subset_size, f"Bias correction, wave {wave}")
        return {name: collector.mean() for name, collector in means.items()}

    def _biased_ancestors(self) -> dict[str, set[str]]:
        """For each corrected layer, the corrected layers whose outputs reach it."""
        biased = {n.name for n in self.nodes}
        result = {}
        for node in self.nodes:
            seen, stack = set(), [p.name for p in self.graph.predecessors(node.name)]
            while stack:
                name = stack.pop()
                if name not in seen:
                    seen.add(name)
                    stack.extend(p.name for p in self.graph.predecessors(name))
            result[node.name] = seen & biased
        return result

    def _bias_edits(self, biases: dict[str, np.ndarray]) -> list[SetConstant]:
        nodes = {n.name: n for n in self.nodes}
        return [SetConstant(nodes[k].bias.node, nodes[k].bias.port, v) for k, v in biases.items()]

    def shift_for(self, node: Node, measured: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray | None, str | None]:
        """The bias shift of ``node`` given its measured mean output, or (None, reason it is kept)."""
        shift = self._float_means[node.name].mean() - measured
        if not np.all(np.isfinite(shift)):
            return None, NO_FINITE_OUTPUT
        if shift.size == bias.size and _within_threshold(shift, bias.reshape(-1), self.threshold):
            return shift, None
        return None, "bias correction: shift exceeds the threshold relative to the bias"


class _RegionPass:
    """One sequential pass of bias correction over regions (see ``BiasCorrection``).

    The graph's nodes, in order, are cut right after each corrected layer's biased output. Tensors that
    cross a cut are cached per calibration item (quantized model); each piece runs once per item with
    the quantized weights fixed in its runner, the layer's mean output gives its bias shift, and the
    cached output is moved by that shift (exactly what the corrected bias computes) before the next
    piece reads it. The model is never rebuilt and runs whole once, up to the first quantized weight
    (for the tensors crossing there and the context values the pieces read).
    """

    def __init__(self, owner: BiasCorrection, adapter, model, weight_edits: list):
        self.owner, self.adapter, self.model = owner, adapter, model
        self.graph = owner.graph
        self.weights: dict[str, list] = {}
        for edit in weight_edits:
            self.weights.setdefault(edit.node, []).append(edit)
        self.order = [n.name for n in self.graph if n.kind not in (OpKind.INPUT, OpKind.OUTPUT)]
        self.position = {name: i for i, name in enumerate(self.order)}
        self.cuts = sorted(((self.position[n.bias.node], n) for n in owner.nodes), key=lambda cut: cut[0])
        self.last_use: dict[TensorRef, int] = {}
        for name in self.order:
            for tensor in self.graph.node(name).inputs:
                if tensor is not None:
                    self.last_use[tensor] = max(self.last_use.get(tensor, -1), self.position[name])

    def _constants(self, nodes: list[str]) -> dict[tuple[str, int], np.ndarray]:
        constants = {}
        for name in nodes:
            for edit in self.weights.get(name, ()):
                weight = self.adapter.get_constant(self.model, edit.node, edit.port)
                constants[(edit.node, edit.port)] = fake_quantize(weight, edit.params)
        return constants

    def _crossing(self, produced_before: int, read_from: int) -> list[TensorRef]:
        """Tensors produced before position ``produced_before`` (or model inputs) read at ``read_from`` or later."""
        return [
            t
            for t, last in self.last_use.items()
            if last >= read_from and self.position.get(t.node, -1) < produced_before
        ]

    def _pieces(self, start: int) -> list[tuple[int, Node, list[TensorRef], object]]:
        """(last position, corrected node, outputs, runner) of each piece, runners made with quantized weights."""
        pieces, begin = [], start
        for end, node in self.cuts:
            names = self.order[begin : end + 1]
            crossing = [t for t in self._crossing(end + 1, end + 1) if begin <= self.position.get(t.node, -1) <= end]
            outputs = [node.bias.output] + [t for t in crossing if t != node.bias.output]
            region = region_from_nodes(self.graph, names, outputs, name=f"bias correction up to {node.name}")
            pieces.append(
                (end, node, outputs, self.adapter.region_runner(self.model, region, constants=self._constants(names)))
            )
            begin = end + 1
        return pieces

    def edits(self, dataset) -> tuple[list[SetConstant], dict[str, str]]:
        from nncompress.statistics.runner import calibration_items

        start = min((self.position[n] for n in self.weights if n in self.position), default=0)
        start = min(start, self.cuts[0][0]) if self.cuts else start
        pieces = self._pieces(start)
        boundary = self._crossing(start, start)
        wanted = list(dict.fromkeys(boundary + [t for *_, runner in pieces for t in runner.context]))
        cache: dict[TensorRef, list[np.ndarray]] = {t: [] for t in wanted}

        def keep(values: dict[TensorRef, np.ndarray]) -> None:
            for tensor in wanted:
                cache[tensor].append(values[tensor])

        self.adapter.collect(self.model, wanted, calibration_items(dataset, self.owner.subset_size), keep)
        self.count = len(cache[wanted[0]]) if wanted else 0
        biases: dict[str, np.ndarray] = {}
        skipped: dict[str, str] = {}
        for i in progress_iter(range(len(pieces)), total=len(pieces), label="Bias correction"):
            end, node, outputs, runner = pieces[i]
            pieces[i] = None  # the runner is released once its piece has run
            self._run_piece(cache, end, node, outputs, runner, biases, skipped)
        return self.owner._bias_edits(biases), skipped

    def _run_piece(self, cache, end: int, node: Node, outputs, runner, biases: dict, skipped: dict) -> None:
        produced: dict[TensorRef, list[np.ndarray]] = {t: [] for t in outputs}
        axis = activation_channel_axis(node.kind)
        mean = MeanCollector(axis)
        reads = list(runner.region.inputs) + list(runner.context)
        stream = runner.region.inputs[0] if runner.region.inputs else None
        batching = batches.Batching()

        def values_of(index: int) -> dict[TensorRef, np.ndarray]:
            return {t: cache[t][index] for t in reads}

        for indices in batches.groups(self.count, values_of, stream):
            for _, result in batches.results(runner, values_of, stream, indices, None, batching):
                for tensor in outputs:
                    produced[tensor].append(result[tensor])
                mean.update_finite(result[node.bias.output])
        bias = self.adapter.get_constant(self.model, node.bias.node, node.bias.port)
        shift, reason = self.owner.shift_for(node, mean.mean(), bias)
        if reason is not None:
            skipped[node.name] = reason
        else:
            biases[node.name] = (bias + shift.reshape(bias.shape)).astype(np.float32)
            for value in produced[node.bias.output]:
                shape = [1] * value.ndim
                shape[axis] = -1
                value += shift.reshape(shape).astype(value.dtype)
        for tensor in [t for t in cache if self.last_use.get(t, -1) <= end and t in self.last_use]:
            del cache[tensor]
        cache.update(produced)
