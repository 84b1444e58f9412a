"""Activation statistics of the inputs of compressed Linear layers, reduced as they arrive.

Only what the enabled methods need is kept, per sample (one batch row of one calibration item):
- token means ``[hidden]`` (AWQ, scale estimation, LoRA correction) and the token count;
- scalars for the data-aware mixed-precision metrics (variance / magnitude over tokens);
- a running ``sum x x^T`` over tokens for GPTQ's Hessian.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nncompress.parameters import SensitivityMetric as Metric

FLUSH_TOKENS = 512  # buffered tokens per tensor before they are added to the Hessian sum


@dataclass(frozen=True)
class StatsNeeds:
    means: bool = False
    metric: Metric | None = None
    hessian: bool = False


def _samples(value: np.ndarray) -> np.ndarray:
    """``value`` as [samples, tokens, hidden] float32."""
    value = np.asarray(value, dtype=np.float32)
    if value.ndim == 1:
        return value.reshape(1, 1, -1)
    if value.ndim == 2:
        return value[None]
    return value.reshape(-1, value.shape[-2], value.shape[-1])


class ActivationStats:
    """Statistics of one activation tensor ``[..., tokens, hidden]``."""

    def __init__(self, needs: StatsNeeds, max_samples: int):
        self.needs = needs
        self.max_samples = max_samples
        self.means: list[np.ndarray] = []
        self.tokens: list[int] = []
        self.metric_values: list[float] = []
        self.hessian_sum: np.ndarray | None = None
        self.hessian_tokens = 0
        self._pending: list[np.ndarray] = []
        self._pending_tokens = 0
        self._hawq = 0.0

    def update(self, value: np.ndarray) -> None:
        samples = _samples(value)[: max(self.max_samples - len(self.tokens), 0)]
        if not samples.size:
            return
        self.tokens += [samples.shape[1]] * samples.shape[0]
        if self.needs.means:
            self.means += list(samples.mean(axis=1))
        if self.needs.metric is not None:
            self._update_metric(samples)
        if self.needs.hessian:
            self._pending.append(samples.reshape(-1, samples.shape[-1]))
            self._pending_tokens += self._pending[-1].shape[0]
            if self._pending_tokens >= FLUSH_TOKENS:  # a few MB per tensor at most
                self._flush()

    def _flush(self) -> None:
        """Add the buffered tokens to ``sum x x^T`` (one large product instead of one per item)."""
        if not self._pending:
            return
        flat = np.concatenate(self._pending)
        outer = flat.T @ flat
        self.hessian_sum = outer if self.hessian_sum is None else self.hessian_sum + outer
        self.hessian_tokens += flat.shape[0]
        self._pending, self._pending_tokens = [], 0

    def _update_metric(self, samples: np.ndarray) -> None:
        metric = self.needs.metric
        if metric is Metric.HESSIAN_INPUT_ACTIVATION:
            for sample in samples:  # reference accumulation: c = (c + sum x^2) / x.size
                self._hawq = (self._hawq + float(np.sum(sample.astype(np.float64) ** 2))) / sample.size
            return
        if metric is Metric.MEAN_ACTIVATION_MAGNITUDE:
            values = np.abs(samples).max(axis=1).mean(axis=-1)
        else:
            variance = samples.var(axis=1)
            values = variance.mean(axis=-1) if metric is Metric.MEAN_ACTIVATION_VARIANCE else variance.max(axis=-1)
        self.metric_values += [float(v) for v in values]

    @property
    def count(self) -> int:
        return len(self.tokens)

    def metric(self) -> float:
        """The sensitivity statistic of the data-aware mixed-precision metric."""
        if self.needs.metric is Metric.HESSIAN_INPUT_ACTIVATION:
            return 2.0 * self._hawq / max(self.count, 1)
        return float(np.mean(self.metric_values)) if self.metric_values else 0.0

    def mean_matrix(self, subset: int | None = None) -> np.ndarray:
        """Token means as ``[samples, hidden]``; with ``subset``, samples with the most tokens are
        preferred: sorted by token count (descending), every ``n // subset``-th."""
        means = np.stack(self.means) if self.means else np.zeros((0, 0), np.float32)
        if subset is None or subset >= len(means):
            return means
        order = np.argsort(-np.asarray(self.tokens), kind="stable")
        step = len(order) // subset
        return means[order[::step][:subset]]

    def channel_max(self) -> np.ndarray:
        """Per-channel max |token mean| over every collected sample."""
        return np.abs(np.stack(self.means)).max(axis=0)

    def hessian(self) -> np.ndarray:
        """``2 / tokens * sum x x^T`` (float64)."""
        self._flush()
        return 2.0 * self.hessian_sum.astype(np.float64) / max(self.hessian_tokens, 1)

    def scale_inputs(self, inverse_scale: np.ndarray) -> None:
        """The statistics of ``x * inverse_scale`` (after AWQ moved ``1 / s`` into the input)."""
        self.means = [m * inverse_scale for m in self.means]
        self.__dict__.pop("_gptq_factors", None)
        self._flush()
        if self.hessian_sum is not None:
            self.hessian_sum = self.hessian_sum * np.outer(inverse_scale, inverse_scale)
