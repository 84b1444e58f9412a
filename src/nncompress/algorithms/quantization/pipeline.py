"""Post-training quantization: SmoothQuant step, then MinMax + bias correction sharing one pass."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from nncompress.algorithms.checks import check_finite_weight
from nncompress.algorithms.quantization.bias_correction import BiasCorrection, FastBiasCorrection
from nncompress.algorithms.quantization.fp8 import fake_convert_edits
from nncompress.algorithms.quantization.min_max import MinMaxOptions, MinMaxQuantization, quantizer_edits
from nncompress.algorithms.quantization.placement import PlacementOptions, QuantizationSetup, find_quantization_setup
from nncompress.algorithms.quantization.smooth_quant import SmoothQuant
from nncompress.graph.edits import QuantizeWeight
from nncompress.graph.ir import Graph
from nncompress.hardware.rules import ASYM, SYM, rules_for_device
from nncompress.parameters import (
    AdvancedQuantizationParameters,
    OverflowFix,
    QuantizationPreset,
    QuantizerPropagationRule,
    RangeEstimatorParameters,
    TargetDevice,
)
from nncompress.report import CompressionReport
from nncompress.scopes import IgnoredScope, match_ignored_scope
from nncompress.statistics.runner import StatisticsPlan, report_nonfinite, require_several_passes, run_statistics


@dataclass
class PTQOptions:
    preset: QuantizationPreset | None = None
    target_device: TargetDevice = TargetDevice.ANY
    subset_size: int = 300
    fast_bias_correction: bool = True
    transformer: bool = False
    ignored_scope: IgnoredScope | None = None
    advanced: AdvancedQuantizationParameters = field(default_factory=AdvancedQuantizationParameters)
    batchwise: bool = False
    fp8: tuple[str, str] | None = None  # FP8 mode: (activation, weight) formats, 'f8e4m3' / 'f8e5m2'


@dataclass
class PTQResult:
    """The quantized model plus what produced it (accuracy control re-applies subsets of ``edits``)."""

    model: Any
    report: CompressionReport
    base_model: Any  # the model the edits apply to (after SmoothQuant)
    graph: Graph
    setup: QuantizationSetup
    edits: list


def run_ptq(adapter, model, dataset, options: PTQOptions) -> PTQResult:
    """Quantize ``model``."""
    report = CompressionReport(backend=adapter.capabilities.name, algorithm="PostTrainingQuantization")
    graph = adapter.build_graph(model)
    ignored = {k: f"ignored scope: {v}" for k, v in match_ignored_scope(options.ignored_scope, graph).items()}
    start = time.perf_counter()
    model, graph = _smooth_quant(adapter, model, graph, dataset, ignored, options, report)
    setup = find_quantization_setup(graph, ignored, _placement_options(options, adapter.capabilities))
    minmax = MinMaxQuantization(setup, _minmax_options(options))
    plan = StatisticsPlan()
    minmax.register(plan)
    bias = None if options.fp8 else _bias_algorithm(graph, setup, options)
    if bias is not None:
        bias.register(plan)
    weight_params = _weight_params(adapter, model, setup, minmax)  # before the pass: bad weights fail fast
    if isinstance(bias, BiasCorrection) and bias.nodes:
        require_several_passes(
            dataset, "quantize with fast_bias_correction=False makes one more statistics pass per wave of "
            "corrected layers after the quantization statistics pass",
        )
    report.calibration_items = run_statistics(adapter, model, plan, dataset, options.subset_size, "Statistics")
    report_nonfinite(plan, report)
    act_params = minmax.activation_params()
    edits = quantizer_edits(setup, act_params, weight_params)
    if options.fp8:
        edits = fake_convert_edits(edits, *options.fp8)
        report.notes.append(
            f"FP8 quantization: activations {options.fp8[0]}, weights {options.fp8[1]} (FakeConvert); "
            "bias correction is not applied in FP8 mode"
        )
    if bias is not None:
        bias_edits, skipped = _bias_edits(bias, adapter, model, weight_params, edits, dataset)
        report.notes.append(
            f"bias correction ({type(bias).__name__}) updated {len(bias_edits)} biases"
            + (f"; kept {len(skipped)}: {', '.join(sorted(skipped))}" if skipped else "")
        )
        edits += bias_edits
    result = adapter.apply(model, edits)
    _fill_report(report, setup, act_params, weight_params, options.fp8)
    report.timings["quantize"] = time.perf_counter() - start
    return PTQResult(result, report, model, graph, setup, edits)


def _smooth_quant(adapter, model, graph, dataset, ignored, options: PTQOptions, report):
    alphas = options.advanced.smooth_quant_alphas
    matmul_alpha = alphas.matmul
    if options.advanced.smooth_quant_alpha is not None:
        matmul_alpha = options.advanced.smooth_quant_alpha
    if not options.transformer or (matmul_alpha < 0 and alphas.convolution < 0):
        return model, graph
    sq = SmoothQuant(graph, set(ignored), matmul_alpha, alphas.convolution)
    plan = StatisticsPlan()
    sq.register(plan)
    if plan:
        require_several_passes(
            dataset, "SmoothQuant (model_type=TRANSFORMER) makes its own statistics pass before the quantization "
            "statistics pass (or disable it: smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1, "
            "convolution=-1))",
        )
    run_statistics(adapter, model, plan, dataset, options.subset_size, "SmoothQuant statistics")
    edits = sq.edits(adapter, model)
    if not edits:
        return model, graph
    report.notes.append(f"SmoothQuant rescaled {len(sq.groups)} activation groups")
    model = adapter.apply(model, edits)
    return model, adapter.build_graph(model)


def _placement_options(options: PTQOptions, capabilities) -> PlacementOptions:
    fix = options.advanced.overflow_fix or OverflowFix.FIRST_LAYER
    eight_bit = all(
        p is None or p.num_bits in (None, 8)
        for p in (options.advanced.weights_quantization_params, options.advanced.activations_quantization_params)
    )
    no_merge = options.advanced.quantizer_propagation_rule is QuantizerPropagationRule.DO_NOT_MERGE_BRANCHES
    return PlacementOptions(
        rules=rules_for_device(options.target_device),
        transformer=options.transformer,
        merge_branches=not no_merge,
        quantize_outputs=options.advanced.quantize_outputs,
        overflow_fix_first_layer=eight_bit and fix is OverflowFix.FIRST_LAYER,
        overflow_fix_all=eight_bit and fix is OverflowFix.ENABLE,
        fuse_linear_arithmetic=capabilities.fuse_linear_arithmetic,
        per_channel_activations=capabilities.per_channel_activations,
        cpu_spr=options.target_device is TargetDevice.CPU_SPR,
    )


def _minmax_options(options: PTQOptions) -> MinMaxOptions:
    preset = options.preset
    if preset is None:
        preset = QuantizationPreset.MIXED if options.transformer else QuantizationPreset.PERFORMANCE
    mode = ASYM if preset is QuantizationPreset.MIXED else SYM
    return MinMaxOptions(
        activation_mode=mode,
        batchwise=options.batchwise,
        activations=options.advanced.activations_quantization_params,
        weights=options.advanced.weights_quantization_params,
        activation_ranges=options.advanced.activations_range_estimator_params,
        weight_ranges=_non_default(options.advanced.weights_range_estimator_params),
    )


def _non_default(ranges):
    return None if ranges == RangeEstimatorParameters() else ranges


def _bias_algorithm(graph, setup: QuantizationSetup, options: PTQOptions):
    if options.advanced.disable_bias_correction:
        return None
    nodes = [w.node for w in setup.weights]
    threshold = options.advanced.bias_correction_params.threshold
    if options.fast_bias_correction:
        return FastBiasCorrection(graph, nodes, threshold)
    return BiasCorrection(graph, nodes, max(int(0.2 * options.subset_size), 1), threshold)


def _bias_edits(bias, adapter, model, weight_params, edits, dataset):
    if isinstance(bias, FastBiasCorrection):
        return bias.edits(adapter, model, weight_params)
    weight_edits = [e for e in edits if isinstance(e, QuantizeWeight)]
    bias.nodes = [n for n in bias.nodes if n.name in weight_params]
    return bias.edits(adapter, model, weight_edits, dataset)


def _weight_params(adapter, model, setup: QuantizationSetup, minmax) -> dict:
    """Each quantized weight's parameters; ValidationError for a weight holding NaN or Inf."""
    params = {}
    for w in setup.weights:
        weight = adapter.get_constant(model, w.node, w.port)
        check_finite_weight(weight, w.node)
        params[w.node] = minmax.weight_params(w, weight)
    return params


def _fill_report(report: CompressionReport, setup: QuantizationSetup, act_params, weight_params, fp8=None) -> None:
    for q, p in zip(setup.activations, act_params):
        kind = "per-channel" if p.per_channel else "per-tensor"
        grid = f"{fp8[0]} FakeConvert" if fp8 else f"{'signed' if p.signed else 'unsigned'} {p.levels} levels"
        report.quantized.append((q.name, f"activations {kind} {grid} for {', '.join(q.targets)}"))
    for w in setup.weights:
        p = weight_params[w.node]
        half = " (half range: overflow fix)" if w.half_range else ""
        grid = f"{fp8[1]} FakeConvert" if fp8 else f"{p.levels} levels"
        report.quantized.append((w.name, f"weights per-channel axis {p.axis} {grid}{half}"))
    report.skipped.update(setup.skipped)
