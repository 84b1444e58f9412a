"""Binarization formulas: hand-computed XNOR/DoReFa values, activation forward and gradients, scale init."""

import numpy as np
import pytest
import torch

from nncompress.errors import ValidationError
from nncompress.numerics import binarization as bn

W = np.array([[[[1.0, -3.0]]], [[[0.0, 2.0]]]], dtype=np.float32)  # [2, 1, 1, 2]


@pytest.mark.parametrize("to", [np.asarray, torch.from_numpy])
def test_sign_maps_zero_to_minus_one(to):
    codes = bn.sign_codes(to(np.array([-2.0, 0.0, 1e-30, 3.0], dtype=np.float32)))
    assert np.asarray(codes).tolist() == [-1.0, -1.0, 1.0, 1.0]


@pytest.mark.parametrize("to", [np.asarray, torch.from_numpy])
def test_xnor_scales_each_output_filter_by_its_mean_abs(to):
    # filter 0: mean(|1|, |-3|) = 2; filter 1: mean(|0|, |2|) = 1
    assert np.asarray(bn.weight_scale(to(W), "xnor")).reshape(-1).tolist() == [2.0, 1.0]
    assert np.asarray(bn.binarize_weight(to(W), "xnor")).reshape(2, 2).tolist() == [[2.0, -2.0], [-1.0, 1.0]]


@pytest.mark.parametrize("to", [np.asarray, torch.from_numpy])
def test_dorefa_scales_the_whole_tensor_by_its_mean_abs(to):
    # mean(1, 3, 0, 2) = 1.5
    assert np.asarray(bn.binarize_weight(to(W), "dorefa")).reshape(2, 2).tolist() == [[1.5, -1.5], [-1.5, 1.5]]


def test_unknown_mode_is_refused():
    with pytest.raises(ValidationError, match="'ternary'"):
        bn.weight_scale(W, "ternary")


X = np.array([-1.0, 0.3, 0.5, 0.7, 2.5], dtype=np.float32).reshape(1, 1, 5, 1)


@pytest.mark.parametrize("to", [np.asarray, torch.from_numpy])
def test_activation_is_zero_or_scale_above_scale_times_threshold(to):
    scale, threshold = np.float32([2.0]), np.full((1, 1, 1, 1), 0.25, np.float32)  # threshold 0.5
    y = bn.binarize_activation(to(X), to(scale), to(threshold))
    assert np.asarray(y).reshape(-1).tolist() == [0.0, 0.0, 0.0, 2.0, 2.0]  # 0.5 is not above 0.5


def test_activation_gradients_match_the_hand_formulas():
    scale, threshold = np.float32([2.0]), np.full((1, 1, 1, 1), 0.25, np.float32)
    y = bn.binarize_activation(X, scale, threshold)
    g = np.ones_like(X)
    dx, d_scale, d_threshold = bn.activation_gradients(X, y, g, scale, (1,), (1, 1, 1, 1))
    assert dx.reshape(-1).tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # 0 <= x <= S
    # [x<=S](y-x)/S + [x>S]: 0.5, -0.15, -0.25, 0.65, 1 -> 1.75
    assert d_scale.tolist() == pytest.approx([1.75])
    assert d_threshold.reshape(-1).tolist() == [-3.0]  # -#(0 < x < S)


def test_activation_gradients_sum_per_channel_and_agree_in_numpy_and_torch():
    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 1.0, (2, 3, 4, 4)).astype(np.float32)
    g = rng.normal(size=x.shape).astype(np.float32)
    scale = np.float32([1.3])
    threshold = rng.uniform(0.2, 0.8, (1, 3, 1, 1)).astype(np.float32)
    y = bn.binarize_activation(x, scale, threshold)
    grads_np = bn.activation_gradients(x, y, g, scale, (1,), (1, 3, 1, 1))
    t = [torch.from_numpy(a) for a in (x, y, g, scale)]
    grads_t = bn.activation_gradients(*t, (1,), (1, 3, 1, 1))
    for a, b in zip(grads_np, grads_t):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-5)
    inside = (x > 0) & (x < 1.3)
    expected = -(g * inside).sum(axis=(0, 2, 3)).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(grads_np[2], expected, rtol=1e-5)


@pytest.mark.parametrize("to", [np.asarray, torch.from_numpy])
def test_scale_init_is_the_smallest_of_the_top_tenth_percent(to):
    x = np.arange(1, 2001, dtype=np.float32)[::-1].copy()  # k = round(0.001 * 2000) = 2
    assert bn.top_fraction_value(to(x)) == 1999.0
    assert bn.top_fraction_value(to(np.float32([5.0, 7.0, 1.0]))) == 7.0  # k = max(1, 0) = 1
