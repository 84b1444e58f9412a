"""Per-layer pieces of the block-wise pipeline: token samples for the report and the relative output error."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.algorithms.weights.blockwise_layers import TokenSample, relative_error


def test_token_sample_spreads_rows_over_items():
    sample = TokenSample(rows=8, items=4)
    for i in range(4):
        sample.update(np.full((1, 10, 3), i, np.float32))
    rows = sample.matrix()
    assert rows.shape == (8, 3) and sorted(set(rows[:, 0].tolist())) == [0.0, 1.0, 2.0, 3.0]


def test_token_sample_leaves_out_non_finite_rows_and_keeps_no_view_of_the_batch():
    sample = TokenSample(rows=4, items=2)
    batch = np.arange(30, dtype=np.float32).reshape(1, 10, 3)
    batch[0, 0, 1] = np.nan  # row 0 is picked (stride 5: rows 0 and 5) and dropped
    sample.update(batch)
    batch[0, 5] = -1.0
    np.testing.assert_array_equal(sample.matrix(), [[15.0, 16.0, 17.0]])


def test_relative_error_by_hand():
    x = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    w = np.array([[1.0, 1.0]], np.float32)
    approx = np.array([[1.0, 0.5]], np.float32)
    # outputs [1, 2] vs [1, 1]: error 1 / 5
    assert relative_error(x, w, approx) == pytest.approx(0.2)
    # outputs [1, 2] vs [0, 2] (error 1 / 5) and [1, 2] vs [1, 2] (0)
    assert relative_error(x, w, np.array([[0.0, 1.0]], np.float32)) == pytest.approx(0.2)
    assert relative_error(x, w, w) == pytest.approx(0.0)
    # a given reference x W^T is used as is: with W's outputs [1, 2] passed for W' = approx, the error is 0.2
    assert relative_error(x, approx, approx, reference=x @ w.T) == pytest.approx(0.2)
