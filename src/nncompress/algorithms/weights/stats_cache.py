"""Statistics caching for ``compress_weights`` (``AdvancedCompressionParameters(statistics_path=...)``).

The calibration pass is most of the time of a data-aware run. With a statistics path, the first run
collects everything any data-aware method may later ask for (token means and every mixed-precision
statistic; GPTQ's Hessians when GPTQ runs) and saves it; later runs on the same model with other
settings (ratio, metric, AWQ, scale estimation, LoRA...) load it instead of running the model.

A cache is reused only when it was made for the same tensors, answers every statistic asked for, and
holds at least the requested number of samples (Hessian sums cannot be cut to fewer samples, so a run
with GPTQ reuses them only when it wants every saved sample). Otherwise statistics are collected again
and the file is replaced; the report says which happened.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from nncompress.algorithms.weights.activations import ActivationStats, StatsNeeds
from nncompress.errors import ValidationError
from nncompress.graph.ir import TensorRef
from nncompress.parameters import SensitivityMetric

FILE_NAME = "weight_compression_statistics.npz"
FORMAT = 1
DATA_AWARE_METRICS = frozenset(m for m in SensitivityMetric if m is not SensitivityMetric.WEIGHT_QUANTIZATION_ERROR)


def cache_file(path: str | os.PathLike) -> Path:
    """The cache file inside the statistics directory (created if missing)."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValidationError(f"statistics_path={str(path)!r} is a file; give a directory for the statistics cache")
    return folder / FILE_NAME


def collected_needs(needs: StatsNeeds) -> StatsNeeds:
    """What a cached collection gathers: means and every data-aware metric, Hessians only when asked."""
    return StatsNeeds(means=True, metrics=DATA_AWARE_METRICS, hessian=needs.hessian)


def load(
    file: Path, tensors: list[TensorRef], needs: StatsNeeds, samples: int
) -> tuple[dict[TensorRef, ActivationStats], int] | None:
    """The cached statistics of ``tensors`` (and the items used), or None when the cache cannot serve."""
    if not file.exists():
        return None
    with np.load(file, allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))
        if not _serves(meta, tensors, needs, samples):
            return None
        index = {(t["node"], t["port"]): i for i, t in enumerate(meta["tensors"])}
        result = {}
        for tensor in tensors:
            prefix = f"{index[tensor.node, tensor.port]}/"
            arrays = {k[len(prefix):]: archive[k] for k in archive.files if k.startswith(prefix)}
            result[tensor] = ActivationStats.from_arrays(needs, samples, arrays)
    return result, min(samples, meta["items"])


def _serves(meta: dict, tensors: list[TensorRef], needs: StatsNeeds, samples: int) -> bool:
    if meta.get("format") != FORMAT:
        return False
    saved = StatsNeeds(
        means=meta["means"], metrics=frozenset(SensitivityMetric(m) for m in meta["metrics"]), hessian=meta["hessian"]
    )
    known = {(t["node"], t["port"]) for t in meta["tensors"]}
    if not saved.covers(needs) or not all((t.node, t.port) in known for t in tensors):
        return False
    enough = meta["requested"] >= samples  # the first `samples` items are what a fresh run would see
    whole = meta["items"] <= samples  # a Hessian sum holds every saved sample
    return enough and (not needs.hessian or whole)


def save(file: Path, stats: dict[TensorRef, ActivationStats], needs: StatsNeeds, requested: int, items: int) -> None:
    """Write ``stats`` atomically (a temporary file renamed over the old cache)."""
    tensors = sorted(stats)
    meta = {
        "format": FORMAT, "means": needs.means, "metrics": sorted(m.value for m in needs.metrics),
        "hessian": needs.hessian, "requested": requested, "items": items,
        "tensors": [{"node": t.node, "port": t.port} for t in tensors],
    }
    arrays = {"meta": np.asarray(json.dumps(meta))}
    for i, tensor in enumerate(tensors):
        arrays.update({f"{i}/{key}": value for key, value in stats[tensor].to_arrays().items()})
    file.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=file.parent, suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(temporary, file)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
