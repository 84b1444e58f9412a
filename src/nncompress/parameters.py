"""Enums and frozen option records of the public API (names and values follow NNCF)."""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from nncompress.errors import UnsupportedBackendError, ValidationError, one_of
from nncompress.log import warn_once

E = TypeVar("E", bound=Enum)
TObj = TypeVar("TObj")
logger = logging.getLogger("nncompress")


def api(canonical_alias: str | None = None) -> Callable[[TObj], TObj]:
    """Mark an object as public API (NNCF's decorator); ``canonical_alias`` is its documented name."""

    def mark(obj: TObj) -> TObj:
        try:
            obj.__nncompress_api__ = canonical_alias or f"{obj.__module__}.{obj.__qualname__}"
        except (AttributeError, TypeError):  # objects without a writable __dict__ stay unmarked
            pass
        return obj

    return mark


class StrEnum(str, Enum):
    def __str__(self) -> str:
        return self.value


class QuantizationPreset(StrEnum):
    PERFORMANCE = "performance"
    MIXED = "mixed"


class TargetDevice(StrEnum):
    ANY = "ANY"
    CPU = "CPU"
    GPU = "GPU"
    NPU = "NPU"
    CPU_SPR = "CPU_SPR"


class ModelType(StrEnum):
    TRANSFORMER = "transformer"


class QuantizationMode(StrEnum):
    FP8_E4M3 = "fp8_e4m3"
    FP8_E5M2 = "fp8_e5m2"


class QuantizationScheme(StrEnum):
    """The integer grid of a quantizer (NNCF: ``quantization.advanced_parameters.QuantizationMode``).

    The LoRA members describe NNCF's trainable fake-quantize formats; ``quantize`` accepts only
    SYMMETRIC and ASYMMETRIC."""

    SYMMETRIC = "symmetric"
    ASYMMETRIC = "asymmetric"
    SYMMETRIC_LORA = "symmetric_lora"
    SYMMETRIC_LORA_NLS = "symmetric_lora_nls"
    ASYMMETRIC_LORA = "asymmetric_lora"
    ASYMMETRIC_LORA_NLS = "asymmetric_lora_nls"


class OverflowFix(StrEnum):
    ENABLE = "enable"
    FIRST_LAYER = "first_layer_only"
    DISABLE = "disable"


class QuantizerPropagationRule(StrEnum):
    """How quantizers of branches meeting at one tensor are merged (values as in NNCF).

    ``quantize`` supports MERGE_ALL_IN_ONE (the default) and DO_NOT_MERGE_BRANCHES."""

    DO_NOT_MERGE_BRANCHES = "0"
    MERGE_IF_ALL_BRANCHES_SAME = "1"
    MERGE_WITH_POTENTIAL_REQUANTIZATION = "2"
    MERGE_ALL_IN_ONE = "3"


class TensorDataType(StrEnum):
    """Element types by name (NNCF's ``nncf.tensor.TensorDataType``)."""

    float16 = "float16"
    bfloat16 = "bfloat16"
    float32 = "float32"
    float64 = "float64"
    f8e4m3 = "f8e4m3"
    f8e5m2 = "f8e5m2"
    f8e8m0 = "f8e8m0"
    f4e2m1 = "f4e2m1"
    nf4 = "nf4"
    int8 = "int8"
    int32 = "int32"
    int64 = "int64"
    uint16 = "uint16"
    uint32 = "uint32"
    uint8 = "uint8"
    uint4 = "uint4"
    int4 = "int4"
    int3 = "int3"
    int2 = "int2"


class FP8Type(StrEnum):
    E4M3 = "f8e4m3"
    E5M2 = "f8e5m2"


class StripFormat(StrEnum):
    """What ``strip`` turns compression machinery into; nncompress implements NATIVE."""

    NATIVE = "native"
    DQ = "dequantize"
    IN_PLACE = "in_place"


class PruneMode(StrEnum):
    """Pruning modes of NNCF's ``prune`` (pruning is not implemented yet)."""

    UNSTRUCTURED_MAGNITUDE_LOCAL = "unstructured_magnitude_local"
    UNSTRUCTURED_MAGNITUDE_GLOBAL = "unstructured_magnitude_global"
    UNSTRUCTURED_REGULARIZATION_BASED = "unstructured_regularization_based"


class RestoreMode(StrEnum):
    """What accuracy control reverts in an operation: its activation and weight quantizers, or only
    the quantizers of its input activations."""

    ACTIVATIONS_AND_WEIGHTS = "activations_and_weights"
    ONLY_ACTIVATIONS = "only_activations"


class CompressionFormat(StrEnum):
    """How compressed weights are represented; only DQ (stored low-bit + decompression) is supported."""

    DQ = "dequantize"
    FQ = "fake_quantize"
    FQ_LORA = "fake_quantize_with_lora"
    FQ_LORA_NLS = "fake_quantize_with_lora_nls"


class StatisticsType(StrEnum):
    MIN = "min"
    MAX = "max"
    ABS_MAX = "abs_max"
    MEAN = "mean"
    QUANTILE = "quantile"
    ABS_QUANTILE = "abs_quantile"


class AggregatorType(StrEnum):
    MIN = "min"
    MAX = "max"
    MEAN = "mean"
    MEDIAN = "median"
    MEAN_NO_OUTLIERS = "mean_no_outliers"
    MEDIAN_NO_OUTLIERS = "median_no_outliers"


class CompressWeightsMode(StrEnum):
    INT8_SYM = "int8_sym"
    INT8_ASYM = "int8_asym"
    INT4_SYM = "int4_sym"
    INT4_ASYM = "int4_asym"
    INT3_SYM = "int3_sym"
    INT2_SYM = "int2_sym"
    NF4 = "nf4"
    E2M1 = "e2m1"  # NNCF's former name of MXFP4
    MXFP4 = "mxfp4"
    FP4 = "fp4"
    NVFP4 = "nvfp4"
    FP8_E4M3 = "fp8_e4m3"
    MXFP8_E4M3 = "mxfp8_e4m3"
    CB4_F8E4M3 = "cb4_f8e4m3"
    CB4 = "cb4"  # short name of CB4_F8E4M3
    CODEBOOK = "codebook"  # AdvancedCompressionParameters(codebook=...): up to 16 sorted values
    ADAPTIVE_CODEBOOK = "adaptive_codebook"  # a codebook fitted to each weight (k-means, E4M3 values)
    INT8 = "int8"  # deprecated alias of INT8_ASYM in NNCF


class SensitivityMetric(StrEnum):
    WEIGHT_QUANTIZATION_ERROR = "weight_quantization_error"
    HESSIAN_INPUT_ACTIVATION = "hessian_input_activation"
    MEAN_ACTIVATION_VARIANCE = "mean_activation_variance"
    MAX_ACTIVATION_VARIANCE = "max_activation_variance"
    MEAN_ACTIVATION_MAGNITUDE = "mean_activation_magnitude"


class BackupMode(StrEnum):
    NONE = "none"
    INT8_SYM = "int8_sym"
    INT8_ASYM = "int8_asym"
    MXFP8_E4M3 = "mxfp8_e4m3"
    FP8_E4M3 = "fp8_e4m3"


class DropType(StrEnum):
    ABSOLUTE = "absolute"
    RELATIVE = "relative"


def coerce_enum(value: Any, enum_cls: type[E], what: str, allow_none: bool = False) -> E | None:
    """Return ``value`` as a member of ``enum_cls``; accept members, values and names."""
    if value is None and allow_none:
        return None
    if isinstance(value, enum_cls):
        return value
    from nncompress.foreign import is_foreign

    if isinstance(value, Enum) and is_foreign(value, enum_cls):  # e.g. NNCF's own enum member
        value = value.value
    for member in enum_cls:
        if value == member.value or (isinstance(value, str) and value.upper() == member.name):
            return member
    raise one_of(value, [m.value for m in enum_cls], what)


@dataclass(frozen=True)
class QuantizationParameters:
    """Constraints on the quantizers chosen for weights or activations (None = hardware default)."""

    num_bits: int | None = None
    mode: QuantizationScheme | None = None
    signedness_to_force: bool | None = None
    per_channel: bool | None = None
    narrow_range: bool | None = None


@dataclass(frozen=True)
class FP8QuantizationParameters:
    """FP8 quantizer constraints (NNCF): ``destination_type`` overrides the FP8 format of the activations or
    weights of ``quantize(mode=QuantizationMode.FP8_E4M3 | FP8_E5M2)`` (None: the mode's format)."""

    destination_type: FP8Type | None = None


@dataclass(frozen=True)
class StatisticsCollectorParameters:
    """How one end of a range is estimated: a reducer per call (``statistics_type``) and an aggregator
    across calls (``aggregator_type``); None keeps the default. ``quantile_outlier_prob`` is the quantile
    of QUANTILE reducers and of the NO_OUTLIERS aggregators; ``clipping_value`` bounds the result."""

    statistics_type: StatisticsType | None = None
    aggregator_type: AggregatorType | None = None
    clipping_value: float | None = None
    quantile_outlier_prob: float = 1e-4


@dataclass(frozen=True)
class RangeEstimatorParameters:
    """Estimators of a quantizer's ``min`` and ``max``."""

    min: StatisticsCollectorParameters = field(default_factory=StatisticsCollectorParameters)
    max: StatisticsCollectorParameters = field(default_factory=StatisticsCollectorParameters)


class RangeEstimatorParametersSet:
    """Ready-made estimators (NNCF names)."""

    MINMAX = RangeEstimatorParameters(
        StatisticsCollectorParameters(StatisticsType.MIN, AggregatorType.MIN),
        StatisticsCollectorParameters(StatisticsType.MAX, AggregatorType.MAX),
    )
    MEAN_MINMAX = RangeEstimatorParameters(
        StatisticsCollectorParameters(StatisticsType.MIN, AggregatorType.MEAN),
        StatisticsCollectorParameters(StatisticsType.MAX, AggregatorType.MEAN),
    )
    MEDIAN_MINMAX = RangeEstimatorParameters(
        StatisticsCollectorParameters(StatisticsType.MIN, AggregatorType.MEDIAN),
        StatisticsCollectorParameters(StatisticsType.MAX, AggregatorType.MEDIAN),
    )
    MEAN_NO_OUTLIERS_MINMAX = RangeEstimatorParameters(
        StatisticsCollectorParameters(StatisticsType.MIN, AggregatorType.MEAN_NO_OUTLIERS),
        StatisticsCollectorParameters(StatisticsType.MAX, AggregatorType.MEAN_NO_OUTLIERS),
    )
    MEAN_QUANTILE = RangeEstimatorParameters(
        StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MEAN),
        StatisticsCollectorParameters(StatisticsType.QUANTILE, AggregatorType.MEAN),
    )


@dataclass(frozen=True)
class AdvancedSmoothQuantParameters:
    """SmoothQuant migration strength per op family; a negative value turns it off."""

    convolution: float = -1
    matmul: float = 0.95


@dataclass(frozen=True)
class AdvancedBiasCorrectionParameters:
    apply_for_all_nodes: bool = False
    threshold: float | None = None


@dataclass
class AdvancedQuantizationParameters:
    """Rarely changed options of ``quantize``."""

    overflow_fix: OverflowFix | None = None
    quantize_outputs: bool = False
    inplace_statistics: bool = True
    disable_channel_alignment: bool = True
    disable_bias_correction: bool = False
    batchwise_statistics: bool | None = None
    activations_quantization_params: QuantizationParameters | None = None
    weights_quantization_params: QuantizationParameters | None = None
    quantizer_propagation_rule: QuantizerPropagationRule = QuantizerPropagationRule.MERGE_ALL_IN_ONE
    activations_range_estimator_params: RangeEstimatorParameters = field(
        default_factory=RangeEstimatorParameters
    )
    weights_range_estimator_params: RangeEstimatorParameters = field(default_factory=RangeEstimatorParameters)
    bias_correction_params: AdvancedBiasCorrectionParameters = field(
        default_factory=AdvancedBiasCorrectionParameters
    )
    smooth_quant_alphas: AdvancedSmoothQuantParameters = field(default_factory=AdvancedSmoothQuantParameters)
    smooth_quant_alpha: float | None = None
    backend_params: dict = field(default_factory=dict)


@dataclass
class AdvancedAccuracyRestorerParameters:
    """Options of ``quantize_with_accuracy_control``."""

    max_num_iterations: int = sys.maxsize
    tune_hyperparams: bool = False
    ranking_subset_size: int | None = None
    num_ranking_workers: int | None = None
    intermediate_model_dir: str | None = None
    restore_mode: RestoreMode = RestoreMode.ACTIVATIONS_AND_WEIGHTS
    # nncompress' own options (after NNCF's fields, so positional construction matches NNCF)
    num_reverted_per_step: int = 1
    rerank_every: int | None = None


def convert_to_dict_recursively(params: Any) -> dict[str, Any]:
    """A dataclass of options as a dict, nested dataclasses included."""
    if not dataclasses.is_dataclass(params):
        raise ValidationError(f"expected a parameters dataclass; got {type(params).__name__}")
    return {f.name: _to_plain(getattr(params, f.name)) for f in dataclasses.fields(params)}


def _to_plain(value: Any) -> Any:
    return convert_to_dict_recursively(value) if dataclasses.is_dataclass(value) else value


def changes_asdict(params: Any) -> dict[str, Any]:
    """The fields of a parameters dataclass whose value differs from the field's default."""
    if not dataclasses.is_dataclass(params):
        raise ValidationError(f"expected a parameters dataclass; got {type(params).__name__}")
    changed = {}
    for f in dataclasses.fields(params):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        value = getattr(params, f.name)
        if value != default:
            changed[f.name] = value
    return changed


def _warn_no_effect(advanced: AdvancedQuantizationParameters) -> None:
    """One warning per process for each NNCF option set to a value that changes nothing here."""
    if advanced.inplace_statistics is not True:
        warn_once("inplace_statistics", (
            f"advanced_parameters.inplace_statistics={advanced.inplace_statistics!r} has no effect: nncompress "
            "always reduces statistics as each calibration item arrives, on every backend"
        ))
    if advanced.disable_channel_alignment is not True:
        warn_once("disable_channel_alignment", (
            f"advanced_parameters.disable_channel_alignment={advanced.disable_channel_alignment!r} has no effect: "
            "channel alignment is not implemented, so it never runs"
        ))
    if advanced.bias_correction_params.apply_for_all_nodes:
        warn_once("apply_for_all_nodes", (
            "advanced_parameters.bias_correction_params.apply_for_all_nodes=True has no effect: bias correction "
            "corrects the layers that have a bias (adding a bias to the others is not implemented)"
        ))


_SUPPORTED_RULES = (QuantizerPropagationRule.MERGE_ALL_IN_ONE, QuantizerPropagationRule.DO_NOT_MERGE_BRANCHES)
_SUPPORTED_SCHEMES = (QuantizationScheme.SYMMETRIC, QuantizationScheme.ASYMMETRIC)


def check_advanced_quantization(advanced: AdvancedQuantizationParameters) -> AdvancedQuantizationParameters:
    """``advanced`` with enum fields coerced; raises for NNCF values ``quantize`` does not implement."""
    rule = coerce_enum(advanced.quantizer_propagation_rule, QuantizerPropagationRule, "quantizer_propagation_rule")
    if rule not in _SUPPORTED_RULES:
        raise UnsupportedBackendError(
            f"quantizer_propagation_rule={rule.name} is not supported; use "
            + " or ".join(r.name for r in _SUPPORTED_RULES)
        )
    for name in ("activations_quantization_params", "weights_quantization_params"):
        params = getattr(advanced, name)
        if isinstance(params, FP8QuantizationParameters):  # quantize checks that the mode is an FP8 one
            destination = coerce_enum(params.destination_type, FP8Type, f"{name}.destination_type", allow_none=True)
            advanced = dataclasses.replace(advanced, **{name: FP8QuantizationParameters(destination)})
            continue
        if params is not None and not isinstance(params, QuantizationParameters):
            raise ValidationError(f"{name} must be a QuantizationParameters or None; got {type(params).__name__}")
        if params is not None and params.mode is not None:
            scheme = coerce_enum(params.mode, QuantizationScheme, f"{name}.mode")
            if scheme not in _SUPPORTED_SCHEMES:
                raise UnsupportedBackendError(
                    f"{name}.mode={scheme.value!r} (a LoRA fake-quantize format) is not supported by quantize; "
                    "use 'symmetric' or 'asymmetric'"
                )
            advanced = dataclasses.replace(advanced, **{name: dataclasses.replace(params, mode=scheme)})
    _warn_no_effect(advanced)
    if advanced.backend_params:
        keys = sorted(advanced.backend_params)
        warn_once(f"quantize backend_params {keys}", (
            f"advanced_parameters.backend_params {keys}: quantize does not use backend parameters yet; ignored"
        ))
    return dataclasses.replace(advanced, quantizer_propagation_rule=rule)
