"""Enums and frozen option records of the public API (names and values follow NNCF)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from nncompress.errors import one_of

E = TypeVar("E", bound=Enum)


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
    SYMMETRIC = "symmetric"
    ASYMMETRIC = "asymmetric"


class OverflowFix(StrEnum):
    ENABLE = "enable"
    FIRST_LAYER = "first_layer_only"
    DISABLE = "disable"


class QuantizerPropagationRule(StrEnum):
    MERGE_ALL_IN_ONE = "merge_all_in_one"
    DO_NOT_MERGE_BRANCHES = "do_not_merge_branches"


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


class DropType(StrEnum):
    ABSOLUTE = "absolute"
    RELATIVE = "relative"


def coerce_enum(value: Any, enum_cls: type[E], what: str, allow_none: bool = False) -> E | None:
    """Return ``value`` as a member of ``enum_cls``; accept members, values and names."""
    if value is None and allow_none:
        return None
    if isinstance(value, enum_cls):
        return value
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

    convolution: float = -1.0
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

    max_num_iterations: int = 2**31 - 1
    tune_hyperparams: bool = False
    ranking_subset_size: int | None = None
    num_ranking_workers: int | None = None
    restore_mode: str = "activations_and_weights"
    intermediate_model_dir: str | None = None
    num_reverted_per_step: int = 1
    rerank_every: int | None = None
