"""Bias correction: restore each layer's mean output after its weights are quantized.

Fast (default): the mean shift a layer's weight error causes is (W - W_q) applied to the layer's
mean input, computed exactly from the weights and the input's per-channel mean (no extra inference).
Full: measure per-channel output means of the weight-quantized model on calibration data and move
each bias by the gap to the float model, layer after layer so upstream corrections are accounted for.
"""

from __future__ import annotations

import numpy as np

from nncompress.graph.edits import SetConstant
from nncompress.graph.ir import Graph, Node, WeightInfo
from nncompress.graph.ops import activation_channel_axis
from nncompress.numerics.qparams import fake_quantize
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

    Layers are corrected in waves: a layer is measured once every biased layer upstream of it has
    its final bias, so each correction sees the corrected outputs of the layers before it (one
    statistics pass per wave; a chain network takes one pass per layer).
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
