"""The module paths, names and constructions NNCF 3.x user code writes (issue 13's list)."""

import dataclasses

import nncf
import nncf.torch
from nncf.data import Dataset, generate_text_data
from nncf.errors import InternalError, ParameterNotSupportedError, UnsupportedDatasetError, ValidationError
from nncf.onnx.quantization.backend_parameters import BackendParameters
from nncf.parameters import CompressionFormat, CompressWeightsMode, StripFormat
from nncf.quantization.advanced_parameters import (
    AdvancedAccuracyRestorerParameters,
    AdvancedCompressionParameters,
    GroupSizeFallbackMode,
    RestoreMode,
)
from nncf.scopes import IgnoredScope, Subgraph
from nncf.tensor import TensorDataType
from nncf.torch import disable_tracing, get_config, load_from_config

assert callable(generate_text_data) and callable(get_config) and callable(load_from_config)
assert BackendParameters.COMPRESS_WEIGHTS == "compress_weights"
assert [m.value for m in StripFormat] == ["native", "dequantize", "in_place"]
assert CompressionFormat.DQ.value == "dequantize" and CompressWeightsMode.NVFP4.value == "nvfp4"
assert TensorDataType.f8e4m3.value == "f8e4m3"

# positional construction in NNCF's field order
restorer = AdvancedAccuracyRestorerParameters(5, False, 100, None, None, RestoreMode.ONLY_ACTIVATIONS)
assert restorer.max_num_iterations == 5 and restorer.ranking_subset_size == 100
assert restorer.restore_mode is RestoreMode.ONLY_ACTIVATIONS
compression = AdvancedCompressionParameters(None, 256, GroupSizeFallbackMode.ADJUST, 16)
assert compression.min_adjusted_group_size == 16
assert [f.name for f in dataclasses.fields(AdvancedCompressionParameters)][:4] == [
    "statistics_path", "lora_adapter_rank", "group_size_fallback_mode", "min_adjusted_group_size"]
assert IgnoredScope(names=["a"], subgraphs=[Subgraph(inputs=["x"], outputs=["y"])]).subgraphs[0].inputs == ["x"]

# NNCF 3.x's Dataset keyword, and NNCF's exception classes
items = Dataset([1, 2], transform_func=lambda v: v * 2)
assert list(items.get_inference_data()) == [2, 4]
for error in (InternalError, ParameterNotSupportedError, UnsupportedDatasetError):
    assert issubclass(error, Exception)
try:
    nncf.compress_weights(object())
except nncf.UnsupportedModelError as exc:
    assert "object" in str(exc)
else:
    raise AssertionError("compress_weights accepted an object")
try:
    nncf.Dataset([1], transform_func=1)
except ValidationError as exc:
    assert "callable" in str(exc)


@disable_tracing
def helper(x):
    return x


assert helper(3) == 3
