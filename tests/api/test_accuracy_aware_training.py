"""Accuracy-aware training on a CNN trained on scikit-learn digits: early_exit with INT8 stops within its
budget; adaptive_compression_level with filter pruning searches the level by the rule and returns the
best level's model; knowledge distillation trains inside the loop."""

from __future__ import annotations

import pytest
import torch

import nncompress as nncf
from tests.unit.training.models import accuracy, loader, trained_cnn

torch.set_num_threads(2)
TRAIN = loader("train", batch_size=64, shuffle=True)
TEST = loader("test", batch_size=200)


def _functions(compressed, lr: float):
    def train_epoch_fn(compression_ctrl, model, optimizer, **kwargs):
        model.train()
        for x, y in TRAIN:
            compression_ctrl.scheduler.step()
            loss = torch.nn.functional.cross_entropy(model(x), y) + compression_ctrl.loss()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def validate_fn(model, **kwargs):
        return accuracy(model, TEST)

    def configure_optimizers_fn():
        return torch.optim.Adam(compressed.parameters(), lr=lr), None

    return train_epoch_fn, validate_fn, configure_optimizers_fn


def _compress(compression, aat: dict):
    fp32 = trained_cnn()
    fp32_acc = accuracy(fp32, TEST)
    config = nncf.NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": compression,
                                        "accuracy_aware_training": aat})
    config = nncf.torch.register_default_init_args(config, TRAIN)
    ctrl, compressed = nncf.create_compressed_model(fp32, config)
    return fp32_acc, config, ctrl, compressed


@pytest.mark.slow
def test_early_exit_int8_stops_within_budget(tmp_path):
    int8 = {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 256}}}
    kd = {"algorithm": "knowledge_distillation", "type": "softmax", "temperature": 2.0}
    aat = {"mode": "early_exit", "params": {"maximal_absolute_accuracy_degradation": 0.0, "maximal_total_epochs": 4}}
    fp32_acc, config, ctrl, compressed = _compress([int8, kd], aat)
    loop = nncf.torch.create_accuracy_aware_training_loop(config, ctrl, fp32_acc)
    train_fn, validate_fn, optimizers_fn = _functions(compressed, 1e-4)
    loop.run(compressed, train_fn, validate_fn, configure_optimizers_fn=optimizers_fn, log_dir=tmp_path)
    stats, records = loop.statistics, loop.records
    assert stats.within_budget and stats.compressed_accuracy >= fp32_acc  # a budget of 0: no drop at all
    # it stopped at the first epoch within budget: every earlier epoch was outside it
    assert records[-1].epoch == stats.best_epoch == stats.epochs_trained
    assert not any(r.within_budget for r in records[:-1])
    assert accuracy(compressed, TEST) == pytest.approx(stats.compressed_accuracy)
    assert (tmp_path / "accuracy_aware_log.csv").read_text().count("\n") == len(records) + 1


@pytest.mark.slow
def test_adaptive_compression_level_finds_the_pruning_level():
    pruning = {"algorithm": "filter_pruning", "pruning_init": 0.1,
               "params": {"schedule": "exponential", "pruning_target": 0.3, "pruning_steps": 2}}
    aat = {"mode": "adaptive_compression_level",
           "params": {"maximal_absolute_accuracy_degradation": 0.02, "initial_training_phase_epochs": 2,
                      "patience_epochs": 1, "initial_compression_rate_step": 0.2, "minimal_compression_rate_step": 0.1,
                      "maximal_total_epochs": 6}}
    fp32_acc, config, ctrl, compressed = _compress(pruning, aat)
    loop = nncf.torch.create_accuracy_aware_training_loop(config, ctrl, fp32_acc)
    train_fn, validate_fn, optimizers_fn = _functions(compressed, 1e-3)
    loop.run(compressed, train_fn, validate_fn, configure_optimizers_fn=optimizers_fn)
    records, stats = loop.records, loop.statistics
    assert [r.compression_rate for r in records[:3]] == pytest.approx([0.1, 0.1, 0.3])  # the schedule's levels
    # each rate the search set moved up after a level within budget, down after one outside it
    search = [r for r in records if r.phase == "search"]
    previous = records[2]
    for rate in loop.visited_rates:
        assert (rate > previous.compression_rate) == previous.within_budget
        previous = [r for r in search if r.compression_rate == pytest.approx(rate)][-1]
    assert loop.visited_rates and stats.within_budget and stats.compression_rate >= 0.3
    assert stats.compression_rate == max(r.compression_rate for r in records if r.within_budget)
    assert ctrl.compression_rate == pytest.approx(stats.compression_rate)  # the best level's masks are back
    assert accuracy(compressed, TEST) == pytest.approx(stats.compressed_accuracy)
