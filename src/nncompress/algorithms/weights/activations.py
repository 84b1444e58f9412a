"""Activation statistics of the inputs of compressed Linear layers, reduced as they arrive.

Only what the enabled methods need is kept, per sample (one batch row of one calibration item):
- token means ``[hidden]`` (AWQ, scale estimation, LoRA correction) and the token count;
- scalars for the data-aware mixed-precision metrics (variance / magnitude over tokens);
- a running ``sum x x^T`` over tokens for GPTQ's Hessian.

Tokens (rows ``[hidden]``) holding a NaN or Inf are dropped whole, for every statistic: a Hessian
needs whole token vectors, and one rule for all keeps the statistics consistent with each other.
``dropped_tokens`` counts them; a sample left without tokens is not counted as a sample.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from scipy.linalg import blas

from nncompress.parameters import SensitivityMetric as Metric

# buffered tokens per tensor before they are added to the Hessian sum (12 MB for a 1536-wide input): with 8-item
# block runs (1024 tokens of 128-token items) 512 flushed every run and GPTQ on SmolLM2 took 120 s instead of 100
FLUSH_TOKENS = 2048


@dataclass(frozen=True)
class StatsNeeds:
    means: bool = False
    metrics: frozenset[Metric] = frozenset()  # data-aware mixed-precision statistics to keep
    hessian: bool = False

    def covers(self, other: StatsNeeds) -> bool:
        """Whether statistics collected for ``self`` answer everything ``other`` asks."""
        return (self.means or not other.means) and self.metrics >= other.metrics and (self.hessian or not other.hessian)


def _symmetric(upper: np.ndarray, dtype=np.float32) -> np.ndarray:
    """The symmetric matrix (C order, ``dtype``) whose upper triangle is ``upper``'s; the other triangle
    is filled by square blocks (a whole transposed copy runs at half the speed on large matrices)."""
    full = upper.T.astype(dtype, order="C")  # its lower triangle holds the values
    size, block = len(full), 256
    for start in range(0, size, block):
        end = min(start + block, size)
        full[start:end, end:] = full[end:, start:end].T
        square = full[start:end, start:end]
        above = np.triu_indices(end - start, 1)
        square[above] = square.T[above]
    return full


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
        self.hidden = 0
        self.metric_values: dict[Metric, list[float]] = {m: [] for m in needs.metrics}
        self._gram: np.ndarray | None = None  # sum x x^T: upper triangle only, Fortran order
        self._product: np.ndarray | None = None  # one flush's x x^T (reused buffer)
        self.hessian_tokens = 0
        self._pending: list[np.ndarray] = []
        self._pending_tokens = 0
        self.dropped_tokens = 0  # tokens left out because they held a NaN or Inf

    def update(self, value: np.ndarray) -> None:
        samples = _samples(value)[: max(self.max_samples - len(self.tokens), 0)]
        if not samples.size:
            return
        samples, keep = self._finite_tokens(samples)
        if not samples.size:
            return
        self.tokens += [samples.shape[1]] * samples.shape[0] if keep is None else keep.sum(axis=1).tolist()
        self.hidden = samples.shape[2]
        if self.needs.means:
            self.means += list(samples.mean(axis=1) if keep is None else np.nanmean(samples, axis=1))
        if self.needs.metrics:
            self._update_metrics(samples, keep is not None)
        if self.needs.hessian:
            flat = samples.reshape(-1, samples.shape[-1])
            self._pending.append(flat if keep is None else flat[keep.reshape(-1)])
            self._pending_tokens += self._pending[-1].shape[0]
            if self._pending_tokens >= FLUSH_TOKENS:  # ~12 MB per tensor at most
                self._flush()

    def _finite_tokens(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(samples, None) when every value is finite; otherwise the samples that keep a token, with
        dropped tokens set to NaN (the nan-reductions skip them), and the ``[samples, tokens]`` mask."""
        keep = np.isfinite(samples).all(axis=-1)
        if keep.all():
            return samples, None
        self.dropped_tokens += int(keep.size - np.count_nonzero(keep))
        alive = keep.any(axis=1)
        samples, keep = samples[alive], keep[alive]
        return np.where(keep[..., None], samples, np.float32(np.nan)), keep

    def _flush(self) -> None:
        """Add the buffered tokens to ``sum x x^T`` (one large product instead of one per item): a
        symmetric rank-k product of the upper triangle into a reused buffer, added in place (no new
        matrices and no mirroring per flush; the lower triangle is filled in when the sum is read)."""
        if not self._pending:
            return
        flat = np.ascontiguousarray(np.concatenate(self._pending), dtype=np.float32)
        if self._product is None:
            self._product = np.zeros((flat.shape[1], flat.shape[1]), np.float32, order="F")  # lower part stays 0
        # flat.T is Fortran-ordered [hidden, tokens]: the product is written in place, nothing is copied. The
        # flush's product is added whole (not accumulated by the BLAS): the same sums, rounded alike, as before.
        product = blas.ssyrk(1.0, flat.T, beta=0.0, c=self._product, trans=0, lower=0, overwrite_c=1)
        if self._gram is None:
            self._gram = product.copy(order="F")
        else:
            self._gram += product
        self._product = product
        self.hessian_tokens += flat.shape[0]
        self._pending, self._pending_tokens = [], 0

    @property
    def hessian_sum(self) -> np.ndarray | None:
        """``sum x x^T`` (symmetric; float32 as accumulated) over the tokens added so far (not the buffered ones)."""
        return None if self._gram is None else _symmetric(self._gram, self._gram.dtype)

    @hessian_sum.setter
    def hessian_sum(self, value: np.ndarray | None) -> None:
        if value is None:
            self._gram = None
        else:
            self._gram = np.asfortranarray(np.triu(value), dtype=np.result_type(value.dtype, np.float32))

    def _update_metrics(self, samples: np.ndarray, dropped: bool) -> None:
        """Per-sample metric statistics; with ``dropped``, NaN marks tokens to leave out."""
        metrics = self.needs.metrics
        total, largest, var = (np.nansum, np.nanmax, np.nanvar) if dropped else (np.sum, np.max, np.var)
        if Metric.HESSIAN_INPUT_ACTIVATION in metrics:  # per-sample energy sum x^2, combined in metric()
            energies = total(np.square(samples, dtype=np.float64), axis=(1, 2))
            self.metric_values[Metric.HESSIAN_INPUT_ACTIVATION] += energies.tolist()
        if Metric.MEAN_ACTIVATION_MAGNITUDE in metrics:
            magnitudes = largest(np.abs(samples), axis=1).mean(axis=-1)
            self.metric_values[Metric.MEAN_ACTIVATION_MAGNITUDE] += magnitudes.tolist()
        if metrics & {Metric.MEAN_ACTIVATION_VARIANCE, Metric.MAX_ACTIVATION_VARIANCE}:
            variance = var(samples, axis=1)
            reductions = ((Metric.MEAN_ACTIVATION_VARIANCE, np.mean), (Metric.MAX_ACTIVATION_VARIANCE, np.max))
            for metric, reduce in reductions:
                if metric in metrics:
                    self.metric_values[metric] += reduce(variance, axis=-1).tolist()

    @property
    def count(self) -> int:
        return len(self.tokens)

    def metric(self, metric: Metric) -> float:
        """The sensitivity statistic of a data-aware mixed-precision metric."""
        if metric is Metric.HESSIAN_INPUT_ACTIVATION:
            trace = 0.0
            for energy, tokens in zip(self.metric_values[metric], self.tokens):
                trace = (trace + energy) / (tokens * self.hidden)  # reference accumulation: c = (c + t) / x.size
            return 2.0 * trace / max(self.count, 1)
        values = self.metric_values.get(metric)
        return float(np.mean(values)) if values else 0.0

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
        self._product = None  # collection is over: the buffer is not needed again
        hessian = _symmetric(self._gram, np.float64)
        hessian *= 2.0
        hessian /= max(self.hessian_tokens, 1)
        return hessian

    def scaled_inputs(self, inverse_scale: np.ndarray) -> ActivationStats:
        """New statistics of ``x * inverse_scale`` (after AWQ moved ``1 / s`` into the input); ``self``
        is left unchanged."""
        scaled = copy.copy(self)
        scaled.means = [m * inverse_scale for m in self.means]
        scaled.tokens = list(self.tokens)
        scaled.metric_values = {metric: list(values) for metric, values in self.metric_values.items()}
        scaled._pending = list(self._pending)
        scaled._gram = None if self._gram is None else self._gram.copy(order="F")  # flushed into in place
        scaled._product = None
        scaled._flush()
        if scaled._gram is not None:
            scaled._gram = np.asfortranarray(scaled._gram * np.outer(inverse_scale, inverse_scale))
        return scaled

    # ------------------------------------------------------------------ statistics caching

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Everything collected, as named arrays (see ``from_arrays``)."""
        self._flush()
        arrays = {"tokens": np.asarray(self.tokens, np.int64), "hidden": np.asarray(self.hidden, np.int64)}
        if self.means:
            arrays["means"] = np.stack(self.means)
        for metric, values in self.metric_values.items():
            arrays[f"metric.{metric.value}"] = np.asarray(values, np.float64)
        if self._gram is not None:  # the symmetric sum is built once, here
            arrays["hessian_sum"] = self.hessian_sum
            arrays["hessian_tokens"] = np.asarray(self.hessian_tokens, np.int64)
        return arrays

    @classmethod
    def from_arrays(cls, needs: StatsNeeds, max_samples: int, arrays: dict[str, np.ndarray]) -> ActivationStats:
        """Statistics saved by ``to_arrays``, limited to the first ``max_samples`` samples.

        The Hessian sum cannot be cut: callers only ask for it when every saved sample is wanted.
        """
        stats = cls(needs, max_samples)
        keep = min(max_samples, len(arrays["tokens"]))
        stats.tokens = arrays["tokens"][:keep].tolist()
        stats.hidden = int(arrays["hidden"])
        if needs.means:
            stats.means = list(arrays["means"][:keep])
        for metric in needs.metrics:
            stats.metric_values[metric] = arrays[f"metric.{metric.value}"][:keep].tolist()
        if needs.hessian:
            stats.hessian_sum = arrays["hessian_sum"]
            stats.hessian_tokens = int(arrays["hessian_tokens"])
        return stats
