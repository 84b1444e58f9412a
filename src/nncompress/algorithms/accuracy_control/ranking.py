"""Ranking subset and ranking of quantizer groups by how much reverting each one helps."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nncompress.progress import progress_iter

from .evaluator import Evaluator
from .groups import QuantizerGroup, edits_without
from .metric import MetricScale

logger = logging.getLogger("nncompress")


def nmse(reference: Sequence[np.ndarray], approx: Sequence[np.ndarray]) -> float:
    """Normalized squared error ``Σ(ref − approx)² / Σ ref²`` over all outputs of one item."""
    ref = [np.asarray(r, np.float64) for r in reference]
    num = sum(float(np.sum((r - np.asarray(a, np.float64)) ** 2)) for r, a in zip(ref, approx))
    den = sum(float(np.sum(r**2)) for r in ref)
    return num / den if den > 0 else num


def top_items(errors: Sequence[float], size: int) -> list[int]:
    """Indices (ascending) of the ``size`` items with the largest error."""
    order = np.argsort(-np.asarray(errors, dtype=np.float64), kind="stable")
    return sorted(int(i) for i in order[:size])


def output_errors(adapter, reference_model: Any, model: Any, dataset) -> list[float]:
    """Per-item NMSE of ``model``'s outputs against ``reference_model``'s on the inference data."""
    return [
        nmse(adapter.infer(reference_model, item), adapter.infer(model, item))
        for item in dataset.get_inference_data()
    ]


def metric_errors(scale: MetricScale, fp32_values: Sequence[float], int8_values: Sequence[float]) -> list[float]:
    """Per-item loss of the quantized model (positive = worse than float)."""
    return [scale.score(f) - scale.score(q) for f, q in zip(fp32_values, int8_values)]


@dataclass
class Ranker:
    """Scores candidate reverts on the ranking subset: higher score = better model.

    Metric mode (``reference`` None): the oriented metric of ``validation_fn`` on the subset.
    Output mode: minus the mean NMSE of the candidate's outputs against the float outputs.
    """

    adapter: Any
    base_model: Any
    edits: list
    evaluator: Evaluator
    scale: MetricScale
    subset: list[int]
    reference: list[list[np.ndarray]] | None = None  # float outputs on the subset (output mode)

    @property
    def mode(self) -> str:
        return "metric" if self.reference is None else "outputs"

    def score(self, reverted: Sequence[QuantizerGroup]) -> float:
        model = self.adapter.apply(self.base_model, edits_without(self.edits, reverted))
        if self.reference is None:
            return self.scale.score(self.evaluator(model, self.subset).metric)
        items = self.evaluator.dataset.get_inference_data(self.subset)
        errors = [nmse(ref, self.adapter.infer(model, item)) for ref, item in zip(self.reference, items)]
        return -float(np.mean(errors)) if errors else 0.0

    def rank(
        self, groups: Sequence[QuantizerGroup], reverted: Sequence[QuantizerGroup]
    ) -> list[tuple[QuantizerGroup, float]]:
        """``groups`` with their scores, the most helpful revert first (ties keep graph order)."""
        scored = []
        for group in progress_iter(groups, len(groups), "Ranking quantizer groups"):
            scored.append((group, self.score([*reverted, group])))
        ranked = sorted(scored, key=lambda gs: -gs[1])
        logger.info(
            "accuracy control: ranked %d groups by %s on %d items; first: %s",
            len(ranked), self.mode, len(self.subset), ranked[0][0].label if ranked else "-",
        )
        return ranked


def float_outputs(adapter, model: Any, dataset, subset: list[int]) -> list[list[np.ndarray]]:
    """The float model's outputs on the subset items."""
    return [list(adapter.infer(model, item)) for item in dataset.get_inference_data(subset)]
