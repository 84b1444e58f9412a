"""nncompress: compress trained neural networks (NNCF's API: ``import nncompress as nncf``)."""

from nncompress.api.accuracy_control import quantize_with_accuracy_control
from nncompress.api.compress_weights import compress_weights
from nncompress.api.export import export, strip
from nncompress.api.graph import build_graph
from nncompress.api.quantize import quantize
from nncompress.dataset import Dataset
from nncompress.errors import (
    AccuracyDropError,
    CalibrationError,
    GraphCaptureError,
    InvalidGroupSizeError,
    NNCompressError,
    OneShotDatasetError,
    UnsupportedBackendError,
    UnsupportedModelError,
    ValidationError,
)
from nncompress.log import set_log_level
from nncompress.parameters import (
    AdvancedAccuracyRestorerParameters,
    AdvancedBiasCorrectionParameters,
    AdvancedQuantizationParameters,
    AdvancedSmoothQuantParameters,
    AggregatorType,
    BackupMode,
    CompressWeightsMode,
    DropType,
    ModelType,
    OverflowFix,
    QuantizationMode,
    QuantizationParameters,
    QuantizationPreset,
    QuantizationScheme,
    RangeEstimatorParameters,
    RangeEstimatorParametersSet,
    SensitivityMetric,
    StatisticsCollectorParameters,
    StatisticsType,
    TargetDevice,
)
from nncompress.report import CompressionReport, last_report
from nncompress.scopes import IgnoredScope, Subgraph
from nncompress.weight_parameters import (
    AdvancedAdaptiveCodebookParameters,
    AdvancedAWQParameters,
    AdvancedCompressionParameters,
    AdvancedGPTQParameters,
    AdvancedLoraCorrectionParameters,
    AdvancedScaleEstimationParameters,
    CompressionFormat,
    GroupSizeFallbackMode,
)

__version__ = "0.1.0"

__all__ = [
    "AdvancedAWQParameters",
    "AdvancedCompressionParameters",
    "AdvancedAdaptiveCodebookParameters",
    "AdvancedGPTQParameters",
    "AdvancedLoraCorrectionParameters",
    "AdvancedScaleEstimationParameters",
    "CompressionFormat",
    "GroupSizeFallbackMode",
    "compress_weights",
    "set_log_level",
    "AccuracyDropError",
    "AdvancedAccuracyRestorerParameters",
    "AdvancedBiasCorrectionParameters",
    "AdvancedQuantizationParameters",
    "AdvancedSmoothQuantParameters",
    "BackupMode",
    "CalibrationError",
    "CompressWeightsMode",
    "CompressionReport",
    "Dataset",
    "DropType",
    "GraphCaptureError",
    "IgnoredScope",
    "InvalidGroupSizeError",
    "ModelType",
    "NNCompressError",
    "OneShotDatasetError",
    "OverflowFix",
    "QuantizationMode",
    "QuantizationParameters",
    "QuantizationPreset",
    "QuantizationScheme",
    "RangeEstimatorParameters",
    "RangeEstimatorParametersSet",
    "StatisticsCollectorParameters",
    "StatisticsType",
    "AggregatorType",
    "SensitivityMetric",
    "Subgraph",
    "TargetDevice",
    "UnsupportedBackendError",
    "UnsupportedModelError",
    "ValidationError",
    "build_graph",
    "export",
    "last_report",
    "quantize",
    "quantize_with_accuracy_control",
    "strip",
]
