"""Quantization with accuracy control: revert the most harmful quantizers until the metric fits a budget."""

from .evaluator import Evaluation, Evaluator, parse_result
from .groups import ACTIVATIONS_AND_WEIGHTS, ONLY_ACTIVATIONS, RESTORE_MODES, QuantizerGroup, build_groups
from .metric import MetricScale, metric_scale
from .ranking import Ranker, nmse, top_items
from .restorer import RestorerOptions, RestorerOutcome, RevertStep, restore_accuracy

__all__ = [
    "ACTIVATIONS_AND_WEIGHTS",
    "ONLY_ACTIVATIONS",
    "RESTORE_MODES",
    "Evaluation",
    "Evaluator",
    "MetricScale",
    "QuantizerGroup",
    "Ranker",
    "RestorerOptions",
    "RestorerOutcome",
    "RevertStep",
    "build_groups",
    "metric_scale",
    "nmse",
    "parse_result",
    "restore_accuracy",
    "top_items",
]
