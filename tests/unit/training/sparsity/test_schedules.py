"""training.sparsity.schedules: every schedule against hand-computed levels."""

from __future__ import annotations

import math

import pytest

from nncompress.errors import ValidationError
from nncompress.training.sparsity import schedules as s


def test_polynomial_concave_and_convex_by_hand():
    kw = dict(initial=0.1, target=0.5, target_epoch=4, power=2)
    # p = e/4; concave: 0.5 - 0.4 (1-p)^2; convex: 0.1 + 0.4 p^2
    assert [s.polynomial_level(e, **kw) for e in range(6)] == pytest.approx([0.1, 0.275, 0.4, 0.475, 0.5, 0.5])
    convex = [s.polynomial_level(e, concave=False, **kw) for e in range(6)]
    assert convex == pytest.approx([0.1, 0.125, 0.2, 0.325, 0.5, 0.5])
    # default power 0.9: epoch 1 of 4 -> 0.5 - 0.4 * 0.75 ** 0.9
    assert s.polynomial_level(1, initial=0.1, target=0.5, target_epoch=4) == pytest.approx(0.5 - 0.4 * 0.75**0.9)
    assert s.polynomial_level(3, initial=0.0, target=0.5, target_epoch=0) == 0.5  # no ramp: target at once


def test_polynomial_per_optimizer_step_uses_the_fractional_epoch():
    kw = dict(initial=0.0, target=0.8, target_epoch=2, power=1, update_per_optimizer_step=True, steps_per_epoch=4)
    # epoch 0 step 2 -> fractional epoch 0.5 -> p = 0.25 -> 0.2 (power 1: concave = convex = linear)
    assert s.polynomial_level(0, 2, **kw) == pytest.approx(0.2)
    assert s.polynomial_level(1, 1, **kw) == pytest.approx(0.5)
    assert s.polynomial_level(0, 2, **{**kw, "update_per_optimizer_step": False}) == 0.0
    with pytest.raises(ValidationError, match="steps_per_epoch > 0"):
        s.polynomial_level(0, 1, **{**kw, "steps_per_epoch": None})


def test_exponential_on_density_by_hand():
    # D0 = 1, DT = 0.25, target_epoch 2: D(1) = 0.5 -> level 0.5; D(2) = 0.25 -> 0.75
    levels = [s.exponential_level(e, initial=0.0, target=0.75, target_epoch=2) for e in range(4)]
    assert levels == pytest.approx([0.0, 0.5, 0.75, 0.75])
    # initial 0.2: D0 = 0.8, DT = 0.2, target_epoch 4: D(1) = 0.8 * 0.25 ** 0.25
    got = s.exponential_level(1, initial=0.2, target=0.8, target_epoch=4)
    assert got == pytest.approx(1 - 0.8 * 0.25**0.25)


def test_multistep_first_level_from_epoch_zero_bisect_right():
    kw = dict(steps=[2, 5], levels=[0.1, 0.3, 0.6])
    assert [s.multistep_level(e, **kw) for e in range(7)] == [0.1, 0.1, 0.3, 0.3, 0.3, 0.6, 0.6]
    assert s.sparsity_level("multistep", 5, **kw) == 0.6  # at a boundary the new level applies
    with pytest.raises(ValidationError, match="one more level than steps"):
        s.multistep_level(0, steps=[2, 5], levels=[0.1, 0.3])
    with pytest.raises(ValidationError, match="increasing"):
        s.multistep_level(0, steps=[5, 2], levels=[0.1, 0.3, 0.6])


def test_adaptive_raises_after_patience_bad_epochs():
    state = s.AdaptiveState(0.1)
    state = s.adaptive_step(state, 0.05, target=0.3, patience=2)  # 0.05 < 0.1 - 0.03: not reached
    assert state == s.AdaptiveState(0.1, 0)
    state = s.adaptive_step(state, 0.08, target=0.3, patience=2)  # 0.08 >= 0.07: one bad epoch
    assert state == s.AdaptiveState(0.1, 1)
    state = s.adaptive_step(state, 0.1, target=0.3, patience=2)  # second: raise by 0.05, counter reset
    assert state.level == pytest.approx(0.15) and state.bad_epochs == 0
    for _ in range(10):
        state = s.adaptive_step(state, 1.0, target=0.3, patience=1)
    assert state.level == pytest.approx(0.3)  # capped at the target
    with pytest.raises(ValidationError, match="adaptive_step"):
        s.sparsity_level("adaptive", 0)


def test_freeze_epoch():
    assert [s.is_frozen(e, 3) for e in range(5)] == [False, False, False, True, True]
    assert not s.is_frozen(100, None)


def test_unknown_schedule_names():
    with pytest.raises(ValidationError, match="sparsity schedule must be one of 'polynomial'"):
        s.sparsity_level("cosine", 0)
    with pytest.raises(ValidationError, match="pruning schedule must be one of 'baseline'"):
        s.pruning_level("cosine", 0, target=0.5)


def test_pruning_baseline_and_warm_up():
    levels = [s.pruning_level("baseline", e, target=0.4, num_init_steps=2, pruning_steps=5) for e in range(5)]
    assert levels == [0.0, 0.0, 0.4, 0.4, 0.4]
    assert s.pruning_freeze_epoch("baseline", 2, 5) == 2
    assert s.pruning_freeze_epoch("exponential", 2, 5) == 7


def test_pruning_exponential_on_density():
    # T = pruning_steps - 1 = 2, D0 = 1, DT = 0.36: D(1) = 0.6 -> 0.4; D(2) -> 0.64
    kw = dict(target=0.64, num_init_steps=1, pruning_steps=3)
    assert [s.pruning_level("exponential", e, **kw) for e in range(5)] == pytest.approx([0, 0, 0.4, 0.64, 0.64])


def test_pruning_exponential_with_bias_hits_its_three_points():
    a, k, b = s.exponential_with_bias(0.0, 0.5, 8)
    level = [s.pruning_level("exponential_with_bias", e, target=0.5, pruning_steps=9) for e in range(10)]
    assert level[0] == pytest.approx(0.0, abs=1e-12)
    assert level[1] == pytest.approx(0.375)  # P(T/8) = 0.75 * target with T = 8
    assert level[8] == pytest.approx(0.5) and level[9] == 0.5
    assert a * math.exp(-k * 8) + b == pytest.approx(0.5)
    # x = exp(-k) solves 1 + x + ... + x^7 = 4/3 (hand: x ≈ 0.25 since 1 + .25 + .0625 + ... ≈ 1.3333)
    x = math.exp(-k)
    assert sum(x**i for i in range(8)) == pytest.approx(4 / 3)
    assert x == pytest.approx(0.25, abs=1e-4)
    assert all(level[i] < level[i + 1] for i in range(8))
    with pytest.raises(ValidationError, match="pruning_init < 0.75"):
        s.exponential_with_bias(0.45, 0.5, 8)
