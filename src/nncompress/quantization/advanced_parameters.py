"""NNCF's ``nncf.quantization.advanced_parameters`` (re-exports; the definitions live in
``nncompress.parameters`` and ``nncompress.weight_parameters``).

``QuantizationMode`` here is the quantizer grid (SYMMETRIC, ASYMMETRIC, ...), as in NNCF; the FP8
``QuantizationMode`` of ``quantize(mode=...)`` is ``nncompress.parameters.QuantizationMode``.
"""

from nncompress.parameters import (
    AdvancedAccuracyRestorerParameters,
    AdvancedBiasCorrectionParameters,
    AdvancedQuantizationParameters,
    AdvancedSmoothQuantParameters,
    FP8QuantizationParameters,
    FP8Type,
    OverflowFix,
    QuantizationParameters,
    QuantizerPropagationRule,
    RangeEstimatorParameters,
    RestoreMode,
    StrEnum,
    TensorDataType,
    api,
    changes_asdict,
    convert_to_dict_recursively,
)
from nncompress.parameters import QuantizationScheme as QuantizationMode
from nncompress.weight_parameters import (
    AdvancedAdaptiveCodebookParameters,
    AdvancedAWQParameters,
    AdvancedCompressionParameters,
    AdvancedGPTQParameters,
    AdvancedLoraCorrectionParameters,
    AdvancedScaleEstimationParameters,
    GroupSizeFallbackMode,
)

__all__ = [
    "AdvancedAWQParameters",
    "AdvancedAccuracyRestorerParameters",
    "AdvancedAdaptiveCodebookParameters",
    "AdvancedBiasCorrectionParameters",
    "AdvancedCompressionParameters",
    "AdvancedGPTQParameters",
    "AdvancedLoraCorrectionParameters",
    "AdvancedQuantizationParameters",
    "AdvancedScaleEstimationParameters",
    "AdvancedSmoothQuantParameters",
    "FP8QuantizationParameters",
    "FP8Type",
    "GroupSizeFallbackMode",
    "OverflowFix",
    "QuantizationMode",
    "QuantizationParameters",
    "QuantizerPropagationRule",
    "RangeEstimatorParameters",
    "RestoreMode",
    "StrEnum",
    "TensorDataType",
    "api",
    "changes_asdict",
    "convert_to_dict_recursively",
]
