"""Option records of ``compress_weights`` (names and defaults follow NNCF unless noted)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from nncompress.parameters import CompressionFormat, StrEnum, TensorDataType

__all__ = [
    "AdvancedAWQParameters",
    "AdvancedAdaptiveCodebookParameters",
    "AdvancedCompressionParameters",
    "AdvancedGPTQParameters",
    "AdvancedLoraCorrectionParameters",
    "AdvancedScaleEstimationParameters",
    "CompressionFormat",
    "GroupSizeFallbackMode",
]


class GroupSizeFallbackMode(StrEnum):
    """What to do with a layer whose input-channel count the group size does not divide.

    ERROR raises ``InvalidGroupSizeError``; IGNORE leaves the layer in float; ADJUST (our default,
    NNCF's is ERROR) uses the largest power of two that divides the channel count and is at most the
    requested group size, or the backup precision when that is below ``min_adjusted_group_size``.
    Every adjusted layer is listed in the report.
    """

    ERROR = "error"
    IGNORE = "ignore"
    ADJUST = "adjust"


@dataclass
class AdvancedAWQParameters:
    """AWQ: ``subset_size`` samples, top ``percent_to_apply`` salient channels, alpha grid search."""

    subset_size: int = 32
    percent_to_apply: float = 0.002
    alpha_min: float = 0.0
    alpha_max: float = 1.0
    steps: int = 100
    prefer_data_aware_scaling: bool = True


@dataclass
class AdvancedScaleEstimationParameters:
    """Scale estimation: ``initial_steps`` re-estimations, then ``scale_steps`` shrunk starting scales."""

    subset_size: int = 64
    initial_steps: int = 5
    scale_steps: int = 5
    weight_penalty: float = -1.0


@dataclass
class AdvancedAdaptiveCodebookParameters:
    """ADAPTIVE_CODEBOOK: ``num_elements`` values (at most 16) fitted per weight, rounded to ``value_type``
    (TensorDataType.f8e4m3 or float16); ``across_blocks`` (one codebook shared by several weights) is not
    supported."""

    value_type: TensorDataType = TensorDataType.f8e4m3
    across_blocks: bool = False
    num_elements: int = 16


@dataclass
class AdvancedGPTQParameters:
    """GPTQ: Hessian dampening (fraction of its mean diagonal; 0.01 as published, NNCF's default is 0.1),
    column block size (lazy batch updates), samples; ``act_order`` (not in NNCF): whole groups by their
    largest Hessian diagonal, columns inside a group in descending diagonal, each group's scale fitted on
    its error-updated columns; ``static_groups`` (not in NNCF): group scales from the original weight
    before the sweep (with act-order: columns in descending diagonal over the whole weight)."""

    damp_percent: float = 0.01
    block_size: int = 128
    subset_size: int = 128
    act_order: bool = True
    static_groups: bool = False


@dataclass
class AdvancedLoraCorrectionParameters:
    """LoRA correction: adapter rank, alternating least-squares iterations, regularization, samples."""

    adapter_rank: int = 8
    num_iterations: int = 3
    apply_regularization: bool = True
    subset_size: int = 128
    use_int8_adapters: bool = True


@dataclass
class AdvancedCompressionParameters:
    """Rarely changed options of ``compress_weights``.

    ``range_search`` (not in NNCF, off by default): data-free 4-bit compression tries a few clipped
    ranges per group and keeps the one with the smallest weight error. It helps encoders (MiniLM embedding
    cosine 0.955 -> 0.964 with INT4_SYM) but clips the outlier weights LLMs depend on (SmolLM2 INT4_SYM
    perplexity 27.3 -> 29.5), so the default is NNCF's round-to-nearest range.

    ``statistics_path``: a directory where the calibration statistics of data-aware runs are saved and
    from which later runs on the same model load them instead of running the model (every backend).
    """

    statistics_path: str | os.PathLike | None = None
    lora_adapter_rank: int = 256
    group_size_fallback_mode: GroupSizeFallbackMode = GroupSizeFallbackMode.ADJUST
    min_adjusted_group_size: int = 32
    awq_params: AdvancedAWQParameters = field(default_factory=AdvancedAWQParameters)
    scale_estimation_params: AdvancedScaleEstimationParameters = field(
        default_factory=AdvancedScaleEstimationParameters
    )
    gptq_params: AdvancedGPTQParameters = field(default_factory=AdvancedGPTQParameters)
    lora_correction_params: AdvancedLoraCorrectionParameters = field(
        default_factory=AdvancedLoraCorrectionParameters
    )
    backend_params: dict = field(default_factory=dict)
    codebook: Any = None  # mode='codebook': a sorted 1-D array of 2..16 values (indices stored in 4 bits)
    adaptive_codebook_params: AdvancedAdaptiveCodebookParameters = field(
        default_factory=AdvancedAdaptiveCodebookParameters
    )
    # nncompress' own options (after NNCF's fields, so positional construction matches NNCF)
    range_search: bool = False
