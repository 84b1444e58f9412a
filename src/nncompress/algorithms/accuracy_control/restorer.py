"""The accuracy-control loop: revert the most harmful quantizer groups until the drop fits ``max_drop``."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from nncompress.parameters import DropType
from nncompress.progress import progress_iter

from .evaluator import Evaluation, Evaluator
from .groups import ACTIVATIONS_AND_WEIGHTS, QuantizerGroup, build_groups, edits_without
from .metric import MetricScale, metric_scale, noisy_weight_edits
from .ranking import Ranker, float_outputs, metric_errors, output_errors, top_items

logger = logging.getLogger("nncompress")


@dataclass
class RestorerOptions:
    max_drop: float = 0.01
    drop_type: DropType = DropType.ABSOLUTE
    max_num_iterations: int = 2**31 - 1
    ranking_subset_size: int = 300
    num_reverted_per_step: int = 1
    rerank_every: int | None = None
    restore_mode: str = ACTIVATIONS_AND_WEIGHTS


@dataclass
class RevertStep:
    """One accepted revert and its measured effect on the drop."""

    groups: list[QuantizerGroup]
    drop_before: float
    drop_after: float
    metric: float
    ranking_scores: list[float]


@dataclass
class RestorerOutcome:
    model: Any
    success: bool
    fp32_metric: float
    int8_metric: float
    metric: float
    drop: float
    scale: MetricScale
    steps: list[RevertStep] = field(default_factory=list)
    rejected: list[tuple[QuantizerGroup, float]] = field(default_factory=list)  # (group, drop it gave)
    num_groups: int = 0
    num_operations: int = 0
    ranking_mode: str = ""
    stop_reason: str = ""

    @property
    def reverted_operations(self) -> list[str]:
        return [op for step in self.steps for g in step.groups for op in (g.operations or g.quantizers)]


@dataclass
class _State:
    model: Any
    metric: float
    drop: float
    reverted: list[QuantizerGroup] = field(default_factory=list)
    num_steps: int = 0


def restore_accuracy(adapter, fp32_model: Any, ptq, evaluator: Evaluator, options: RestorerOptions) -> RestorerOutcome:
    """Evaluate FP32 and INT8; if INT8 drops more than ``max_drop``, revert groups one step at a time."""
    fp32 = evaluator(fp32_model)
    int8 = evaluator(ptq.model)
    scale = metric_scale(fp32.metric, int8.metric, options.drop_type, options.max_drop,
                         lambda: _probe(adapter, ptq, evaluator))
    drop = scale.drop(int8.metric)
    logger.info("accuracy control: FP32 metric %.6g, INT8 metric %.6g, drop %.6g (max_drop %.6g)",
                fp32.metric, int8.metric, drop, options.max_drop)
    success = scale.within(drop, options.max_drop)
    outcome = RestorerOutcome(ptq.model, success, fp32.metric, int8.metric, int8.metric, drop, scale)
    groups = build_groups(ptq.graph, ptq.setup, ptq.edits, options.restore_mode)
    outcome.num_groups = len(groups)
    outcome.num_operations = len({op for g in groups for op in g.operations})
    if outcome.success:
        outcome.stop_reason = "INT8 is within max_drop"
        return outcome
    if not groups or options.max_num_iterations < 1:
        outcome.stop_reason = "no quantizer group to revert" if not groups else "max_num_iterations is 0"
        return outcome
    ranker = _ranker(adapter, fp32_model, ptq, evaluator, scale, fp32, int8, options.ranking_subset_size)
    outcome.ranking_mode = ranker.mode
    _loop(adapter, ptq, evaluator, ranker, groups, _State(ptq.model, int8.metric, drop), options, outcome)
    return outcome


def _probe(adapter, ptq, evaluator: Evaluator) -> float | None:
    weights = [(w.node, w.port) for w in ptq.setup.weights]
    weights = weights or [(n.name, n.weight.port) for n in ptq.graph if n.weight is not None]
    if not weights:
        return None
    degraded = adapter.apply(ptq.base_model, noisy_weight_edits(adapter, ptq.base_model, weights))
    return evaluator(degraded).metric


def _ranker(adapter, fp32_model, ptq, evaluator: Evaluator, scale, fp32: Evaluation, int8: Evaluation, size: int):
    per_item = fp32.values is not None and int8.values is not None and len(fp32.values) == len(int8.values)
    if fp32.values is not None and not per_item:
        logger.warning("accuracy control: per-sample values of FP32 and INT8 differ in length; ranking by outputs")
    if per_item:
        subset = top_items(metric_errors(scale, fp32.values, int8.values), size)
        return Ranker(adapter, ptq.base_model, ptq.edits, evaluator, scale, subset)
    errors = output_errors(adapter, fp32_model, ptq.model, evaluator.dataset)
    subset = top_items(errors, size)
    reference = float_outputs(adapter, fp32_model, evaluator.dataset, subset)
    return Ranker(adapter, ptq.base_model, ptq.edits, evaluator, scale, subset, reference)


def _loop(adapter, ptq, evaluator, ranker: Ranker, groups, state: _State, options: RestorerOptions, outcome) -> None:
    ranked = ranker.rank(groups, [])
    per_step = options.num_reverted_per_step
    limit = min(options.max_num_iterations, math.ceil(len(ranked) / per_step))
    since_rank = 0
    best = state
    for iteration in progress_iter(range(1, limit + 1), limit, "Accuracy control"):
        step, ranked = ranked[:per_step], ranked[per_step:]
        candidate = state.reverted + [g for g, _ in step]
        model = adapter.apply(ptq.base_model, edits_without(ptq.edits, candidate))
        metric = evaluator(model).metric
        drop = ranker.scale.drop(metric)
        labels = "; ".join(g.label for g, _ in step)
        if drop > state.drop + 1e-12:
            logger.info("accuracy control: iteration %d: reverting %s gives metric %.6g, drop %.6g, worse than %.6g;"
                        " undone", iteration, labels, metric, drop, state.drop)
            outcome.rejected += [(g, drop) for g, _ in step]
        else:
            logger.info("accuracy control: iteration %d: reverted %s: metric %.6g, drop %.6g",
                        iteration, labels, metric, drop)
            outcome.steps.append(RevertStep([g for g, _ in step], state.drop, drop, metric, [s for _, s in step]))
            state = _State(model, metric, drop, candidate, len(outcome.steps))
            best = state if drop < best.drop - 1e-12 else best
            since_rank += 1
        if ranker.scale.within(state.drop, options.max_drop) or not ranked:
            break
        if options.rerank_every and since_rank >= options.rerank_every:
            ranked = ranker.rank([g for g, _ in ranked], state.reverted)
            since_rank = 0
    outcome.success = ranker.scale.within(state.drop, options.max_drop)
    if not outcome.success:  # keep the fewest reverts that reached the best drop
        state = best
        outcome.rejected += [(g, step.drop_after) for step in outcome.steps[state.num_steps :] for g in step.groups]
        del outcome.steps[state.num_steps :]
    outcome.model, outcome.metric, outcome.drop = state.model, state.metric, state.drop
    outcome.stop_reason = _stop_reason(outcome, ranked, options)


def _stop_reason(outcome: RestorerOutcome, remaining: list, options: RestorerOptions) -> str:
    if outcome.success:
        return "the drop is within max_drop"
    if not remaining:
        return "every quantizer group was tried"
    return f"max_num_iterations={options.max_num_iterations} was reached"
