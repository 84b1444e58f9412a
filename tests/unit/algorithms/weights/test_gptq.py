"""GPTQ: hand-computed updates, identity Hessian = round to nearest, act-order, static groups, lazy batches."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import nncompress as nncf
from nncompress.algorithms.weights import gptq
from nncompress.algorithms.weights.activations import ActivationStats, StatsNeeds
from nncompress.algorithms.weights.config import LayerConfig
from nncompress.algorithms.weights.selection import WeightLayer
from nncompress.graph.ir import WeightInfo
from nncompress.graph.ops import OpKind
from nncompress.numerics.lowbit import encode
from nncompress.parameters import CompressWeightsMode as M


def _layer(out: int, channels: int, mode=M.INT4_SYM, group: int = 4) -> WeightLayer:
    return WeightLayer("fc", OpKind.LINEAR, WeightInfo(1, (out, channels), 0, 1), LayerConfig(mode, group), True)


def _advanced(**gptq_params) -> nncf.AdvancedCompressionParameters:
    params = dataclasses.replace(nncf.AdvancedCompressionParameters().gptq_params, **gptq_params)
    return nncf.AdvancedCompressionParameters(gptq_params=params)


def _quantizer(layer: WeightLayer, weight: np.ndarray) -> gptq.GroupQuantizer:
    return gptq.GroupQuantizer(layer, *weight.shape, None, nncf.AdvancedCompressionParameters())


class _UnitScale(gptq.GroupQuantizer):
    """Integer grid with scale 1 (codes -8..7): hand-computable quantization."""

    def fit(self, columns, first):
        self.scale[:] = 1.0


def _correlated(seed: int, out: int = 6, channels: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((out, channels)).astype(np.float32)
    x = rng.standard_normal((256, channels)) @ (np.eye(channels) + 0.5 * rng.standard_normal((channels, channels)))
    x *= rng.uniform(0.1, 5.0, channels)
    return weight, 2.0 * x.T @ x / len(x)


def test_two_columns_by_hand():
    # H = [[1, .5], [.5, 1]]: quantizing w0 = 0.4 to 0 moves w1 by -H10/H11 * (0 - 0.4) = +0.2: 0.4 -> 0.6 -> 1
    layer = _layer(1, 2, group=-1)
    weight = np.array([[0.4, 0.4]], np.float32)
    factor = gptq.factorize(np.array([[1.0, 0.5], [0.5, 1.0]]), 0.0, act_order=False)
    np.testing.assert_allclose(factor.upper, [[np.sqrt(4 / 3), -np.sqrt(1 / 3)], [0.0, 1.0]], atol=1e-6)
    updated, scale, _ = gptq.sweep(weight, factor, _UnitScale(layer, 1, 2, None, _advanced()), 128, True)
    np.testing.assert_array_equal(updated, [[0.0, 1.0]])
    np.testing.assert_array_equal(scale, [[[1.0]]])


@pytest.mark.parametrize("mode", [M.INT4_SYM, M.INT4_ASYM, M.NF4])
@pytest.mark.parametrize("act_order", [False, True])
def test_identity_hessian_is_round_to_nearest(mode, act_order):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 8)).astype(np.float32)
    layer = _layer(4, 8, mode)
    factor = gptq.factorize(np.eye(8), 0.01, act_order)
    updated, scale, zero_point = gptq.sweep(weight, factor, _quantizer(layer, weight), 128, act_order)
    rtn = encode(weight, mode, 1, 4, 0)
    np.testing.assert_allclose(updated, rtn.decompress(), atol=1e-6)
    np.testing.assert_allclose(scale, rtn.scale, rtol=1e-6)


def test_act_order_permutation_is_undone():
    weight, hessian = _correlated(1)
    layer = _layer(*weight.shape, group=-1)
    factor = gptq.factorize(hessian, 0.01, act_order=True)
    order = np.argsort(-np.diag(hessian), kind="stable")
    np.testing.assert_array_equal(factor.order, order)
    result = gptq.sweep(weight, factor, _quantizer(layer, weight), 128, True)[0]
    # the same sweep by hand: permuted weight and Hessian in the natural order, then put back
    manual_factor = gptq.factorize(hessian[np.ix_(order, order)], 0.01, act_order=False)
    manual = gptq.sweep(weight[:, order], manual_factor, _quantizer(layer, weight), 128, True)[0]
    np.testing.assert_allclose(result, manual[:, np.argsort(order)], atol=1e-6)
    assert not np.allclose(result, gptq.sweep(weight, gptq.factorize(hessian, 0.01, False),
                                              _quantizer(layer, weight), 128, True)[0])


def test_act_order_keeps_contiguous_static_groups_that_encoding_reproduces():
    weight, hessian = _correlated(2)
    layer = _layer(*weight.shape, M.INT4_ASYM, group=4)
    factor = gptq.factorize(hessian, 0.01, act_order=True)
    assert not np.array_equal(factor.order, np.arange(16))
    updated, scale, zero_point = gptq.sweep(weight, factor, _quantizer(layer, weight), 128, True)
    static = encode(weight, M.INT4_ASYM, 1, 4, 0)  # the groups' parameters from the original weight
    np.testing.assert_allclose(scale, static.scale, rtol=1e-6)
    compressed = encode(updated, M.INT4_ASYM, 1, 4, 0, scale, zero_point)
    np.testing.assert_allclose(compressed.decompress(), updated, atol=1e-6)


def _column_by_column(weight: np.ndarray, hessian: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Textbook GPTQ, one column at a time, INT4_SYM with fixed group scales ``[out, G]``."""
    upper = gptq.inverse_cholesky(hessian, 0.01)
    w = weight.astype(np.float64).copy()
    size = w.shape[1] // scale.shape[1]
    for j in range(w.shape[1]):
        s = scale[:, j // size]
        q = np.clip(np.rint(w[:, j] / s), -8, 7) * s
        error = (w[:, j] - q) / upper[j, j]
        w[:, j] = q
        w[:, j + 1:] -= np.outer(error, upper[j, j + 1:])
    return w


@pytest.mark.parametrize("block_size", [1, 3, 5, 16, 128])
def test_lazy_batches_equal_column_by_column(block_size):
    weight, hessian = _correlated(3)
    layer = _layer(*weight.shape, group=4)
    factor = gptq.factorize(hessian, 0.01, act_order=False)
    updated, scale, _ = gptq.sweep(weight, factor, _quantizer(layer, weight), block_size, True)
    np.testing.assert_allclose(updated, _column_by_column(weight, hessian, scale[..., 0]), atol=1e-5)


def test_in_sweep_groups_follow_the_updated_columns():
    weight, hessian = _correlated(4)
    layer = _layer(*weight.shape, group=4)
    factor = gptq.factorize(hessian, 0.01, act_order=False)
    updated, scale, _ = gptq.sweep(weight, factor, _quantizer(layer, weight), 128, False)
    static = encode(weight, M.INT4_SYM, 1, 4, 0).scale
    np.testing.assert_allclose(scale[:, 0], static[:, 0], rtol=1e-6)  # the first group sees no update yet
    assert not np.allclose(scale[:, 1:], static[:, 1:])
    np.testing.assert_allclose(encode(updated, M.INT4_SYM, 1, 4, 0, scale).decompress(), updated, atol=1e-6)


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_round_to_nearest_on_output_error(act_order):
    weight, hessian = _correlated(5, out=32, channels=64)
    layer = _layer(*weight.shape, group=16)
    stats = ActivationStats(StatsNeeds(hessian=True), 10)
    stats.hessian_sum, stats.hessian_tokens = hessian / 2.0, 1
    updated, _, _ = gptq.run(weight, stats, layer, _advanced(act_order=act_order, damp_percent=0.01))
    rtn = encode(weight, M.INT4_SYM, 1, 16, 0).decompress()

    def error(approx):
        diff = (weight - approx).astype(np.float64)
        return float(np.trace(diff @ hessian @ diff.T))

    assert error(updated) < 0.7 * error(rtn)


def test_dead_inputs_get_zero_columns():
    weight, hessian = _correlated(6)
    hessian[3, :] = hessian[:, 3] = 0.0
    factor = gptq.factorize(hessian, 0.01, act_order=True)
    assert factor.dead[3] and factor.dead.sum() == 1
    layer = _layer(*weight.shape, group=-1)
    updated = gptq.sweep(weight, factor, _quantizer(layer, weight), 128, True)[0]
    np.testing.assert_array_equal(updated[:, 3], 0.0)
