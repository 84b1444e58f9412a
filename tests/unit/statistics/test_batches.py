"""Running a region on several calibration items per call: joining, splitting, the exactness check, and
the block-wise pipeline giving the same compressed model batched as item by item."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.algorithms.weights import blockwise
from nncompress.graph.ir import TensorRef
from nncompress.statistics import batches as block_batches

X, MASK, SHAPE = TensorRef("x", 0), TensorRef("mask", 0), TensorRef("shape", 0)


def _item(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {X: rng.normal(size=(1, 4, 3)).astype(np.float32), MASK: np.ones((1, 4), np.int64),
            SHAPE: np.array([1, 4, 3], np.int64)}


def test_joined_concatenates_per_item_values_and_keeps_shared_ones_once():
    items = [_item(0), _item(1), _item(2)]
    joined = block_batches.joined(items, X)
    assert joined[X].shape == (3, 4, 3)
    np.testing.assert_array_equal(joined[X][1], items[1][X][0])
    assert joined[MASK].shape == (3, 4)
    np.testing.assert_array_equal(joined[SHAPE], [1, 4, 3])  # leading size 3 is not the stream's 1: kept once


def test_joined_refuses_values_that_differ_and_do_not_follow_the_stream():
    first, second = _item(0), _item(1)
    second[SHAPE] = np.array([1, 5, 3], np.int64)
    assert block_batches.joined([first, second], X) is None
    assert block_batches.joined([first, second], None) is None


def test_split_gives_row_blocks_and_refuses_uneven_leading_axes():
    result = {X: np.arange(24, dtype=np.float32).reshape(6, 4)}
    parts = block_batches.split(result, 3)
    np.testing.assert_array_equal(parts[2][X], [[16, 17, 18, 19], [20, 21, 22, 23]])
    assert block_batches.split(result, 4) is None
    assert block_batches.split({X: np.float32(1.0)}, 2) is None


def test_difference_names_the_tensor_and_tolerates_rounding():
    alone = {X: np.array([[1.0, 2.0]], np.float32)}
    assert block_batches.difference(alone, {X: alone[X] * (1 + 1e-6)}) == ""
    assert "x:0 differs" in block_batches.difference(alone, {X: np.array([[1.0, 2.5]], np.float32)})
    assert "another shape" in block_batches.difference(alone, {X: np.zeros((2, 2), np.float32)})


def test_signature_tells_items_of_other_shapes_apart():
    assert block_batches.signature(_item(0)) == block_batches.signature(_item(1))
    other = _item(2)
    other[X] = other[X][:, :3]
    assert block_batches.signature(_item(0)) != block_batches.signature(other)


class _Runner:
    """A block computing ``x @ W`` per item; ``merge`` makes a batch wrong (a causal sum over the batch)."""

    def __init__(self, merge: bool):
        self.merge, self.calls = merge, []

    def run(self, values, constants=None):
        x = values[X]
        self.calls.append(x.shape[0])
        out = x.sum(axis=-1, keepdims=True)
        if self.merge:
            out = np.cumsum(out, axis=0)
        return {TensorRef("y", 0): out}


class _Block:
    class block:  # noqa: N801 - the attribute shape of blockwise._Block
        input = X
        outputs = (TensorRef("y", 0),)


def _pipeline(count: int) -> blockwise.BlockwiseCompression:
    pipeline = blockwise.BlockwiseCompression.__new__(blockwise.BlockwiseCompression)
    items = [_item(k) for k in range(count)]
    pipeline.stream = [item[X] for item in items]
    pipeline.shared = [{MASK: item[MASK], SHAPE: item[SHAPE]} for item in items]
    pipeline.nonfinite = blockwise.NonFiniteTally()
    return pipeline


@pytest.mark.parametrize("merge", [False, True])
def test_a_pass_batches_exact_blocks_and_falls_back_for_others(merge):
    pipeline = _pipeline(20)
    expected = [item.sum(axis=-1, keepdims=True) for item in pipeline.stream]
    runner = _Runner(merge)
    pipeline._run(runner, _Block, None, {}, True)
    for got, want in zip(pipeline.stream, expected):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    size = block_batches.BATCH_ITEMS  # 8
    if merge:  # the first batch failed its check: every item again alone
        assert runner.calls == [size, 1] + [1] * 20
    else:  # 8 + 8 + 4 items, one check of the first batch's last item
        assert runner.calls == [size, 1, size, 20 - 2 * size]


def test_joined_scales_the_batch_entry_of_shape_values():
    joined = block_batches.joined([_item(0), _item(1)], X, shapes=(SHAPE,))
    np.testing.assert_array_equal(joined[SHAPE], [2, 4, 3])
    bad = _item(0)
    bad[SHAPE] = np.array([4, 3], np.int64)  # not led by the batch size
    assert block_batches.joined([bad, bad], X, shapes=(SHAPE,)) is None
