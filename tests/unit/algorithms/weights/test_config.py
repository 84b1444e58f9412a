"""The group-size rule is one method: -1 means one group of every input channel."""

from __future__ import annotations

from nncompress.algorithms.weights.config import LayerConfig, WeightCompressionOptions
from nncompress.parameters import CompressWeightsMode as M
from nncompress.parameters import SensitivityMetric


def options(mode=M.INT4_SYM, group_size: int = 16, **methods) -> WeightCompressionOptions:
    """Resolved options with the data-aware ``methods`` (awq=..., scale_estimation=...) switched on."""
    flags = {name: methods.get(name, False) for name in ("awq", "scale_estimation", "gptq", "lora_correction")}
    return WeightCompressionOptions(
        mode=mode, ratio=1.0, group_size=group_size, all_layers=True,
        sensitivity_metric=SensitivityMetric.WEIGHT_QUANTIZATION_ERROR, subset_size=128, backup_mode=None, **flags,
    )


def test_channels_per_group():
    assert LayerConfig(M.INT4_SYM, 32).channels_per_group(128) == 32
    assert LayerConfig(M.INT4_SYM, -1).channels_per_group(128) == 128
    assert LayerConfig(M.INT8_ASYM).channels_per_group(48) == 48
