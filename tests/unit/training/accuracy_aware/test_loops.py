"""Accuracy-aware loops on fake, deterministic accuracy curves: when early_exit stops, which rates the
adaptive search visits, its learning-rate reductions and the checkpoint each returns."""

import csv
import json
import xml.etree.ElementTree as ET

import pytest
import torch

import nncompress as nncf
from nncompress.errors import ConfigError, ValidationError
from nncompress.training.accuracy_aware import (
    AdaptiveCompressionTrainingLoop,
    EarlyExitCompressionTrainingLoop,
    create_accuracy_aware_training_loop,
)
from nncompress.training.accuracy_aware.runner import scale_learning_rate
from tests.unit.training.accuracy_aware.fakes import FakeController, Trainer


def _config(mode: str, **params) -> dict:
    return {"accuracy_aware_training": {"mode": mode, "params": params}}


def _run(loop, trainer, **kwargs):
    return loop.run(trainer.model, trainer.train, trainer.validate,
                    configure_optimizers_fn=trainer.configure_optimizers, **kwargs)


# --- early exit -----------------------------------------------------------------------------------


def test_early_exit_stops_at_the_first_epoch_within_the_absolute_budget():
    ctrl = FakeController(stages=[2] * 10)
    trainer = Trainer(ctrl, curve=[0.80, 0.85, 0.88, 0.905, 0.95, 0.96])
    loop = create_accuracy_aware_training_loop(
        _config("early_exit", maximal_absolute_accuracy_degradation=0.02, maximal_total_epochs=5), ctrl, 0.92)
    assert isinstance(loop, EarlyExitCompressionTrainingLoop)
    assert _run(loop, trainer) is trainer.model
    assert trainer.trained_epochs == [0, 1, 2]  # epoch 3's accuracy 0.905 is within 0.92 - 0.02
    assert [r.within_budget for r in loop.records] == [False, False, False, True]
    stats = loop.statistics
    assert (stats.best_epoch, stats.epochs_trained, stats.compressed_accuracy) == (3, 3, 0.905)
    assert stats.accuracy_drop == pytest.approx(0.015) and stats.within_budget
    assert trainer.weight() == 3.0  # the stopping epoch's weights are returned


def test_early_exit_relative_budget_is_a_percentage_of_the_uncompressed_accuracy():
    ctrl = FakeController(stages=[2] * 10)
    trainer = Trainer(ctrl, curve=[70.0, 79.0, 79.3])
    config = _config("early_exit", maximal_relative_accuracy_degradation=1.0, maximal_total_epochs=5)
    loop = create_accuracy_aware_training_loop(config, ctrl, 80.0)  # budget: 0.8 points
    _run(loop, trainer)
    assert loop.statistics.best_epoch == 2 and loop.statistics.relative_accuracy_drop == pytest.approx(0.875)


def test_early_exit_without_a_budget_uses_one_percent_and_may_stop_before_training():
    ctrl = FakeController(stages=[2] * 10)
    trainer = Trainer(ctrl, curve=[0.995, 0.5])
    loop = create_accuracy_aware_training_loop({"accuracy_aware_training": {"mode": "early_exit"}}, ctrl, 1.0)
    _run(loop, trainer)
    assert trainer.trained_epochs == [] and loop.statistics.best_epoch == 0


def test_early_exit_waits_for_full_compression_even_when_within_budget():
    ctrl = FakeController(stages=[0, 1, 1, 2, 2])  # e.g. staged QAT enables quantizers at epoch 3
    trainer = Trainer(ctrl, curve=[0.95, 0.95, 0.94, 0.93, 0.99])
    loop = create_accuracy_aware_training_loop(
        _config("early_exit", maximal_absolute_accuracy_degradation=0.05, maximal_total_epochs=10), ctrl, 0.95)
    _run(loop, trainer)
    assert loop.statistics.best_epoch == 3 and trainer.trained_epochs == [0, 1, 2]


def test_early_exit_out_of_epochs_returns_the_best_checkpoint_by_stage_then_accuracy():
    ctrl = FakeController(stages=[0, 1, 2, 2, 2])
    trainer = Trainer(ctrl, curve=[0.99, 0.98, 0.60, 0.70, 0.65])
    loop = create_accuracy_aware_training_loop(
        _config("early_exit", maximal_absolute_accuracy_degradation=0.01, maximal_total_epochs=4), ctrl, 1.0)
    _run(loop, trainer)
    stats = loop.statistics
    assert trainer.trained_epochs == [0, 1, 2, 3]
    # epochs 0-1 are more accurate but less compressed; among fully compressed epochs 2-4, epoch 3 is best
    assert (stats.best_epoch, stats.compressed_accuracy, stats.within_budget) == (3, 0.70, False)
    assert trainer.weight() == 3.0  # the model was restored to epoch 3's weights
    assert "maximal_total_epochs (4) reached" in stats.stop_reason


def test_early_stopping_fn_stops_the_loop():
    ctrl = FakeController(stages=[2] * 10)
    trainer = Trainer(ctrl, curve=[0.1, 0.2, 0.3, 0.4])
    loop = create_accuracy_aware_training_loop(_config("early_exit", maximal_total_epochs=3), ctrl, 1.0)
    _run(loop, trainer, early_stopping_fn=lambda acc: acc >= 0.2)
    assert trainer.trained_epochs == [0] and "early_stopping_fn" in loop.statistics.stop_reason


# --- adaptive compression level ----------------------------------------------------------------------


def _acl(tmp_path=None, **overrides):
    params = dict(maximal_absolute_accuracy_degradation=0.09, initial_training_phase_epochs=3, patience_epochs=3,
                  initial_compression_rate_step=0.1, compression_rate_step_reduction_factor=0.5,
                  minimal_compression_rate_step=0.025, lr_reduction_factor=0.5) | overrides
    ctrl = FakeController(schedule=[0.1, 0.2, 0.3], target=0.3)
    trainer = Trainer(ctrl, accuracy_of=lambda rate: 0.9 - 0.2 * rate)  # within budget iff rate <= 0.45
    loop = create_accuracy_aware_training_loop(_config("adaptive_compression_level", **params), ctrl, 0.9)
    _run(loop, trainer, log_dir=tmp_path)
    return loop, ctrl, trainer


def test_adaptive_search_visits_the_rates_and_returns_the_highest_within_budget(tmp_path):
    loop, ctrl, trainer = _acl(tmp_path)
    assert isinstance(loop, AdaptiveCompressionTrainingLoop)
    # 0.3 (end of the schedule) ok -> +0.1 ok -> 0.5 fails -> step 0.05 down -> 0.45 ok -> step 0.025 up ->
    # 0.475 fails -> the next step 0.0125 is below minimal_compression_rate_step: stop
    assert loop.visited_rates == [0.4, 0.5, 0.45, 0.475]
    assert ctrl.rates_set[:4] == [0.4, 0.5, 0.45, 0.475]
    records = loop.records
    assert [r.compression_rate for r in records] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.5, 0.45, 0.475, 0.475, 0.475]
    assert [r.phase for r in records[:5]] == ["initial", "initial_training", "initial_training", "initial_training",
                                              "search"]
    assert [r.compression_rate_step for r in records[4:]] == [0.1, 0.1, 0.1, 0.1, 0.05, 0.025, 0.025, 0.025]
    stats = loop.statistics
    assert (stats.compression_rate, stats.best_epoch, stats.epochs_trained) == (0.45, 8, 11)
    assert stats.within_budget and "minimal_compression_rate_step" in stats.stop_reason
    assert ctrl.compression_rate == 0.45 and trainer.weight() == 8.0  # the best level's state restored


def test_adaptive_search_reduces_the_learning_rate_when_the_step_shrinks(tmp_path):
    loop, _, trainer = _acl(tmp_path)
    # 3 initial epochs, then per level: 0.4 (1 epoch), 0.5 (3), 0.45 (1, step halved), 0.475 (3, halved again)
    assert trainer.lrs == pytest.approx([0.1] * 3 + [0.1] + [0.1] * 3 + [0.05] + [0.025] * 3)
    assert [r.learning_rate for r in loop.records[1:]] == pytest.approx(trainer.lrs)


def test_adaptive_search_respects_maximal_total_epochs():
    loop, _, trainer = _acl(maximal_total_epochs=6)
    assert len(trainer.trained_epochs) == 6 and loop.visited_rates == [0.4, 0.5]
    assert loop.statistics.compression_rate == 0.4  # the last level within budget


def test_adaptive_search_stops_at_maximal_compression_rate():
    loop, _, _ = _acl(maximal_absolute_accuracy_degradation=0.5, maximal_compression_rate=0.6)
    assert loop.visited_rates == [0.4, 0.5, 0.6]
    assert loop.statistics.compression_rate == 0.6 and "cannot move up" in loop.statistics.stop_reason


def test_adaptive_search_writes_the_per_epoch_log_and_chart(tmp_path):
    loop, _, _ = _acl(tmp_path)
    with open(tmp_path / "accuracy_aware_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["compression_rate"]) for r in rows] == [r.compression_rate for r in loop.records]
    assert [float(r["accuracy"]) for r in rows] == pytest.approx([0.9 - 0.2 * r.compression_rate for r in loop.records])
    data = json.loads((tmp_path / "accuracy_aware_log.json").read_text())
    assert data["mode"] == "adaptive_compression_level" and data["result"]["compression_rate"] == 0.45
    assert data["maximal_accuracy_drop"] == 0.09 and len(data["epochs"]) == 12
    svg = ET.parse(tmp_path / "accuracy_aware_progress.svg").getroot()
    polylines = svg.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(polylines) == 4  # accuracy, uncompressed accuracy, budget floor, compression rate
    checkpoint = torch.load(tmp_path / "acc_aware_checkpoint_best.pth", weights_only=False)
    assert checkpoint["compression_rate"] == 0.45 and checkpoint["epoch"] == 8


def test_adaptive_needs_exactly_one_adjustable_algorithm():
    config = _config("adaptive_compression_level")
    quantization_only = FakeController()
    quantization_only.name = "quantization"
    with pytest.raises(ValidationError, match=r"exactly one algorithm .* it has \['quantization'\]"):
        create_accuracy_aware_training_loop(config, quantization_only, 0.9)


# --- configuration and helpers -----------------------------------------------------------------------


@pytest.mark.parametrize(("section", "message"), [
    (None, "has no \"accuracy_aware_training\" section"),
    ({"mode": "fast"}, "accuracy_aware_training.mode: 'fast' is not valid"),
    ({"mode": "early_exit", "params": {"maximal_relative_accuracy_degradation": 1,
                                       "maximal_absolute_accuracy_degradation": 0.1}}, "mutually exclusive"),
    ({"mode": "adaptive_compression_level", "params": {"patience_epochs": 0}},
     "params.patience_epochs: must be >= 1; got 0"),
    ({"mode": "adaptive_compression_level", "params": {"compression_rate_step_reduction_factor": 1.0}},
     "compression_rate_step_reduction_factor: must be < 1; got 1.0"),
    ({"mode": "adaptive_compression_level", "params": {"minimal_compression_rate_step": 0.2}},
     r"minimal_compression_rate_step \(0.2\) must not exceed initial_compression_rate_step \(0.1\)"),
])
def test_config_errors_name_the_key(section, message):
    config = {} if section is None else {"accuracy_aware_training": section}
    with pytest.raises(ConfigError, match=message):
        create_accuracy_aware_training_loop(config, FakeController(), 0.9)


def test_uncompressed_accuracy_and_functions_are_checked():
    config = _config("early_exit")
    with pytest.raises(ValidationError, match="uncompressed_model_accuracy must be a finite number; got nan"):
        create_accuracy_aware_training_loop(config, FakeController(), float("nan"))
    loop = create_accuracy_aware_training_loop(config, FakeController(stages=[2] * 3), 0.9)
    with pytest.raises(ValidationError, match="validate_fn must return the metric as a number; got 'x'"):
        loop.run(torch.nn.Linear(1, 1), lambda *a, **k: None, lambda m: "x")


def test_scale_learning_rate_scales_optimizer_and_scheduler_base():
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(params, lr=0.2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    scale_learning_rate(opt, sched, 0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1) and sched.base_lrs == [pytest.approx(0.1)]


def test_public_paths():
    from nncompress.common.accuracy_aware_training import create_accuracy_aware_training_loop as common_path

    assert common_path is create_accuracy_aware_training_loop
    assert nncf.torch.create_accuracy_aware_training_loop is create_accuracy_aware_training_loop


def test_adaptive_without_any_level_in_budget_returns_the_most_accurate_model():
    ctrl = FakeController(schedule=[0.2, 0.3], target=0.3)
    trainer = Trainer(ctrl, accuracy_of=lambda rate: 0.5 - rate)  # never within 0.01 of 0.9
    config = _config("adaptive_compression_level", maximal_absolute_accuracy_degradation=0.01,
                     initial_training_phase_epochs=2, patience_epochs=1)
    loop = create_accuracy_aware_training_loop(config, ctrl, 0.9)
    _run(loop, trainer)
    # down by 0.1 per level until the rate reaches 0: the most accurate model is the uncompressed one
    assert loop.visited_rates == [0.2, 0.1, 0.0]
    assert loop.statistics.compression_rate == 0.0 and loop.statistics.compressed_accuracy == 0.5
    assert loop.statistics.best_epoch == 0 and not loop.statistics.within_budget
    assert "cannot move down" in loop.statistics.stop_reason
