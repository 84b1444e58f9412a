"""Scheduler counters (NNCF semantics: start at -1) and the staged QAT scheduler."""

import pytest

from nncompress.errors import ValidationError
from nncompress.training.config.spec import StagedParams
from nncompress.training.schedulers import BaseCompressionScheduler, StagedQuantizationScheduler


def test_counters_start_at_minus_one_and_count_calls():
    s = BaseCompressionScheduler()
    assert (s.current_step, s.current_epoch) == (-1, -1)
    s.epoch_step()
    s.step()
    s.step()
    assert (s.current_step, s.current_epoch) == (1, 0)
    s.step(next_step=10)
    s.epoch_step(next_epoch=5)
    assert (s.current_step, s.current_epoch) == (10, 5)


def test_bad_next_step_names_argument():
    with pytest.raises(ValidationError, match="next_epoch"):
        BaseCompressionScheduler().epoch_step(next_epoch=-3)


def test_state_round_trip():
    s = BaseCompressionScheduler()
    for _ in range(3):
        s.epoch_step()
    t = BaseCompressionScheduler()
    t.load_state(s.get_state())
    assert t.get_state() == {"current_step": -1, "current_epoch": 2}
    with pytest.raises(ValidationError, match="current_epoch"):
        t.load_state({"current_step": 1})


class _Recorder:
    def __init__(self):
        self.calls = []

    def set_enabled(self, group, on):
        self.calls.append(("enable" if on else "disable", group))

    def init_ranges(self, group):
        self.calls.append(("init", group))


def _staged(act=1, weights=2):
    rec = _Recorder()
    s = StagedQuantizationScheduler(
        StagedParams(activations_quant_start_epoch=act, weights_quant_start_epoch=weights), rec.set_enabled,
        rec.init_ranges,
    )
    return s, rec


def test_staged_enables_groups_at_their_start_epoch_and_reinitialises():
    s, rec = _staged(act=1, weights=2)
    assert rec.calls == [("disable", "activations"), ("disable", "weights")]
    assert s.stage() == 0
    s.epoch_step()  # epoch 0
    assert s.stage() == 0 and len(rec.calls) == 2
    s.epoch_step()  # epoch 1: activations on, ranges re-initialised
    assert rec.calls[2:] == [("enable", "activations"), ("init", "activations")]
    assert s.stage() == 1
    s.epoch_step()  # epoch 2: weights
    assert rec.calls[4:] == [("enable", "weights"), ("init", "weights")]
    assert s.stage() == 2


def test_staged_start_zero_enabled_at_construction_without_reinit():
    s, rec = _staged(act=0, weights=0)
    assert rec.calls == [("enable", "activations"), ("enable", "weights")]
    s.epoch_step()
    assert len(rec.calls) == 2 and s.stage() == 2


def test_staged_load_state_reapplies_without_reinit():
    s, rec = _staged(act=1, weights=3)
    s.load_state({"current_step": 40, "current_epoch": 2})
    assert rec.calls[2:] == [("enable", "activations")]
    assert s.stage() == 1


def test_disabled_scheduler_keeps_counting_but_does_not_switch():
    s, rec = _staged(act=1, weights=1)
    s.disable()
    s.epoch_step()
    s.epoch_step()
    assert s.current_epoch == 1 and s.stage() == 0 and len(rec.calls) == 2
