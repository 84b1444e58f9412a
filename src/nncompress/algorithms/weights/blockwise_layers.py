"""What the block-wise pipeline computes per layer: the weight the compressed pass runs (``effective_weight``)
and the report's output errors on a small sample of token rows (``TokenSample``, ``output_errors``)."""

from __future__ import annotations

import numpy as np

from nncompress.algorithms.weights import data_aware
from nncompress.algorithms.weights.awq import AWQPlan
from nncompress.algorithms.weights.config import WeightCompressionOptions
from nncompress.algorithms.weights.job import LayerJob
from nncompress.graph.edits import AddLowRankCorrection, SetConstant
from nncompress.numerics.encoding import CompressedWeight, round_to_nearest

SAMPLE_ROWS = 64  # token rows per Linear input kept for the report's output errors (a diagnostic: kept cheap)


class TokenSample:
    """Up to ``rows`` token vectors of one activation, spread over the calibration items."""

    def __init__(self, rows: int, items: int):
        self.per_item = max(1, -(-rows // max(items, 1)))
        self.rows = rows
        self.parts: list[np.ndarray] = []
        self.count = 0

    def update(self, value: np.ndarray) -> None:
        if self.count >= self.rows:
            return
        flat = np.asarray(value, np.float32).reshape(-1, np.shape(value)[-1])
        rows = flat[:: max(1, len(flat) // self.per_item)]  # spread over the item; then whole finite rows only
        part = rows[np.isfinite(rows).all(axis=1)][: min(self.per_item, self.rows - self.count)]  # a copy
        self.parts.append(part)
        self.count += len(part)

    def matrix(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros((0, 0), np.float32)


def relative_error(
    x: np.ndarray, w_oi: np.ndarray, approx_oi: np.ndarray, reference: np.ndarray | None = None
) -> float:
    """``|x (W - W^)^T|^2 / |x W^T|^2`` (relative output MSE on the sampled inputs); ``reference``: ``x W^T``
    when the caller has it."""
    reference = x @ w_oi.T if reference is None else reference
    diff = reference - x @ approx_oi.T  # no weight-sized difference matrix
    return float(np.sum(diff * diff) / max(float(np.sum(reference * reference)), 1e-30))


def output_errors(job: LayerJob, original: np.ndarray, x: np.ndarray, awq: AWQPlan) -> tuple[float, float]:
    """(round to nearest's, the pipeline's) relative output errors of a compressed layer on token rows ``x``;
    ``original`` is the float weight in layer layout."""
    layer = job.layer
    w_oi = np.asarray(layer.to_oi(original), dtype=np.float32)  # a float32 weight is not copied
    config = layer.config
    rtn = round_to_nearest(original, config.mode, layer.weight.in_axis, config.group_size, layer.weight.out_axis)
    reference = x @ w_oi.T
    before = relative_error(x, w_oi, layer.to_oi(rtn), reference)
    del rtn
    final = _in_original_space(job, awq, _add_lora(layer.to_oi(job.compressed.decompress()), job))
    return before, relative_error(x, w_oi, final, reference)


def algorithms(job: LayerJob, options: WeightCompressionOptions) -> tuple[str, ...]:
    """The methods that changed the layer, as the report names them."""
    used = []
    if job.input_scale is not None or job.output_scale is not None:
        used.append("AWQ")
    if data_aware.uses_data(job, options):
        used += [n for on, n in ((options.scale_estimation, "scale estimation"), (options.gptq, "GPTQ"),
                                 (options.lora_correction, "LoRA correction")) if on]
    return tuple(used) or ("round to nearest",)


def _decompressed(value) -> np.ndarray:
    return value.decompress() if isinstance(value, CompressedWeight) else np.asarray(value, np.float32)


def _add_lora(w_oi: np.ndarray, job: LayerJob) -> np.ndarray:
    """``w_oi`` (a fresh array, changed in place) plus the LoRA correction of ``job`` as ``[out, in]``."""
    for edit in job.edits:
        if isinstance(edit, AddLowRankCorrection):
            w_oi += _decompressed(edit.b) @ _decompressed(edit.a)
    return w_oi


def _multiplied(awq: AWQPlan) -> set[str]:
    return {ref.node for multiply in awq.multiplies for ref in multiply.consumers}


def _in_original_space(job: LayerJob, awq: AWQPlan, w_oi: np.ndarray) -> np.ndarray:
    """``w_oi`` (AWQ's scales multiplied in: input channels by ``s``, acting on ``x / s``; output channels
    by a merged ``1 / s``) as a weight on the unscaled ``x`` with the original outputs (a fresh array,
    divided in place)."""
    if job.input_scale is not None:
        w_oi /= job.input_scale.reshape(1, -1)
    if job.output_scale is not None:
        w_oi /= np.asarray(job.output_scale).reshape(-1, 1)
    return w_oi


def effective_weight(job: LayerJob, awq: AWQPlan) -> np.ndarray | None:
    """The float weight the runner uses for a compressed layer (layer layout): decompressed, LoRA added,
    and divided by AWQ's input scale where AWQ inserts a multiply (the runner has no multiply); a
    merged ``1 / s`` stays in the preceding Linear. None: the layer keeps its float weight."""
    layer = job.layer
    if job.compressed is None:
        scaled = [e.value for e in job.edits if isinstance(e, SetConstant)]
        if not scaled:
            return None
        w_oi, fresh = layer.to_oi(scaled[0]), False
    else:
        w_oi, fresh = _add_lora(layer.to_oi(job.compressed.decompress()), job), True
    if job.input_scale is not None and layer.node in _multiplied(awq):
        w_oi = np.divide(w_oi, job.input_scale.reshape(1, -1), out=w_oi if fresh else None)
    return np.ascontiguousarray(layer.from_oi(w_oi), dtype=np.float32)
