"""NNCF's ``nncf.quantization.range_estimator`` (re-exports of ``nncompress.parameters``)."""

from nncompress.parameters import (
    AggregatorType,
    RangeEstimatorParameters,
    RangeEstimatorParametersSet,
    StatisticsCollectorParameters,
    StatisticsType,
)

__all__ = [
    "AggregatorType",
    "RangeEstimatorParameters",
    "RangeEstimatorParametersSet",
    "StatisticsCollectorParameters",
    "StatisticsType",
]
