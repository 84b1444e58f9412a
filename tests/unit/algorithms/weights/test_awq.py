"""AWQ returns its scales and the statistics of the scaled inputs as new values; what it was given stays."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.algorithms.weights.awq import AWQPlan, plan_awq, scale_channels
from nncompress.weight_parameters import AdvancedAWQParameters

from .helpers import assert_same, linear_layer, relu_linear_graph, snapshot, statistics, weight

PARAMS = AdvancedAWQParameters(percent_to_apply=0.5, steps=10)


def _plan(stats):
    layer = linear_layer()
    given = {"fc": stats}
    plan = plan_awq(relu_linear_graph(), [layer], lambda _: weight(), given, PARAMS)
    return plan, given, layer


def test_awq_leaves_the_given_statistics_unchanged_and_returns_new_ones():
    stats = statistics()
    stats.update(np.ones((1, 3, 32), np.float32))  # tokens still buffered for the Hessian (not yet flushed)
    before = snapshot(stats)
    plan, given, _ = _plan(stats)
    assert given == {"fc": stats} and given["fc"] is stats
    assert_same(before, snapshot(stats))
    scale = plan.input_scales["fc"]
    assert not np.all(scale == 1.0)  # the search did scale some channels: the test can see a change
    scaled = plan.stats["fc"]
    assert scaled is not stats
    np.testing.assert_allclose(np.stack(scaled.means), np.stack(stats.means) / scale, rtol=1e-6)
    np.testing.assert_allclose(scaled.hessian(), stats.hessian() / np.outer(scale, scale), rtol=1e-5)


def test_plan_statistics_merge_without_touching_the_collected_mapping():
    stats = statistics()
    plan, given, _ = _plan(stats)
    merged = plan.statistics(given)
    assert merged["fc"] is plan.stats["fc"] and given["fc"] is stats


def test_activation_linear_pattern_inserts_the_inverse_multiply():
    plan, _, _ = _plan(statistics())
    (multiply,) = plan.multiplies
    np.testing.assert_allclose(multiply.scale, 1.0 / plan.input_scales["fc"], rtol=1e-6)
    assert plan.summary.startswith("AWQ applied to 1 of 1")


def test_plan_is_frozen():
    plan, _, _ = _plan(statistics())
    with pytest.raises(AttributeError):
        plan.stats = {}


def test_scale_channels_multiplies_input_and_output_channels():
    layer = linear_layer()  # weight [in 32, out 8]
    w = weight()
    s_in, s_out = np.arange(1, 33, dtype=np.float32), np.full(8, 0.5, np.float32)
    np.testing.assert_array_equal(scale_channels(w, layer, s_in, None), w * s_in[:, None])
    np.testing.assert_array_equal(scale_channels(w, layer, None, s_out), w * s_out[None, :])
    assert scale_channels(w, layer, None, None) is w
    assert AWQPlan().scales_of("fc") == (None, None)
