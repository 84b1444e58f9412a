"""The adaptive loop drives the real sparsity and pruning controllers: the scheduler stops after the initial
phase, each rate the search sets changes the masks, and the best level's masks come back at the end."""

import pytest
import torch

import nncompress as nncf
from tests.unit.training.models import SmallCNN

SPARSITY = {"algorithm": "magnitude_sparsity", "sparsity_init": 0.1,
            "params": {"schedule": "multistep", "multistep_steps": [1], "multistep_sparsity_levels": [0.1, 0.3]}}
PRUNING = {"algorithm": "filter_pruning", "pruning_init": 0.1,
           "params": {"schedule": "baseline", "pruning_target": 0.3, "num_init_steps": 1}}
AAT = {"mode": "adaptive_compression_level",
       "params": {"maximal_absolute_accuracy_degradation": 0.11, "initial_training_phase_epochs": 2,
                  "patience_epochs": 1}}


def _measured(ctrl) -> float:
    if ctrl.name == "magnitude_sparsity":
        return ctrl.measured_level()
    return 1.0 - sum(int(m.sum()) for m in ctrl.keep.values()) / sum(m.size for m in ctrl.keep.values())


@pytest.mark.parametrize(("algorithm", "visited"), [
    # measured sparsity follows the level: 0.3 and 0.2 fail, 0.1 fits, then 0.15 / 0.125 fail, 0.1 again
    (SPARSITY, [0.2, 0.1, 0.15, 0.125, 0.1]),
    # this CNN's one prunable group loses filters in blocks (none at 0.1-0.2, a quarter at 0.25-0.3)
    (PRUNING, [0.2, 0.25, 0.225]),
], ids=["magnitude_sparsity", "filter_pruning"])
def test_adaptive_loop_sets_and_restores_real_masks(algorithm, visited):
    torch.manual_seed(0)
    config = nncf.NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": algorithm,
                                        "accuracy_aware_training": AAT})
    ctrl, model = nncf.create_compressed_model(SmallCNN(), config)
    seen = []

    def train_epoch_fn(compression_ctrl, model, **kwargs):
        compression_ctrl.scheduler.step()

    def validate_fn(model, **kwargs):  # the "accuracy" falls with the masks actually applied
        seen.append(_measured(ctrl))
        return 1.0 - seen[-1]

    loop = nncf.torch.create_accuracy_aware_training_loop(config, ctrl, 1.0)  # within budget iff measured <= 0.11
    loop.run(model, train_epoch_fn, validate_fn)
    records = loop.records
    assert [r.compression_rate for r in records[:3]] == pytest.approx([0.1, 0.1, 0.3])  # the schedule, then off
    assert loop.visited_rates == pytest.approx(visited)
    if algorithm is SPARSITY:
        assert seen == pytest.approx([r.compression_rate for r in records], abs=0.005)
    by_rate = sorted(zip([r.compression_rate for r in records], seen))
    assert [m for _, m in by_rate] == sorted(seen)  # more compression, never fewer masked weights
    best = loop.statistics
    assert best.within_budget and best.compression_rate == max(r.compression_rate for r in records if r.within_budget)
    assert _measured(ctrl) == pytest.approx(seen[best.best_epoch])  # the best level's masks are restored
