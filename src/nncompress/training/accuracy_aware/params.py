"""The ``accuracy_aware_training`` section of an NNCF config as a frozen spec, defaults filled in (§1.2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nncompress.errors import ConfigError

MODES = ("early_exit", "adaptive_compression_level")
DEFAULT_RELATIVE_DEGRADATION = 1.0  # percent, when neither budget is given (NNCF's default)


@dataclass(frozen=True)
class AccuracyAwareParams:
    """Budget, epoch limits and the compression-rate search settings of an accuracy-aware loop."""

    mode: str
    maximal_relative_accuracy_degradation: float | None = None  # percent of the uncompressed accuracy
    maximal_absolute_accuracy_degradation: float | None = None  # in the metric's own units
    maximal_total_epochs: int = 10000
    initial_training_phase_epochs: int = 5
    initial_compression_rate_step: float = 0.1
    compression_rate_step_reduction_factor: float = 0.5
    minimal_compression_rate_step: float = 0.025
    patience_epochs: int = 3
    lr_reduction_factor: float = 0.5
    maximal_compression_rate: float = 0.95

    def maximal_drop(self, uncompressed_accuracy: float) -> float:
        """The largest allowed ``uncompressed - compressed`` accuracy, in the metric's units."""
        if self.maximal_absolute_accuracy_degradation is not None:
            return float(self.maximal_absolute_accuracy_degradation)
        relative = self.maximal_relative_accuracy_degradation
        relative = DEFAULT_RELATIVE_DEGRADATION if relative is None else relative
        return abs(float(uncompressed_accuracy)) * float(relative) / 100.0

    def budget_text(self) -> str:
        if self.maximal_absolute_accuracy_degradation is not None:
            return f"absolute drop <= {self.maximal_absolute_accuracy_degradation:g}"
        relative = self.maximal_relative_accuracy_degradation
        return f"relative drop <= {DEFAULT_RELATIVE_DEGRADATION if relative is None else relative:g}%"


def accuracy_aware_params(config: Any) -> AccuracyAwareParams:
    """The validated ``accuracy_aware_training`` section of ``config`` (an ``NNCFConfig`` or a dict)."""
    from nncompress.training.config import schema

    if not isinstance(config, dict):
        raise ConfigError(f"config must be an NNCFConfig or a dict; got {type(config).__name__}")
    section = config.get("accuracy_aware_training")
    if section is None:
        raise ConfigError(
            "accuracy_aware_training: the config has no \"accuracy_aware_training\" section; add e.g. "
            "{\"mode\": \"early_exit\", \"params\": {\"maximal_relative_accuracy_degradation\": 1.0}} "
            f"(modes: {', '.join(MODES)})"
        )
    schema.validate_definition("accuracy_aware_training", section, "accuracy_aware_training")
    params = dict(section.get("params", {}))
    spec = AccuracyAwareParams(mode=section["mode"], **params)
    _check(spec)
    return spec


def _check(p: AccuracyAwareParams) -> None:
    """Relations the schema cannot state; each message names the key and the valid range."""
    where = "accuracy_aware_training.params"
    if p.maximal_absolute_accuracy_degradation is not None and p.maximal_relative_accuracy_degradation is not None:
        raise ConfigError(
            f"{where}: maximal_relative_accuracy_degradation ({p.maximal_relative_accuracy_degradation}) and "
            f"maximal_absolute_accuracy_degradation ({p.maximal_absolute_accuracy_degradation}) are mutually "
            "exclusive: set one of them"
        )
    if p.minimal_compression_rate_step > p.initial_compression_rate_step:
        raise ConfigError(
            f"{where}.minimal_compression_rate_step ({p.minimal_compression_rate_step}) must not exceed "
            f"initial_compression_rate_step ({p.initial_compression_rate_step}): the search would stop before "
            "its first step"
        )
