"""HAWQ-v2 search on hand-built traces: candidates, monotone order, device rules, strict/liberal, ratio."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nncompress.algorithms import hawq
from nncompress.algorithms.hawq import Activation, Layer
from nncompress.errors import ValidationError

NOISE = {4: 1.0, 8: 0.01}


def _layers(inputs=((), (), ())):
    return [
        Layer("a", trace=1.0, flops=100, noise=NOISE, inputs=inputs[0]),
        Layer("b", trace=10.0, flops=100, noise=NOISE, inputs=inputs[1]),
        Layer("c", trace=100.0, flops=200, noise=NOISE, inputs=inputs[2]),
    ]


def test_candidates_are_the_monotone_sequences_with_hand_computed_ratios_and_sensitivities():
    found = hawq.candidates(_layers(), [], [4, 8], "TRIAL")
    table = {tuple(c.weights[n] for n in "abc"): (c.ratio, c.sensitivity) for c in found}
    assert set(table) == {(4, 4, 4), (4, 4, 8), (4, 8, 8), (8, 8, 8)}  # L + 1 of the 2^3 assignments
    assert table[(4, 4, 4)] == pytest.approx((3200 / 1600, 111.0))
    assert table[(4, 4, 8)] == pytest.approx((3200 / 2400, 1 + 10 + 1.0))
    assert table[(4, 8, 8)] == pytest.approx((3200 / 2800, 1 + 0.1 + 1.0))
    assert table[(8, 8, 8)] == pytest.approx((1.0, 0.01 + 0.1 + 1.0))


@pytest.mark.parametrize("target, expected", [(1.0, (8, 8, 8)), (1.1, (4, 8, 8)), (1.3, (4, 4, 8)),
                                              (1.5, (4, 4, 4)), (2.0, (4, 4, 4))])
def test_the_lowest_sensitivity_meeting_the_ratio_is_chosen(target, expected):
    choice, count = hawq.search(_layers(), [], [4, 8], "TRIAL", target)
    assert count == 4
    assert tuple(choice.weights[n] for n in "abc") == expected
    assert choice.ratio >= target


def test_an_unreachable_ratio_names_the_reachable_range():
    with pytest.raises(ValidationError, match=r"compression_ratio 2.5 cannot be reached.*\[1, 2\]"):
        hawq.search(_layers(), [], [4, 8], "TRIAL", 2.5)


def test_low_trace_layers_never_get_more_bits_than_high_trace_ones():
    rng = np.random.default_rng(0)
    layers = [Layer(f"l{i}", float(t), 10, {2: 3.0, 4: 1.0, 8: 0.1}) for i, t in enumerate(rng.random(6))]
    found = hawq.candidates(layers, [], [2, 4, 8], "TRIAL")
    assert len(found) == math.comb(6 + 3 - 1, 6) == 28
    # the reference's count: sum over j of C(m, j) * C(L - 1, j - 1)
    assert len(found) == sum(math.comb(3, j) * math.comb(5, j - 1) for j in range(1, 4))
    order = sorted(layers, key=lambda layer: layer.trace)
    for choice in found:
        widths = [choice.weights[layer.name] for layer in order]
        assert widths == sorted(widths)


def test_device_rules_drop_forbidden_widths_loudly():
    with pytest.warns(hawq.PrecisionWarning, match=r"'CPU' cannot run \[2, 4\]-bit weights"):
        assert hawq.allowed_candidates([2, 4, 8], "CPU") == (8,)
    with pytest.warns(hawq.PrecisionWarning, match=r"\[2\]-bit"):
        assert hawq.allowed_candidates([8, 2, 4], "NPU") == (4, 8)
    with pytest.raises(ValidationError, match="none of the requested bit widths"), pytest.warns(hawq.PrecisionWarning):
        hawq.allowed_candidates([4], "GPU")
    with pytest.raises(ValidationError, match="target_device 'FPGA'"):
        hawq.allowed_candidates([4], "FPGA")


def test_trial_allows_any_width_without_a_warning(recwarn):
    assert hawq.allowed_candidates([8, 2, 4, 4], "TRIAL") == (2, 4, 8)
    assert not [w for w in recwarn if issubclass(w.category, hawq.PrecisionWarning)]


def test_liberal_activations_take_the_widest_weight_they_feed():
    layers = _layers(inputs=(("x",), ("x",), ("y",)))
    acts = [Activation("x", ("a", "b")), Activation("y", ("c",))]
    found = {tuple(c.weights[n] for n in "abc"): c for c in hawq.candidates(layers, acts, [4, 8], "TRIAL")}
    assert found[(4, 8, 8)].activations == {"x": 8, "y": 8}
    assert found[(4, 8, 8)].ratio == pytest.approx(1.0)  # layer a runs with 8-bit inputs
    assert found[(4, 4, 8)].activations == {"x": 4, "y": 8}
    assert found[(4, 4, 8)].ratio == pytest.approx(3200 / (400 + 400 + 1600))


def test_strict_drops_configurations_splitting_a_group():
    layers = _layers(inputs=(("x",), ("x",), ("y",)))
    acts = [Activation("x", ("a", "b")), Activation("y", ("c",))]
    strict = {tuple(c.weights[n] for n in "abc") for c in hawq.candidates(layers, acts, [4, 8], "TRIAL", "strict")}
    assert strict == {(4, 4, 4), (4, 4, 8), (8, 8, 8)}
    # liberal keeps the split one; the ratio target then picks differently
    assert hawq.search(layers, acts, [4, 8], "TRIAL", 1.0, "liberal")[0].weights == {"a": 8, "b": 8, "c": 8}
    with pytest.raises(ValidationError, match="bitwidth_assignment_mode"):
        hawq.candidates(layers, acts, [4, 8], "TRIAL", "loose")


def test_an_activation_feeding_unquantized_ops_keeps_its_width():
    layers = _layers(inputs=(("x",), (), ()))
    acts = [Activation("x", ("a",), fixed_bits=8)]
    choice = hawq.search(layers, acts, [4, 8], "TRIAL", 1.0)[0]
    assert choice.activations == {"x": 8}
    allfour = next(c for c in hawq.candidates(layers, acts, [4, 8], "TRIAL") if set(c.weights.values()) == {4})
    assert allfour.ratio == pytest.approx(3200 / (800 + 400 + 800))


def test_device_activation_widths_round_up():
    # NPU activations run 4 or 8 bits: a 2-bit weight (TRIAL-style request) has no 2-bit activation there
    assert hawq.activation_bits({"a": 4}, [Activation("x", ("a",))], "NPU", "liberal") == {"x": 4}
    assert hawq.activation_bits({"a": 2}, [Activation("x", ("a",))], "NPU", "liberal") == {"x": 4}
    assert hawq.activation_bits({"a": 2}, [Activation("x", ("a",))], "CPU", "liberal") == {"x": 8}


def test_weight_noise_by_hand():
    w = np.array([[1.0, 0.5, -0.25]])
    # 2-bit signed symmetric grid [-2, 1], scale 1: q = [1, 0, 0] (0.5 rounds to even)
    assert hawq.weight_noise(w, 2) == pytest.approx(0.5**2 + 0.25**2)
    q8 = np.array([127, 64, -32]) / 127
    assert hawq.weight_noise(w, 8) == pytest.approx(float(np.sum((q8 - w) ** 2)))
    # per channel along axis 0: each row has its own scale
    rows = np.array([[2.0, 1.0], [0.5, 0.25]])
    assert hawq.weight_noise(rows, 2, axis=0) == pytest.approx(1.0**2 + 0.25**2)
    # asymmetric min-max: 3 levels over [-0.25, 1]: step 1/3 of 1.25
    step = 1.25 / 3
    expected = sum((np.round((v + 0.25) / step) * step - 0.25 - v) ** 2 for v in w[0])
    assert hawq.weight_noise(w, 2, symmetric=False) == pytest.approx(expected)
    assert hawq.weight_noise(w, 8) < hawq.weight_noise(w, 4) < hawq.weight_noise(w, 2)


def test_no_candidate_is_an_error():
    layers = _layers(inputs=(("x",), ("x",), ()))
    acts = [Activation("x", ("a", "b"), fixed_bits=16)]  # no device width reaches 16 on NPU
    with pytest.raises(ValidationError, match="no bit-width configuration"):
        hawq.search(layers, acts, [4, 8], "NPU", 1.0)
