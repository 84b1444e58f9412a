"""NNCF's own option objects (when the real nncf is installed too) are accepted by duck typing.

The look-alike classes below stand in for NNCF's: other classes with NNCF's class names and fields.
"""

from __future__ import annotations

import dataclasses
import enum

import pytest

import nncompress as nncf
from nncompress.errors import ValidationError
from nncompress.foreign import adopt


class StrEnum(str, enum.Enum):
    pass


class TargetDevice(StrEnum):  # NNCF's enums are str enums
    CPU = "CPU"


class DropType(enum.Enum):  # a plain Enum works too
    RELATIVE = "relative"


class StatisticsType(StrEnum):
    MAX = "max"


class RestoreMode(StrEnum):
    ONLY_ACTIVATIONS = "only_activations"


class QuantizationMode(StrEnum):  # NNCF's quantizer-grid enum (nncompress' QuantizationScheme)
    ASYMMETRIC = "asymmetric"


@dataclasses.dataclass
class StatisticsCollectorParameters:
    statistics_type: StatisticsType | None = None
    aggregator_type: None = None
    clipping_value: float | None = None
    quantile_outlier_prob: float = 1e-4


@dataclasses.dataclass
class RangeEstimatorParameters:
    min: StatisticsCollectorParameters = dataclasses.field(default_factory=StatisticsCollectorParameters)
    max: StatisticsCollectorParameters = dataclasses.field(default_factory=StatisticsCollectorParameters)


@dataclasses.dataclass
class QuantizationParameters:
    num_bits: int | None = None
    mode: QuantizationMode | None = None


@dataclasses.dataclass
class AdvancedQuantizationParameters:
    smooth_quant_alpha: float | None = None
    activations_range_estimator_params: RangeEstimatorParameters = dataclasses.field(
        default_factory=RangeEstimatorParameters)
    weights_quantization_params: QuantizationParameters | None = None


@dataclasses.dataclass
class AdvancedAccuracyRestorerParameters:
    max_num_iterations: int = 3
    restore_mode: RestoreMode = RestoreMode.ONLY_ACTIVATIONS


@dataclasses.dataclass
class IgnoredScope:
    names: list = dataclasses.field(default_factory=list)
    types: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class IgnoredScopeOfTheFuture:
    names: list = dataclasses.field(default_factory=list)


class Dataset:
    """NNCF's Dataset shape: get_data / get_inference_data / get_length / get_batch_size."""

    def __init__(self, items, transform):
        self.items, self.transform = items, transform

    def get_data(self, indices=None):
        return [self.items[i] for i in indices] if indices is not None else iter(self.items)

    def get_inference_data(self, indices=None):
        return (self.transform(item) for item in self.get_data(indices))

    def get_length(self):
        return len(self.items)

    def get_batch_size(self):
        return 1


def test_foreign_enum_members_map_to_nncompress_members_by_value():
    from nncompress.parameters import coerce_enum

    assert coerce_enum(TargetDevice.CPU, nncf.TargetDevice, "target_device") is nncf.TargetDevice.CPU
    assert coerce_enum(DropType.RELATIVE, nncf.DropType, "drop_type") is nncf.DropType.RELATIVE
    with pytest.raises(ValidationError, match="drop_type must be one of"):
        coerce_enum(StatisticsType.MAX, nncf.DropType, "drop_type")  # another enum is still refused


def test_foreign_records_become_nncompress_records_recursively():
    foreign = AdvancedQuantizationParameters(
        smooth_quant_alpha=0.3, weights_quantization_params=QuantizationParameters(8, QuantizationMode.ASYMMETRIC),
        activations_range_estimator_params=RangeEstimatorParameters(max=StatisticsCollectorParameters(StatisticsType.MAX)))
    ours = adopt(foreign, nncf.AdvancedQuantizationParameters, "advanced_parameters")
    assert type(ours) is nncf.AdvancedQuantizationParameters and ours.smooth_quant_alpha == 0.3
    estimator = ours.activations_range_estimator_params
    assert type(estimator) is nncf.RangeEstimatorParameters
    assert estimator.max.statistics_type is nncf.StatisticsType.MAX
    assert ours.weights_quantization_params.mode is nncf.QuantizationScheme.ASYMMETRIC
    assert ours.overflow_fix == nncf.AdvancedQuantizationParameters().overflow_fix  # fields not given: defaults
    restorer = adopt(AdvancedAccuracyRestorerParameters(), nncf.AdvancedAccuracyRestorerParameters, "x")
    assert restorer.restore_mode is nncf.RestoreMode.ONLY_ACTIVATIONS and restorer.max_num_iterations == 3


def test_unknown_fields_and_other_names_are_refused_or_left_to_the_type_check():
    IgnoredScopeOfTheFuture.__name__ = "IgnoredScope"
    try:
        future = IgnoredScopeOfTheFuture(names=["a"])
        future.__class__ = dataclasses.make_dataclass("IgnoredScope", [("names", list), ("lasers", int, 0)])
        with pytest.raises(ValidationError, match=r"fields nncompress' IgnoredScope does not know: \['lasers'\]"):
            adopt(future, nncf.IgnoredScope, "ignored_scope")
    finally:
        IgnoredScopeOfTheFuture.__name__ = "IgnoredScopeOfTheFuture"
    assert adopt("not a scope", nncf.IgnoredScope, "ignored_scope") == "not a scope"


def test_foreign_dataset_reads_through_the_public_methods():
    data = adopt(Dataset([1, 2, 3], lambda v: v * 10), nncf.Dataset, "calibration_dataset")
    assert isinstance(data, nncf.Dataset)
    assert list(data.get_inference_data()) == [10, 20, 30] and list(data.get_data()) == [1, 2, 3]
    assert list(data.get_data([2, 0])) == [1, 3] and list(data.get_inference_data([1])) == [20]
    assert data.get_length() == 3 and data.get_batch_size() == 1


def test_quantize_accepts_foreign_dataset_scope_and_parameters():
    torch = pytest.importorskip("torch")
    from .api.tiny_models import tiny_mlp_and_items

    model, items = tiny_mlp_and_items()
    ours = nncf.quantize(model, nncf.Dataset(items), target_device="CPU",
                         ignored_scope=nncf.IgnoredScope(names=["fc2/linear/0"]),
                         advanced_parameters=nncf.AdvancedQuantizationParameters(smooth_quant_alpha=0.3))
    theirs = nncf.quantize(model, Dataset(items, lambda v: v), target_device=TargetDevice.CPU,
                           ignored_scope=IgnoredScope(names=["fc2/linear/0"]),
                           advanced_parameters=AdvancedQuantizationParameters(smooth_quant_alpha=0.3))
    with torch.no_grad():
        assert torch.equal(ours(items[0]), theirs(items[0]))
        assert not torch.equal(theirs(items[0]), model(items[0]))
