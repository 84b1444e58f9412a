"""``quantize_with_accuracy_control``: INT8 quantization that keeps a validation metric within a budget."""

from __future__ import annotations

import logging
import numbers
import time
from collections.abc import Callable
from typing import Any, TypeVar

from nncompress.algorithms.accuracy_control import (
    ACTIVATIONS_AND_WEIGHTS,
    RESTORE_MODES,
    Evaluator,
    RestorerOptions,
    restore_accuracy,
)
from nncompress.algorithms.accuracy_control.restorer import RestorerOutcome
from nncompress.algorithms.quantization.pipeline import run_ptq
from nncompress.api.quantize import check_first_item, validate_quantize_args
from nncompress.backends.registry import get_adapter
from nncompress.dataset import Dataset
from nncompress.errors import AccuracyDropError, ValidationError, one_of
from nncompress.foreign import adopt
from nncompress.log import warn_once
from nncompress.parameters import (
    AdvancedAccuracyRestorerParameters,
    AdvancedQuantizationParameters,
    DropType,
    ModelType,
    QuantizationPreset,
    TargetDevice,
    coerce_enum,
)
from nncompress.report import CompressionReport, set_last_report
from nncompress.scopes import IgnoredScope

TModel = TypeVar("TModel")
logger = logging.getLogger("nncompress")


def quantize_with_accuracy_control(
    model: TModel,
    calibration_dataset: Dataset,
    validation_dataset: Dataset,
    validation_fn: Callable[[Any, Any], float | tuple[float, Any]],
    *,
    max_drop: float = 0.01,
    drop_type: DropType = DropType.ABSOLUTE,
    preset: QuantizationPreset | None = None,
    target_device: TargetDevice = TargetDevice.ANY,
    subset_size: int = 300,
    fast_bias_correction: bool = True,
    model_type: ModelType | None = None,
    ignored_scope: IgnoredScope | None = None,
    advanced_quantization_parameters: AdvancedQuantizationParameters | None = None,
    advanced_accuracy_restorer_parameters: AdvancedAccuracyRestorerParameters | None = None,
) -> TModel:
    """Quantize ``model`` to INT8, then keep its most harmful operations in float until the metric drop
    (FP32 metric minus INT8 metric, per ``drop_type``) is at most ``max_drop``.

    ``validation_fn(model, data)`` gets a backend-ready model (an ``openvino.CompiledModel``, an
    ``onnx.ModelProto``, a ``torch.nn.Module``) and ``validation_dataset.get_data(...)`` (raw items, re-iterable);
    it returns a metric or ``(metric, per_sample_values)``. Raises ``AccuracyDropError`` (carrying the
    best model) when the budget cannot be reached. The report is available from ``nncompress.last_report()``.
    """
    calibration_dataset = adopt(calibration_dataset, Dataset, "calibration_dataset")
    validation_dataset = adopt(validation_dataset, Dataset, "validation_dataset")
    adapter = get_adapter(model)
    options = validate_quantize_args(
        calibration_dataset, preset=preset, target_device=target_device, subset_size=subset_size,
        fast_bias_correction=fast_bias_correction, model_type=model_type, ignored_scope=ignored_scope,
        advanced=advanced_quantization_parameters,
    )
    restorer = _restorer_options(
        validation_dataset, validation_fn, max_drop=max_drop, drop_type=drop_type, subset_size=subset_size,
        advanced=advanced_accuracy_restorer_parameters,
    )
    adapter = get_adapter(model, example_input=check_first_item(adapter, model, calibration_dataset))
    start = time.perf_counter()
    ptq = run_ptq(adapter, model, calibration_dataset, options)
    evaluator = Evaluator(adapter, validation_fn, validation_dataset)
    outcome = restore_accuracy(adapter, model, ptq, evaluator, restorer)
    report = _report(ptq.report, outcome, evaluator, restorer)
    report.timings["accuracy control"] = time.perf_counter() - start
    set_last_report(report)
    if not outcome.success:
        reverted = outcome.reverted_operations
        raise AccuracyDropError(
            f"could not bring the metric drop within max_drop={restorer.max_drop:g} ({restorer.drop_type.value}): "
            f"the best drop is {outcome.drop:.6g} with{_what(restorer)} {len(reverted)} of {outcome.num_operations} "
            f"operations reverted to float ({outcome.stop_reason}); the best model is the error's best_model",
            best_model=outcome.model, best_drop=outcome.drop, reverted=reverted,
        )
    return outcome.model


def _what(options: RestorerOptions) -> str:
    return "" if options.restore_mode == ACTIVATIONS_AND_WEIGHTS else " the input activations of"


def _restorer_options(
    dataset: Any,
    validation_fn: Any,
    *,
    max_drop: Any = 0.01,
    drop_type: Any = DropType.ABSOLUTE,
    subset_size: int = 300,
    advanced: AdvancedAccuracyRestorerParameters | None = None,
) -> RestorerOptions:
    """Check the accuracy-control arguments and turn them into restorer options."""
    dataset = adopt(dataset, Dataset, "validation_dataset")
    advanced = adopt(advanced, AdvancedAccuracyRestorerParameters, "advanced_accuracy_restorer_parameters")
    if not isinstance(dataset, Dataset):
        raise ValidationError(
            f"validation_dataset must be an nncompress.Dataset; got {type(dataset).__name__}. "
            "Wrap your data: nncompress.Dataset(data_source, transform_fn)"
        )
    dataset.require_reiterable(
        "quantize_with_accuracy_control reads validation_dataset many times (the FP32 model, the INT8 model, "
        "the ranking and every candidate)"
    )
    if not callable(validation_fn):
        raise ValidationError(
            "validation_fn must be callable as validation_fn(model, data) -> metric; "
            f"got {type(validation_fn).__name__}"
        )
    if isinstance(max_drop, bool) or not isinstance(max_drop, numbers.Real) or not max_drop >= 0:
        raise ValidationError(f"max_drop must be a non-negative number; got {max_drop!r}")
    drop_type = coerce_enum(drop_type, DropType, "drop_type")
    if advanced is None:
        advanced = AdvancedAccuracyRestorerParameters()
    elif not isinstance(advanced, AdvancedAccuracyRestorerParameters):
        raise ValidationError(
            "advanced_accuracy_restorer_parameters must be an AdvancedAccuracyRestorerParameters; "
            f"got {type(advanced).__name__}"
        )
    ranking_size = subset_size if advanced.ranking_subset_size is None else advanced.ranking_subset_size
    _check_int(advanced.max_num_iterations, "max_num_iterations", 0)
    _check_int(ranking_size, "ranking_subset_size", 1)
    _check_int(advanced.num_reverted_per_step, "num_reverted_per_step", 1)
    if advanced.rerank_every is not None:
        _check_int(advanced.rerank_every, "rerank_every", 1)
    mode = str(getattr(advanced.restore_mode, "value", advanced.restore_mode)).lower()
    if mode not in RESTORE_MODES:
        raise one_of(advanced.restore_mode, RESTORE_MODES, "restore_mode")
    _warn_unsupported(advanced)
    return RestorerOptions(
        float(max_drop), drop_type, advanced.max_num_iterations, ranking_size, advanced.num_reverted_per_step,
        advanced.rerank_every, mode,
    )


def _check_int(value, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(f"{name} must be an integer >= {minimum}; got {value!r}")


def _warn_unsupported(advanced: AdvancedAccuracyRestorerParameters) -> None:
    if advanced.tune_hyperparams:
        warn_once("tune_hyperparams", "accuracy control: tune_hyperparams=True is not supported yet; ignored")
    if advanced.intermediate_model_dir is not None:
        warn_once("intermediate_model_dir", "accuracy control: intermediate_model_dir is not supported yet; ignored")
    if advanced.num_ranking_workers is not None:
        warn_once("num_ranking_workers", (
            f"advanced_accuracy_restorer_parameters.num_ranking_workers={advanced.num_ranking_workers!r} has no "
            "effect: candidates are ranked one after another in the calling thread"
        ))


def _report(report: CompressionReport, outcome: RestorerOutcome, evaluator: Evaluator, options) -> CompressionReport:
    """The PTQ report with the reverted operations moved to 'left in float' with their measured impact."""
    report.algorithm = "QuantizationWithAccuracyControl"
    reverted_quantizers = set()
    what = "reverted to float" if options.restore_mode == ACTIVATIONS_AND_WEIGHTS else "input activations reverted"
    for index, step in enumerate(outcome.steps, 1):
        for group, score in zip(step.groups, step.ranking_scores):
            reverted_quantizers.update(group.quantizers)
            why = (
                f"{what} by accuracy control (step {index}): drop {step.drop_before:.6g} -> {step.drop_after:.6g} "
                f"(impact {step.drop_before - step.drop_after:+.6g}; ranking score {score:.6g})"
            )
            for name in group.operations or group.quantizers:
                report.skipped[name] = why
    report.quantized = [(name, desc) for name, desc in report.quantized if name not in reverted_quantizers]
    direction = "lower" if outcome.scale.lower_is_better else "higher"
    report.notes.append(
        f"accuracy control: FP32 metric {outcome.fp32_metric:.6g}, INT8 metric {outcome.int8_metric:.6g}, "
        f"final metric {outcome.metric:.6g} ({direction} is better); drop {outcome.drop:.6g} "
        f"({options.drop_type.value}, max_drop {options.max_drop:g})"
    )
    report.notes.append(
        f"accuracy control: {len(outcome.reverted_operations)} of {outcome.num_operations} operations reverted "
        f"to float, {len(outcome.rejected)} groups tried and kept quantized, {evaluator.calls} validation_fn calls "
        f"({evaluator.seconds:.3f} s); ranking by {outcome.ranking_mode or 'n/a'}; stopped: {outcome.stop_reason}"
    )
    report.timings["validation"] = evaluator.seconds
    return report
