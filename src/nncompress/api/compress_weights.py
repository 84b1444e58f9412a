"""``compress_weights``: low-bit weight compression of OpenVINO, ONNX and PyTorch models."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, TypeVar

from nncompress.algorithms.weights.config import (
    DATA_AWARE_METRICS,
    WeightCompressionOptions,
    default_group_size,
)
from nncompress.algorithms.weights.pipeline import run_weight_compression
from nncompress.api.quantize import check_first_item
from nncompress.backends.registry import get_adapter
from nncompress.dataset import Dataset
from nncompress.errors import ParameterNotSupportedError, UnsupportedBackendError, ValidationError
from nncompress.foreign import adopt
from nncompress.log import logger
from nncompress.numerics.encoding import check_codebook
from nncompress.numerics.lowbit import FIXED_GROUP_SIZES, MAX_CODEBOOK_SIZE, canonical_mode, is_int8_mode
from nncompress.parameters import BackupMode, CompressWeightsMode, SensitivityMetric, coerce_enum
from nncompress.report import set_last_report
from nncompress.scopes import IgnoredScope
from nncompress.weight_parameters import AdvancedCompressionParameters, CompressionFormat, GroupSizeFallbackMode

TModel = TypeVar("TModel")
Mode = CompressWeightsMode
FOUR_BIT_DATA_AWARE = (Mode.INT4_SYM, Mode.INT4_ASYM, Mode.NF4, Mode.INT3_SYM, Mode.INT2_SYM)
INTEGER_MODES = (Mode.INT4_ASYM, Mode.INT4_SYM, Mode.INT8_ASYM, Mode.INT8_SYM)
_EMPTY_DATASET = "the dataset is empty; give at least one model input (128 are recommended)"


def compress_weights(
    model: TModel,
    mode: CompressWeightsMode = CompressWeightsMode.INT8_ASYM,
    ratio: float | None = None,
    group_size: int | None = None,
    ignored_scope: IgnoredScope | None = None,
    all_layers: bool | None = None,
    dataset: Dataset | None = None,
    sensitivity_metric: SensitivityMetric | None = None,
    *,
    subset_size: int = 128,
    awq: bool | None = None,
    scale_estimation: bool | None = None,
    gptq: bool | None = None,
    lora_correction: bool | None = None,
    backup_mode: BackupMode | None = None,
    compression_format: CompressionFormat = CompressionFormat.DQ,
    advanced_parameters: AdvancedCompressionParameters | None = None,
    verbose: bool = False,
) -> TModel:
    """Compress the weights of Linear/MatMul, Embedding and convolution layers to low-bit formats.

    INT8 modes compress every weight per output channel. The other modes (INT4_SYM/ASYM, INT3_SYM,
    INT2_SYM, NF4, FP4, MXFP4, NVFP4, FP8_E4M3, MXFP8_E4M3, CB4_F8E4M3, CODEBOOK, ADAPTIVE_CODEBOOK) compress
    Linear weights group-wise (``group_size``: 128 by default, MX formats 32, NVFP4 16, codebooks per
    channel) and keep embeddings, convolutions and the last Linear in the backup mode (INT8_ASYM;
    FP8_E4M3 / MXFP8_E4M3 for the float formats; ``backup_mode`` picks INT8_SYM/ASYM, FP8_E4M3,
    MXFP8_E4M3 or NONE) unless ``all_layers``; ``ratio`` is the share of those weight elements in the
    primary mode. ``dataset`` enables data-aware mixed precision, AWQ, scale
    estimation, GPTQ and LoRA correction. Returns a new model; the bit-width distribution is printed
    (logged at INFO on the ``nncompress`` logger, shown by default as NNCF does; ``verbose`` prints the
    full report instead) and available from ``nncompress.last_report()``.
    """
    adapter = get_adapter(model)
    options = validate_compress_args(
        capabilities=adapter.capabilities, mode=mode, ratio=ratio, group_size=group_size, ignored_scope=ignored_scope,
        all_layers=all_layers, dataset=dataset, sensitivity_metric=sensitivity_metric, subset_size=subset_size,
        awq=awq, scale_estimation=scale_estimation, gptq=gptq, lora_correction=lora_correction,
        backup_mode=backup_mode, compression_format=compression_format, advanced=advanced_parameters,
    )
    if options.dataset is not None:
        adapter = get_adapter(model, example_input=check_first_item(adapter, model, options.dataset, _EMPTY_DATASET))
    result, report = run_weight_compression(adapter, model, options)
    fmt = coerce_enum(compression_format, CompressionFormat, "compression_format")
    if fmt is not CompressionFormat.DQ:  # trainable fake-quantized weights (QAT, with LoRA adapters)
        rank = options.advanced.lora_adapter_rank
        result = adapter.fake_quantize_weights(result, model, fmt.value, rank, options.mode)
    set_last_report(report)
    if verbose:
        report.print()
    else:
        logger.info("Statistics of the bitwidth distribution:\n%s", report.table())
    return result


def _flag(value: Any, name: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValidationError(f"{name} must be True, False or None; got {value!r}")
    return value


def _positive(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{name} must be a positive integer; got {value!r}")


def _check_8bit(mode: Mode, given: dict[str, Any]) -> None:
    wrong = [name for name, value in given.items() if value is not None and value is not False]
    if wrong:
        raise ValidationError(
            f"mode={mode.value!r} compresses every weight per channel in 8 bits, so {', '.join(wrong)} cannot be "
            "used with it; these options need a mixed-precision mode such as 'int4_sym', 'int4_asym', 'nf4', "
            "'fp4', 'mxfp4', 'nvfp4' or 'fp8_e4m3'"
        )


def _resolve_group_size(mode: Mode, group_size: Any) -> int:
    if group_size is None:
        return default_group_size(mode)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or (group_size < 1 and group_size != -1):
        raise ValidationError(
            f"group_size must be a positive integer (e.g. 32, 64, 128) or -1 for per-channel; got {group_size!r}"
        )
    fixed = FIXED_GROUP_SIZES.get(mode)
    if fixed is not None and group_size != fixed:
        raise ValidationError(
            f"mode={mode.value!r} uses groups of {fixed} elements (its scale format); got group_size={group_size}"
        )
    return group_size


def _resolve_ratio(ratio: Any) -> float:
    if ratio is None:
        return 1.0
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) <= 1.0:
        raise ValidationError(
            f"ratio must be a number between 0 and 1 (share of weights in the primary mode); got {ratio!r}"
        )
    return float(ratio)


def _data_aware_checks(options: WeightCompressionOptions, mode: Mode, metric_given: bool) -> None:
    methods = [n for n, on in (("awq", options.awq), ("scale_estimation", options.scale_estimation),
                               ("gptq", options.gptq), ("lora_correction", options.lora_correction)) if on]
    if methods and mode not in FOUR_BIT_DATA_AWARE:
        raise ValidationError(
            f"{', '.join(methods)} work with modes 'int4_sym', 'int4_asym', 'int3_sym', 'int2_sym' and 'nf4'; got "
            f"mode={mode.value!r}"
        )
    needs_data = [m for m in methods if m != "awq"]
    if needs_data and options.dataset is None:
        raise ValidationError(
            f"{', '.join(needs_data)} need a calibration dataset: pass dataset=nncompress.Dataset(...)"
        )
    if options.gptq and options.lora_correction:
        raise ValidationError("gptq and lora_correction cannot be combined; choose one of them")
    if metric_given and options.data_aware_mixed_precision and options.dataset is None:
        raise ValidationError(
            f"sensitivity_metric={options.sensitivity_metric.value!r} ranks layers by their activations and needs a "
            "dataset; pass dataset=..., or use sensitivity_metric='weight_quantization_error' (data-free)"
        )


def validate_compress_args(
    *,
    capabilities: Any,
    mode: Any = CompressWeightsMode.INT8_ASYM,
    ratio: Any = None,
    group_size: Any = None,
    ignored_scope: Any = None,
    all_layers: Any = None,
    dataset: Any = None,
    sensitivity_metric: Any = None,
    subset_size: Any = 128,
    awq: Any = None,
    scale_estimation: Any = None,
    gptq: Any = None,
    lora_correction: Any = None,
    backup_mode: Any = None,
    compression_format: Any = CompressionFormat.DQ,
    advanced: Any = None,
) -> WeightCompressionOptions:
    """Check ``compress_weights``' arguments (by keyword, defaults as in ``compress_weights``; ``advanced``
    is its ``advanced_parameters``) and resolve their defaults."""
    mode = canonical_mode(coerce_enum(mode, CompressWeightsMode, "mode"))
    fmt = coerce_enum(compression_format, CompressionFormat, "compression_format")
    _positive(subset_size, "subset_size")
    dataset, ignored_scope = _checked_inputs(dataset, ignored_scope)
    advanced = _check_advanced(adopt(advanced, AdvancedCompressionParameters, "advanced_parameters"))
    _check_codebook(mode, advanced)
    if is_int8_mode(mode):
        _check_8bit(mode, {
            "ratio": ratio if ratio not in (None, 1, 1.0) else None,
            "group_size": group_size if group_size != -1 else None,
            "all_layers": all_layers, "sensitivity_metric": sensitivity_metric, "awq": awq,
            "scale_estimation": scale_estimation, "gptq": gptq, "lora_correction": lora_correction,
            "backup_mode": backup_mode, "dataset": None if capabilities.graph_from_example_input else dataset,
        })
        dataset = None
    metric = coerce_enum(sensitivity_metric, SensitivityMetric, "sensitivity_metric", allow_none=True)
    options = WeightCompressionOptions(
        mode=mode,
        ratio=_resolve_ratio(ratio),
        group_size=_resolve_group_size(mode, group_size),
        all_layers=_flag(all_layers, "all_layers"),
        sensitivity_metric=metric or _default_metric(dataset),
        subset_size=subset_size,
        awq=_flag(awq, "awq"),
        scale_estimation=_flag(scale_estimation, "scale_estimation"),
        gptq=_flag(gptq, "gptq"),
        lora_correction=_flag(lora_correction, "lora_correction"),
        backup_mode=coerce_enum(backup_mode, BackupMode, "backup_mode", allow_none=True),
        ignored_scope=ignored_scope,
        dataset=dataset,
        advanced=advanced,
    )
    _data_aware_checks(options, mode, metric is not None and metric in DATA_AWARE_METRICS)
    _check_format(fmt, options, capabilities)
    return options


def _check_format(fmt: CompressionFormat, options: WeightCompressionOptions, capabilities: Any) -> None:
    """The FQ formats: trainable (PyTorch) models, integer modes (4-bit with LoRA), no weight-changing methods."""
    if fmt is CompressionFormat.DQ:
        return
    if not capabilities.trainable:
        raise UnsupportedBackendError(
            f"compression_format={fmt.value!r} makes trainable fake-quantized weights, which only PyTorch models "
            f"have; a {capabilities.name} model takes compression_format='dequantize'"
        )
    modes = (Mode.INT4_ASYM, Mode.INT4_SYM) if fmt is not CompressionFormat.FQ else INTEGER_MODES
    if options.mode not in modes:
        raise ValidationError(
            f"compression_format={fmt.value!r} needs mode {' or '.join(repr(m.value) for m in modes)}; "
            f"got mode={options.mode.value!r}"
        )
    if options.lora_correction:
        raise ValidationError(
            f"lora_correction=True cannot be combined with compression_format={fmt.value!r}: the fake-quantize "
            "formats train their own adapters; use compression_format='dequantize' for LoRA correction"
        )
    changed = [name for name in ("awq", "gptq") if getattr(options, name)]
    if changed:
        raise ParameterNotSupportedError(
            f"{' and '.join(changed)}=True change the float weights, which compression_format={fmt.value!r} "
            "trains from; use scale_estimation (it only sets the scales) or compression_format='dequantize'"
        )
    _positive(options.advanced.lora_adapter_rank, "advanced_parameters.lora_adapter_rank")


def _check_codebook(mode: Mode, advanced: Any) -> None:
    if mode is Mode.CODEBOOK and advanced.codebook is None:
        raise ValidationError(
            "mode='codebook' needs its values: AdvancedCompressionParameters(codebook=np.array([...])) with 2 to "
            f"{MAX_CODEBOOK_SIZE} sorted values (or use mode='cb4_f8e4m3', a fixed 16-value codebook)"
        )


def _checked_inputs(dataset: Any, ignored_scope: Any) -> tuple[Any, Any]:
    """``dataset`` and ``ignored_scope`` as nncompress objects (NNCF's own adopted), or a ValidationError."""
    dataset = adopt(dataset, Dataset, "dataset")
    ignored_scope = adopt(ignored_scope, IgnoredScope, "ignored_scope")
    if dataset is not None and not isinstance(dataset, Dataset):
        raise ValidationError(f"dataset must be an nncompress.Dataset; got {type(dataset).__name__}")
    if ignored_scope is not None and not isinstance(ignored_scope, IgnoredScope):
        raise ValidationError(f"ignored_scope must be an nncompress.IgnoredScope; got {type(ignored_scope).__name__}")
    return dataset, ignored_scope


def _default_metric(dataset: Dataset | None) -> SensitivityMetric:
    if dataset is None:
        return SensitivityMetric.WEIGHT_QUANTIZATION_ERROR
    return SensitivityMetric.MAX_ACTIVATION_VARIANCE


def _check_advanced(advanced: Any) -> AdvancedCompressionParameters:
    if advanced is None:
        return AdvancedCompressionParameters()
    if not isinstance(advanced, AdvancedCompressionParameters):
        raise ValidationError(
            f"advanced_parameters must be an AdvancedCompressionParameters; got {type(advanced).__name__}"
        )
    advanced = dataclasses.replace(advanced, group_size_fallback_mode=coerce_enum(
        advanced.group_size_fallback_mode, GroupSizeFallbackMode, "group_size_fallback_mode"
    ))
    _positive(advanced.min_adjusted_group_size, "min_adjusted_group_size")
    for name in ("awq_params", "scale_estimation_params", "gptq_params", "lora_correction_params"):
        _positive(getattr(advanced, name).subset_size, f"{name}.subset_size")
    _positive(advanced.lora_correction_params.adapter_rank, "lora_correction_params.adapter_rank")
    adaptive = advanced.adaptive_codebook_params
    if adaptive.across_blocks:
        raise UnsupportedBackendError("adaptive_codebook_params.across_blocks=True (one codebook shared by several "
                                      "weights) is not supported; each weight gets its own codebook")
    if adaptive.value_type not in ("f8e4m3", "f16", "float16") or not 2 <= adaptive.num_elements <= MAX_CODEBOOK_SIZE:
        raise ValidationError(
            "adaptive_codebook_params: value_type must be 'f8e4m3' or 'float16' and num_elements "
            f"2..{MAX_CODEBOOK_SIZE}; got {adaptive.value_type!r}, {adaptive.num_elements!r}"
        )
    if advanced.codebook is not None:
        try:
            advanced = dataclasses.replace(advanced, codebook=check_codebook(advanced.codebook))
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
    if advanced.statistics_path is not None and not isinstance(advanced.statistics_path, (str, os.PathLike)):
        raise ValidationError(
            f"statistics_path must be a directory path (str or os.PathLike); got {advanced.statistics_path!r}"
        )
    return advanced


