"""FilterPruningController: schedule levels, masks vs algorithms.pruning, FLOPs target, state, statistics, strip."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from nncompress.algorithms.pruning import group_importances, masks_for_flops_target, masks_for_level, model_cost
from nncompress.backends.torch.channel_removal import model_channels
from nncompress.backends.torch.hooks import storage_of
from nncompress.errors import ValidationError
from nncompress.graph.channels import PruningRules
from nncompress.training.builder import create_compressed_model
from nncompress.training.controller import CompressionStage
from tests.unit.training.pruning.helpers import INPUT, config, example, model

RULES = PruningRules(prune_first_conv=True, prune_downsample_convs=True)


def _levels(cfg: dict, epochs: int) -> list[float]:
    ctrl, _ = create_compressed_model(model(), cfg)
    levels = [ctrl.compression_rate]
    for _ in range(epochs):
        ctrl.scheduler.epoch_step()
        levels.append(ctrl.compression_rate)
    return levels


def test_exponential_schedule_levels_match_the_hand_computed_curve():
    cfg = config({"pruning_target": 0.5, "pruning_steps": 5, "num_init_steps": 1}, pruning_init=0.1)
    got = _levels(cfg, 7)
    d0, dt = 0.9, 0.5
    curve = [1 - d0 * (dt / d0) ** (e / 4) for e in range(4)]  # T = pruning_steps - 1 = 4
    # construction: pruning_init; epoch 0 warm-up keeps it; epochs 1..4 the curve; 5 and later the target
    assert got == pytest.approx([0.1, 0.1, *curve, 0.5, 0.5])


def test_baseline_reaches_the_target_right_after_warm_up_and_stage_follows():
    cfg = config({"schedule": "baseline", "pruning_target": 0.4, "num_init_steps": 2})
    ctrl, _ = create_compressed_model(model(), cfg)
    stages = [ctrl.compression_stage()]
    levels = [ctrl.compression_rate]
    for _ in range(4):
        ctrl.scheduler.epoch_step()
        levels.append(ctrl.compression_rate)
        stages.append(ctrl.compression_stage())
    assert levels == [0.0, 0.0, 0.0, 0.4, 0.4]
    assert stages[0] is CompressionStage.UNCOMPRESSED and stages[-1] is CompressionStage.FULLY_COMPRESSED
    ctrl.compression_rate = 0.2
    assert ctrl.compression_stage() is CompressionStage.PARTIALLY_COMPRESSED


def test_exponential_with_bias_levels_follow_the_solved_curve():
    from nncompress.training.sparsity.schedules import exponential_with_bias

    cfg = config({"schedule": "exponential_with_bias", "pruning_target": 0.5, "pruning_steps": 9})
    got = _levels(cfg, 9)
    a, k, b = exponential_with_bias(0.0, 0.5, 8)
    assert got[1:] == pytest.approx([min(a * math.exp(-k * e) + b, 0.5) for e in range(8)] + [0.5])
    assert got[2] == pytest.approx(0.75 * 0.5)  # P(T/8) = 0.75 target, T = 8


def _reference_masks(level: float, kind: str = "l2") -> dict[int, np.ndarray]:
    channels = model_channels(model(), example(1), RULES)
    imps = group_importances(channels.groups, lambda n: channels.weight_of(model(), n), kind)
    return masks_for_level(imps, level)


@pytest.mark.parametrize(("importance", "kind"), [("L2", "l2"), ("L1", "l1"), ("geometric_median", "geometric_median")])
def test_masks_equal_those_of_algorithms_pruning_and_sit_in_the_hooks(importance, kind):
    cfg = config({"schedule": "baseline", "pruning_target": 0.5, "filter_importance": importance}, pruning_init=0.5)
    ctrl, compressed = create_compressed_model(model(), cfg)
    expected = _reference_masks(0.5, kind)
    assert sorted(ctrl.keep) == sorted(expected)
    for gid, mask in expected.items():
        np.testing.assert_array_equal(ctrl.keep[gid], mask)
    hook = storage_of(compressed).module("expand/conv2d/0/pruning_mask_1_0")
    np.testing.assert_array_equal(hook.binary_mask.numpy().astype(bool), expected[1])
    masked = compressed.expand.weight * hook.binary_mask.view(-1, 1, 1, 1)
    assert int((masked.flatten(1).abs().sum(1) == 0).sum()) == 32  # 64 filters, 32 pruned


def test_masks_follow_the_weights_until_the_freeze_epoch_and_not_after():
    cfg = config({"pruning_target": 0.5, "pruning_steps": 2})  # exponential: target at epoch 1, freeze at 2
    ctrl, compressed = create_compressed_model(model(), cfg)
    ctrl.scheduler.epoch_step()
    ctrl.scheduler.epoch_step()
    before = ctrl.keep[2].copy()
    with torch.no_grad():  # make the pruned filters of `branch` the most important ones
        compressed.branch.weight[~torch.from_numpy(before)] *= 100
    ctrl.scheduler.epoch_step()  # epoch 2: frozen
    np.testing.assert_array_equal(ctrl.keep[2], before)
    ctrl.set_pruning_level(0.5)  # recomputed on request: the boosted filters win
    np.testing.assert_array_equal(ctrl.keep[2], ~before)


def test_flops_target_is_reached_as_algorithms_pruning_finds_it():
    cfg = config({"schedule": "baseline", "pruning_flops_target": 0.3})
    ctrl, _ = create_compressed_model(model(), cfg)
    ctrl.scheduler.epoch_step()
    channels = model_channels(model(), example(1), RULES)
    imps = group_importances(channels.groups, lambda n: channels.weight_of(model(), n), "l2")
    search = masks_for_flops_target(channels.groups, imps, 0.3)
    for gid, mask in search.masks.items():
        np.testing.assert_array_equal(ctrl.keep[gid], mask)
    assert ctrl.pruned_cost().level(ctrl.full) >= 0.3
    assert ctrl.pruned_cost().flops == search.pruned.flops
    assert ctrl.compression_rate == 0.3 and ctrl.compression_stage() is CompressionStage.FULLY_COMPRESSED


def test_statistics_report_full_and_current_flops_params_filters_and_per_layer_rates():
    ctrl, _ = create_compressed_model(model(), config({"schedule": "baseline"}, pruning_init=0.5))
    rows = ctrl.statistics().as_dict()["filter_pruning"]
    full = model_cost(ctrl.channels.graph)
    now = ctrl.pruned_cost()
    assert rows["FLOPs (M): full / current"].startswith(f"{full.flops / 1e6:.3f} / {now.flops / 1e6:.3f}")
    assert rows["Parameters (conv / linear): full / current"].startswith(f"{full.params} / {now.params}")
    assert rows["Filters: full / current"] == f"{full.filters} / {now.filters}"
    # removed: stem 16 + project 16 (one group), expand 32 + its depthwise 32, branch 8, down 8
    assert full.filters - now.filters == 16 + 16 + 32 + 32 + 8 + 8
    assert rows["expand/conv2d/0 pruning rate"] == "50.0 % (32 / 64 filters kept)"
    assert rows["down/conv2d/0 pruning rate"] == "33.3 % (16 / 24 filters kept)"  # 12 kept, rounded up to 16
    assert rows["Channel groups: prunable / skipped"] == "4 / 1"
    assert "Statistics of the filter_pruning algorithm" in ctrl.statistics().to_str()


def test_resume_rebuilds_the_same_masks_level_and_outputs():
    cfg = config({"pruning_target": 0.5, "pruning_steps": 4})
    ctrl, compressed = create_compressed_model(model(), cfg)
    optimizer = torch.optim.SGD(compressed.parameters(), lr=0.5)
    for _ in range(2):
        ctrl.scheduler.epoch_step()
        loss = compressed(example()).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    state, weights = ctrl.get_compression_state(), compressed.state_dict()
    compressed.eval()
    expected = compressed(example())
    resumed_ctrl, resumed = create_compressed_model(model(), cfg, compression_state=state)
    resumed.load_state_dict(weights)
    resumed.eval()
    assert resumed_ctrl.compression_rate == ctrl.compression_rate > 0
    assert resumed_ctrl.scheduler.current_epoch == 1
    for gid, mask in ctrl.keep.items():
        np.testing.assert_array_equal(resumed_ctrl.keep[gid], mask)
    torch.testing.assert_close(resumed(example()), expected)


def test_a_state_from_another_model_is_refused():
    ctrl, _ = create_compressed_model(model(), config())
    state = ctrl.get_compression_state()
    state["builder_state"]["filter_pruning"]["groups"] = [["x"]]
    with pytest.raises(ValidationError, match="prunable groups"):
        create_compressed_model(model(), config(), compression_state=state)


@pytest.mark.parametrize("bn", [True, False])
def test_strip_removes_the_channels_and_computes_what_the_masked_model_computes(bn):
    ctrl, compressed = create_compressed_model(model(), config({"prune_batch_norms": bn}, pruning_init=0.5))
    compressed.eval()
    stripped = ctrl.strip()
    assert storage_of(stripped) is None and type(stripped) is type(compressed)
    assert stripped.expand.weight.shape == (32, 16, 1, 1) and stripped.dw.groups == 32
    assert stripped.bn3.num_features == 16 + 8 and stripped.head.in_features == 16 * 16
    full = sum(p.numel() for p in model().parameters())
    assert sum(p.numel() for p in stripped.parameters()) < 0.45 * full
    torch.testing.assert_close(stripped(example()), compressed(example()), rtol=1e-5, atol=1e-5)
    assert storage_of(compressed) is not None and compressed.expand.weight.shape == (64, 32, 1, 1)  # untouched


def test_set_pruning_level_validates_and_adapts_batchnorm_when_configured(caplog):
    from nncompress import register_default_init_args

    data = torch.utils.data.TensorDataset(torch.randn(32, *INPUT[1:]), torch.zeros(32, dtype=torch.long))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    cfg = config({"schedule": "baseline"}, initializer={"batchnorm_adaptation": {"num_bn_adaptation_samples": 16}})
    ctrl, compressed = create_compressed_model(model(), register_default_init_args(_nncf(cfg), loader))
    mean = compressed.bn1.running_mean.clone()
    ctrl.set_pruning_level(0.5)
    assert not torch.equal(mean, compressed.bn1.running_mean)  # adapted to the pruned model
    with pytest.raises(ValidationError, match="1.5"):
        ctrl.set_pruning_level(1.5)
    caplog.set_level(logging.WARNING, logger="nncompress")
    create_compressed_model(model(), cfg)
    assert any("BatchNorm adaptation skipped" in r.getMessage() for r in caplog.records)


def _nncf(cfg: dict):
    from nncompress.training.config import NNCFConfig

    return NNCFConfig.from_dict(cfg)


def test_all_weights_uses_one_global_threshold_over_normalised_weights():
    cfg = config({"schedule": "baseline", "pruning_target": 0.4, "all_weights": True}, pruning_init=0.4)
    ctrl, _ = create_compressed_model(model(), cfg)
    channels = model_channels(model(), example(1), RULES)
    imps = group_importances(channels.groups, lambda n: channels.weight_of(model(), n), "l2", normalize=True)
    expected = masks_for_level(imps, 0.4, all_weights=True)
    for gid, mask in expected.items():
        np.testing.assert_array_equal(ctrl.keep[gid], mask)
    uniform = _reference_masks(0.4)
    assert any(not np.array_equal(expected[g], uniform[g]) for g in expected)  # not the per-group level
