"""Scale estimation on a hand-computed group: the reference's "ideal scale" (importance-weighted ``|w| / |q|``
over the nonzero codes, the RTN scale's sign kept) and the per-group choice by the output error."""

from __future__ import annotations

import numpy as np

import nncompress as nncf
from nncompress.algorithms.weights.scale_estimation import estimate_grouped
from nncompress.numerics.lowbit import round_scale
from nncompress.parameters import CompressWeightsMode as M

PARAMS = nncf.AdvancedCompressionParameters().scale_estimation_params
W = np.array([[[1.0, -0.5, 0.26, 0.01]]], np.float32)  # one output channel, one group of 4
X = np.ones((1, 1, 4), np.float32)  # one sample: the objective is (sum(w - w^))^2


def test_reference_defaults():
    assert (PARAMS.subset_size, PARAMS.initial_steps, PARAMS.scale_steps, PARAMS.weight_penalty) == (64, 5, 5, -1.0)


def test_ideal_scale_with_equal_importance():
    # RTN: scale -1/8, codes [-8, 4, -2, 0]; ideal = (1/8 + 0.5/4 + 0.26/2) / 3 (the zero code left out)
    scale, zero_point = estimate_grouped(W, X, np.ones((1, 4), np.float32), M.INT4_SYM, PARAMS)
    assert zero_point is None
    np.testing.assert_array_equal(scale, round_scale(np.array([[[-(0.125 + 0.125 + 0.13) / 3]]], np.float32)))


def test_importance_weights_the_ideal_scale_and_the_objective_keeps_the_best():
    # importance 3 on the third channel: (1/8 + 0.5/4 + 3 * 0.26/2) / 5 = 0.128; its output error
    # (1 - 1.024 - 0.5 + 0.512 + 0.26 - 0.256 + 0.01)^2 = 4e-6 beats RTN's (0.02)^2; the shrunk grid
    # starts (codes [-8, 5, -2] and [-8, 5, -3]) give larger errors
    scale, _ = estimate_grouped(W, X, np.array([[1, 1, 3, 1]], np.float32), M.INT4_SYM, PARAMS)
    np.testing.assert_array_equal(scale, round_scale(np.array([[[-0.128]]], np.float32)))


def test_rtn_kept_when_no_candidate_is_better():
    exact = np.array([[[1.0, -0.5, 0.25, 0.0]]], np.float32)  # on the RTN grid: zero error already
    scale, _ = estimate_grouped(exact, X, np.ones((1, 4), np.float32), M.INT4_SYM, PARAMS)
    np.testing.assert_array_equal(scale, np.array([[[-0.125]]], np.float32))
