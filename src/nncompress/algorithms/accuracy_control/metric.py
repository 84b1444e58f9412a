"""Metric drops (absolute or relative) and the direction of the metric (higher or lower is better)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from nncompress.errors import ValidationError
from nncompress.graph.edits import SetConstant
from nncompress.parameters import DropType

logger = logging.getLogger("nncompress")
DROP_TOLERANCE = 1e-9  # drops this close (relative) to max_drop count as within it


@dataclass(frozen=True)
class MetricScale:
    """Turns metrics into drops against the float model: positive = worse than float."""

    fp32_metric: float
    drop_type: DropType
    sign: int = 1  # +1: higher is better; -1: lower is better

    @property
    def lower_is_better(self) -> bool:
        return self.sign < 0

    def drop(self, metric: float) -> float:
        """The drop of ``metric`` (in metric units, or a fraction of the float metric for RELATIVE)."""
        absolute = self.sign * (self.fp32_metric - metric)
        if self.drop_type is DropType.RELATIVE:
            return absolute / abs(self.fp32_metric)
        return absolute

    def within(self, drop: float, max_drop: float) -> bool:
        """``drop <= max_drop`` up to float rounding: 0.9 - 0.89 = 0.010000000000000009 fits max_drop=0.01.
        The tolerance follows the metric's magnitude (absolute drops) or is relative (relative drops)."""
        magnitude = 1.0 if self.drop_type is DropType.RELATIVE else max(1.0, abs(self.fp32_metric))
        return drop <= max_drop + DROP_TOLERANCE * max(magnitude, abs(max_drop))

    def score(self, metric: float) -> float:
        """``metric`` oriented so that higher is better."""
        return self.sign * metric


def metric_scale(
    fp32: float, int8: float, drop_type: DropType, max_drop: float, probe: Callable[[], float | None]
) -> MetricScale:
    """The scale of the metric; its direction is settled only when it decides the outcome.

    Rule: when INT8 is within ``max_drop`` of FP32 either way, the direction does not matter (higher is
    better is assumed). Otherwise ``probe()`` evaluates a deliberately degraded model (float weights with
    strong noise): the metric moves in the worse direction. If the probe leaves the metric unchanged,
    INT8 is assumed to be the worse model (quantization seldom improves a metric beyond the budget).
    """
    if drop_type is DropType.RELATIVE and fp32 == 0:
        raise ValidationError("drop_type=RELATIVE divides by the FP32 metric, which is 0; use DropType.ABSOLUTE")
    scale = MetricScale(fp32, drop_type, 1)
    if scale.within(abs(scale.drop(int8)), max_drop):
        return scale
    degraded = probe()
    if degraded is not None and degraded != fp32:
        sign = 1 if degraded < fp32 else -1
        reason = f"a degraded model scores {degraded:.6g} against {fp32:.6g} for FP32"
    else:
        sign = 1 if int8 < fp32 else -1
        reason = "the degraded-model probe was inconclusive; INT8 assumed worse than FP32"
    logger.info("accuracy control: the metric is %s is better (%s)", "higher" if sign > 0 else "lower", reason)
    return MetricScale(fp32, drop_type, sign)


def noisy_weight_edits(adapter, model, weights, seed: int = 0) -> list[SetConstant]:
    """SetConstant edits adding Gaussian noise (std = the weight's std) to each (node, port) weight."""
    rng = np.random.default_rng(seed)
    edits = []
    for node, port in weights:
        value = adapter.get_constant(model, node, port)
        spread = float(np.std(value)) or float(np.max(np.abs(value))) or 1.0
        noisy = value + rng.normal(0.0, spread, size=value.shape)
        edits.append(SetConstant(node, port, noisy.astype(value.dtype)))
    return edits
