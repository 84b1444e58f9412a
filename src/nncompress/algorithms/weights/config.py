"""Resolved options of a ``compress_weights`` call and per-layer compression configurations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nncompress.numerics.lowbit import (
    FIXED_GROUP_SIZES,
    FLOAT_BACKUP,
    canonical_mode,
    is_int8_mode,
    is_low_bit,
    mode_bits,
)
from nncompress.parameters import BackupMode, CompressWeightsMode, SensitivityMetric
from nncompress.scopes import IgnoredScope
from nncompress.weight_parameters import AdvancedCompressionParameters

Mode = CompressWeightsMode
DATA_AWARE_METRICS = frozenset(
    {
        SensitivityMetric.HESSIAN_INPUT_ACTIVATION,
        SensitivityMetric.MEAN_ACTIVATION_VARIANCE,
        SensitivityMetric.MAX_ACTIVATION_VARIANCE,
        SensitivityMetric.MEAN_ACTIVATION_MAGNITUDE,
    }
)


@dataclass(frozen=True)
class LayerConfig:
    """How one weight is stored: ``mode`` (None = float) and ``group_size`` (-1 = per channel)."""

    mode: Mode | None
    group_size: int = -1

    @property
    def bits(self) -> int:
        return 32 if self.mode is None else mode_bits(self.mode)

    @property
    def is_primary_low_bit(self) -> bool:
        """A 2-, 3- or 4-bit mode: the layers AWQ, scale estimation, GPTQ and LoRA correction work on."""
        return self.mode is not None and is_low_bit(self.mode)


    def channels_per_group(self, channels: int) -> int:
        """The group-size rule: ``group_size`` input channels per group, or all ``channels`` when -1."""
        return channels if self.group_size == -1 else self.group_size

    def describe(self) -> str:
        if self.mode is None:
            return "float"
        granularity = "per-channel" if self.group_size == -1 else f"group size {self.group_size}"
        return f"{self.mode.value}, {granularity}"


@dataclass
class WeightCompressionOptions:
    """Every argument of ``compress_weights`` after validation and default resolution."""

    mode: Mode
    ratio: float
    group_size: int
    all_layers: bool
    sensitivity_metric: SensitivityMetric
    subset_size: int
    awq: bool
    scale_estimation: bool
    gptq: bool
    lora_correction: bool
    backup_mode: BackupMode | None  # None: not given, NNCF's default for the mode
    ignored_scope: IgnoredScope | None = None
    dataset: Any = None
    advanced: AdvancedCompressionParameters = field(default_factory=AdvancedCompressionParameters)

    @property
    def primary(self) -> LayerConfig:
        return LayerConfig(canonical_mode(self.mode), self.group_size)

    @property
    def backup(self) -> LayerConfig:
        if self.backup_mode is BackupMode.NONE:
            return LayerConfig(None)
        float_backup = FLOAT_BACKUP.get(canonical_mode(self.mode))
        if self.backup_mode is None and float_backup is not None:  # float formats back up in FP8
            return LayerConfig(float_backup, FIXED_GROUP_SIZES.get(float_backup, self.group_size))
        backup = Mode((self.backup_mode or BackupMode.INT8_ASYM).value)
        if backup in (Mode.FP8_E4M3, Mode.MXFP8_E4M3):  # FP8: the primary's groups; MXFP8: groups of 32
            return LayerConfig(backup, FIXED_GROUP_SIZES.get(backup, self.group_size))
        return LayerConfig(backup, -1)

    def backup_for(self, channels: int) -> LayerConfig:
        """The backup configuration for a weight with ``channels`` input channels: a float-format backup
        whose group does not divide them goes per channel (MX formats, fixed at 32: INT8_ASYM)."""
        config = self.backup
        if config.mode is None or config.group_size == -1 or channels % config.group_size == 0:
            return config
        if config.mode in FIXED_GROUP_SIZES:
            return LayerConfig(Mode.INT8_ASYM, -1)
        return LayerConfig(config.mode, -1)

    @property
    def is_8bit(self) -> bool:
        """INT8_ASYM/INT8_SYM: every weight per channel in that mode (no ratio, no backup)."""
        return is_int8_mode(self.mode)

    @property
    def data_aware_mixed_precision(self) -> bool:
        return self.ratio < 1.0 and self.sensitivity_metric in DATA_AWARE_METRICS

    @property
    def needs_statistics(self) -> bool:
        awq_data = self.awq and self.advanced.awq_params.prefer_data_aware_scaling and self.dataset is not None
        return self.data_aware_mixed_precision or awq_data or self.scale_estimation or self.gptq or self.lora_correction


def default_group_size(mode: Mode) -> int:
    """NNCF's defaults: per channel for INT8 modes and CB4, fixed MX (32) / NVFP4 (16) groups, else 128."""
    mode = canonical_mode(mode)
    if is_int8_mode(mode) or mode in (Mode.CB4_F8E4M3, Mode.CODEBOOK, Mode.ADAPTIVE_CODEBOOK):
        return -1
    return FIXED_GROUP_SIZES.get(mode, 128)
