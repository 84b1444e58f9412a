"""Checks on model constants shared by the compression algorithms."""

from __future__ import annotations

import numpy as np

from nncompress.errors import ValidationError


def check_finite_weight(weight: np.ndarray, node: str) -> None:
    """ValidationError when ``weight`` (of ``node``) holds NaN or Inf: its compressed form would too."""
    # a float64 sum of finite float32/float16 values cannot overflow, and any NaN or Inf makes it non-finite:
    # no mask as large as the weight unless there is something to report
    if np.isfinite(np.sum(weight, dtype=np.float64)):
        return
    finite = np.isfinite(weight)
    if finite.all():  # float64 weights near its largest value can overflow the sum
        return
    bad = np.argwhere(~finite)
    first = tuple(int(i) for i in bad[0])
    raise ValidationError(
        f"the weight of {node!r} (shape {list(np.shape(weight))}) holds {len(bad)} non-finite values "
        f"(first {np.asarray(weight)[first]} at index {list(first)}); only finite weights can be "
        "compressed: fix the model's weights (or keep this layer out with ignored_scope)"
    )
