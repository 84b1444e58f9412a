"""``quantize``: post-training INT8 quantization of OpenVINO, ONNX and PyTorch models."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from nncompress.algorithms.quantization.pipeline import PTQOptions, run_ptq
from nncompress.backends.registry import get_adapter
from nncompress.dataset import Dataset
from nncompress.errors import CalibrationError, ValidationError
from nncompress.foreign import adopt
from nncompress.parameters import (
    AdvancedQuantizationParameters,
    FP8QuantizationParameters,
    ModelType,
    OverflowFix,
    QuantizationMode,
    QuantizationPreset,
    TargetDevice,
    check_advanced_quantization,
    coerce_enum,
)
from nncompress.report import set_last_report
from nncompress.scopes import IgnoredScope

TModel = TypeVar("TModel")
_EMPTY_CALIBRATION = "the calibration dataset is empty; give at least one item (300 are recommended)"


def quantize(
    model: TModel,
    calibration_dataset: Dataset,
    *,
    mode: QuantizationMode | None = None,
    preset: QuantizationPreset | None = None,
    target_device: TargetDevice = TargetDevice.ANY,
    subset_size: int = 300,
    fast_bias_correction: bool = True,
    model_type: ModelType | None = None,
    ignored_scope: IgnoredScope | None = None,
    advanced_parameters: AdvancedQuantizationParameters | None = None,
    verbose: bool = False,
) -> TModel:
    """Quantize ``model`` to INT8 using ``calibration_dataset``; returns a new model of the same kind.

    ``mode=QuantizationMode.FP8_E4M3 | FP8_E5M2`` quantizes the same activations and weights to FP8
    instead: OpenVINO FakeConvert, ONNX QuantizeLinear/DequantizeLinear with a float8 zero point (opset
    19, the model is converted when older), a PyTorch FP8 fake quantizer.

    The report of what was quantized and what was left in float is printed when ``verbose`` and is
    available afterwards from ``nncompress.last_report()``.
    """
    calibration_dataset = adopt(calibration_dataset, Dataset, "calibration_dataset")
    adapter = get_adapter(model)
    options = validate_quantize_args(
        calibration_dataset, mode=mode, preset=preset, target_device=target_device, subset_size=subset_size,
        fast_bias_correction=fast_bias_correction, model_type=model_type, ignored_scope=ignored_scope,
        advanced=advanced_parameters,
    )
    adapter = get_adapter(model, example_input=check_first_item(adapter, model, calibration_dataset))
    outcome = run_ptq(adapter, model, calibration_dataset, options)
    report = outcome.report
    if report.calibration_items < options.subset_size:
        report.notes.append(
            f"the dataset had {report.calibration_items} items, fewer than subset_size={options.subset_size}; "
            "all of them were used"
        )
    set_last_report(report)
    if verbose:
        report.print()
    return outcome.model


def validate_quantize_args(
    dataset: Any,
    *,
    mode: Any = None,
    preset: Any = None,
    target_device: Any = TargetDevice.ANY,
    subset_size: Any = 300,
    fast_bias_correction: Any = True,
    model_type: Any = None,
    ignored_scope: Any = None,
    advanced: Any = None,
) -> PTQOptions:
    """Check ``quantize``'s arguments (the options by keyword, defaults as in ``quantize``; ``advanced`` is
    its ``advanced_parameters``) and turn them into pipeline options."""
    dataset = adopt(dataset, Dataset, "calibration_dataset")
    advanced = adopt(advanced, AdvancedQuantizationParameters, "advanced_parameters")
    ignored_scope = adopt(ignored_scope, IgnoredScope, "ignored_scope")
    if not isinstance(dataset, Dataset):
        raise ValidationError(
            f"calibration_dataset must be an nncompress.Dataset; got {type(dataset).__name__}. "
            "Wrap your data: nncompress.Dataset(data_source, transform_fn)"
        )
    if isinstance(subset_size, bool) or not isinstance(subset_size, int) or subset_size < 1:
        raise ValidationError(f"subset_size must be a positive integer; got {subset_size!r}")
    mode = coerce_enum(mode, QuantizationMode, "mode", allow_none=True)
    if not isinstance(fast_bias_correction, bool):
        raise ValidationError(f"fast_bias_correction must be True or False; got {fast_bias_correction!r}")
    if advanced is None:
        advanced = AdvancedQuantizationParameters()
    elif not isinstance(advanced, AdvancedQuantizationParameters):
        raise ValidationError(
            f"advanced_parameters must be an AdvancedQuantizationParameters; got {type(advanced).__name__}"
        )
    advanced = check_advanced_quantization(advanced)
    fp8, advanced, preset = _fp8_options(mode, advanced, preset, target_device)
    if ignored_scope is not None and not isinstance(ignored_scope, IgnoredScope):
        raise ValidationError(f"ignored_scope must be an nncompress.IgnoredScope; got {type(ignored_scope).__name__}")
    batch = dataset.get_batch_size()
    batchwise = advanced.batchwise_statistics
    if batchwise is None:
        batchwise = bool(batch and batch > 1)
    return PTQOptions(
        preset=coerce_enum(preset, QuantizationPreset, "preset", allow_none=True),
        target_device=coerce_enum(target_device, TargetDevice, "target_device"),
        subset_size=subset_size,
        fast_bias_correction=fast_bias_correction,
        transformer=coerce_enum(model_type, ModelType, "model_type", allow_none=True) is ModelType.TRANSFORMER,
        ignored_scope=ignored_scope,
        advanced=advanced,
        batchwise=batchwise,
        fp8=fp8,
    )


_FP8_NAMES = ("activations_quantization_params", "weights_quantization_params")


def _fp8_options(mode: QuantizationMode | None, advanced: AdvancedQuantizationParameters, preset: Any,
                 target_device: Any) -> tuple[tuple[str, str] | None, AdvancedQuantizationParameters, Any]:
    """(FP8 formats of activations and weights or None, ``advanced`` for the INT8 range machinery, preset).

    FP8 mode needs what the reference needs: the PERFORMANCE preset, target device ANY or CPU, no
    quantized outputs; the overflow fix is off."""
    params = {name: getattr(advanced, name) for name in _FP8_NAMES}
    if mode is None:
        given = [name for name, value in params.items() if isinstance(value, FP8QuantizationParameters)]
        if given:
            raise ValidationError(
                f"{given[0]}=FP8QuantizationParameters(...) needs mode=QuantizationMode.FP8_E4M3 or FP8_E5M2; "
                "for INT8 give QuantizationParameters"
            )
        return None, advanced, preset
    wrong = [name for name, value in params.items() if value is not None and
             not isinstance(value, FP8QuantizationParameters)]
    if wrong:
        raise ValidationError(
            f"mode={mode.value!r}: {wrong[0]} must be FP8QuantizationParameters(destination_type=...) or None; "
            f"got {type(params[wrong[0]]).__name__}"
        )
    preset = coerce_enum(preset, QuantizationPreset, "preset", allow_none=True)
    device = coerce_enum(target_device, TargetDevice, "target_device")
    if preset is QuantizationPreset.MIXED or device not in (TargetDevice.ANY, TargetDevice.CPU) or (
            advanced.quantize_outputs):
        raise ValidationError(
            f"mode={mode.value!r} (FP8) needs preset=PERFORMANCE (or None), target_device ANY or CPU and "
            f"quantize_outputs=False; got preset={preset}, target_device={device.value!r}, "
            f"quantize_outputs={advanced.quantize_outputs}"
        )
    default = "f8e4m3" if mode is QuantizationMode.FP8_E4M3 else "f8e5m2"
    formats = tuple(getattr(params[name], "destination_type", None) or default for name in _FP8_NAMES)
    advanced = dataclasses.replace(advanced, overflow_fix=OverflowFix.DISABLE,
                                   **dict.fromkeys(_FP8_NAMES))
    return (str(formats[0]), str(formats[1])), advanced, QuantizationPreset.PERFORMANCE


def check_first_item(adapter, model: Any, dataset: Dataset, empty_message: str = _EMPTY_CALIBRATION) -> Any:
    """The first item of ``dataset``, checked as an input of ``model`` (the call's example input)."""
    first = dataset.peek_inference_data()  # a one-shot source replays this item in its pass
    if not first:
        raise CalibrationError(empty_message)
    adapter.check_inputs(model, first[0])
    return first[0]
