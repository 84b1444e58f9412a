"""Sparsity controllers through create_compressed_model: hand-computed thresholds and masks, schedule
progression, RB loss values, freeze, compression stage/rate, statistics, strip, resume."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import nncompress as nncf
from nncompress.backends.torch.hooks import storage_of
from nncompress.errors import ConfigError, ValidationError
from nncompress.numerics import sparsity as sp
from nncompress.training import CompressionStage
from tests.unit.training.models import SmallCNN


class TwoLinear(nn.Module):
    """fc1 = [[1, 2], [3, 4]], fc2 = [[0.5, -1]]: normed importances 1/√30·(1..4) and (0.5, 1)/√1.25."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(2, 2, bias=False)
        self.fc2 = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
            self.fc2.weight.copy_(torch.tensor([[0.5, -1.0]]))

    def forward(self, x):
        return self.fc2(self.fc1(x))


def _create(model, section, sample=(1, 2)):
    config = nncf.NNCFConfig.from_dict({"input_info": {"sample_size": list(sample)}, "compression": section})
    return nncf.create_compressed_model(model, config)


def _masks(ctrl):
    return {name: m.binary_mask.int().tolist() for name, m in ctrl.masks.items()}


@pytest.mark.parametrize(
    ("importance", "mode", "fc1", "fc2", "thresholds"),
    [
        # sorted normed: .183 .365 .447 .548 .730 .894 -> rank int(5 * .5) = 2 -> 0.5/√1.25
        ("normed_abs", "global", [[0, 0], [1, 1]], [[0, 1]], (0.5 / math.sqrt(1.25),) * 2),
        # sorted abs: .5 1 1 2 3 4 -> rank 2 -> 1
        ("abs", "global", [[0, 1], [1, 1]], [[0, 0]], (1.0, 1.0)),
        # per layer: fc1 1 2 3 4 -> rank int(3 * .5) = 1 -> 2; fc2 .5 1 -> rank 0 -> .5
        ("abs", "local", [[0, 0], [1, 1]], [[0, 1]], (2.0, 0.5)),
    ],
)
def test_magnitude_masks_and_thresholds_by_hand(importance, mode, fc1, fc2, thresholds):
    ctrl, model = _create(TwoLinear(), {
        "algorithm": "magnitude_sparsity", "sparsity_init": 0.5,
        "params": {"weight_importance": importance, "sparsity_level_setting_mode": mode},
    })
    assert _masks(ctrl) == {"fc1.weight": fc1, "fc2.weight": fc2}
    assert ctrl.thresholds()["fc1.weight"] == pytest.approx(thresholds[0], rel=1e-6)
    assert ctrl.thresholds()["fc2.weight"] == pytest.approx(thresholds[1], rel=1e-6)
    x = torch.tensor([[1.0, 1.0]])
    w1 = torch.tensor([[1.0, 2.0], [3.0, 4.0]]) * torch.tensor(fc1)
    w2 = torch.tensor([[0.5, -1.0]]) * torch.tensor(fc2)
    assert torch.allclose(model(x), x @ w1.T @ w2.T)


def test_global_masks_match_numerics_global_threshold_on_a_cnn():
    torch.manual_seed(0)
    ctrl, model = _create(SmallCNN(), {"algorithm": "magnitude_sparsity", "sparsity_init": 0.37}, (1, 1, 8, 8))
    weights = [model.conv1.weight, model.conv2.weight, model.fc.weight]
    expected = sp.threshold_by_sort([sp.importance(w) for w in weights], 0.37)
    assert set(ctrl.thresholds().values()) == {expected}
    for name, w in zip(ctrl.masks, weights):
        assert torch.equal(ctrl.masks[name].binary_mask, sp.importance(w) > expected)
    assert ctrl.measured_level() == pytest.approx(0.37, abs=1 / 9872)


def test_local_masks_match_numerics_local_threshold():
    torch.manual_seed(0)
    ctrl, model = _create(SmallCNN(), {
        "algorithm": "magnitude_sparsity", "sparsity_init": 0.6, "params": {"sparsity_level_setting_mode": "local"},
    }, (1, 1, 8, 8))
    for name, w in (("conv1.weight", model.conv1.weight), ("fc.weight", model.fc.weight)):
        values = sp.importance(w)
        assert ctrl.thresholds()[name] == sp.local_threshold(values, 0.6)
        assert ctrl.layer_levels()[name] == pytest.approx(0.6, abs=1 / values.numel() + 1e-9)


def test_polynomial_schedule_over_epochs_sets_masks_and_stage():
    torch.manual_seed(0)
    ctrl, _ = _create(SmallCNN(), {
        "algorithm": "magnitude_sparsity", "sparsity_init": 0.1,
        "params": {"sparsity_target": 0.5, "sparsity_target_epoch": 4, "power": 2, "sparsity_freeze_epoch": 9},
    }, (1, 1, 8, 8))
    assert ctrl.compression_rate == pytest.approx(0.1)
    levels = []
    for _ in range(6):
        ctrl.scheduler.epoch_step()
        levels.append(ctrl.compression_rate)
        assert ctrl.measured_level() == pytest.approx(ctrl.compression_rate, abs=2e-4)
    # concave, power 2: S = 0.5 - 0.4 (1 - e/4)^2
    assert levels == pytest.approx([0.1, 0.275, 0.4, 0.475, 0.5, 0.5])
    assert ctrl.compression_stage() is CompressionStage.FULLY_COMPRESSED


def test_compression_stage_uncompressed_partially_fully():
    ctrl, _ = _create(TwoLinear(), {"algorithm": "magnitude_sparsity", "params": {"sparsity_target": 0.5}})
    assert ctrl.compression_stage() is CompressionStage.UNCOMPRESSED
    assert _masks(ctrl) == {"fc1.weight": [[1, 1], [1, 1]], "fc2.weight": [[1, 1]]}  # level 0 masks nothing
    ctrl.compression_rate = 0.2
    assert ctrl.compression_stage() is CompressionStage.PARTIALLY_COMPRESSED
    ctrl.compression_rate = 0.5
    assert ctrl.compression_stage() is CompressionStage.FULLY_COMPRESSED
    assert _masks(ctrl) == {"fc1.weight": [[0, 0], [1, 1]], "fc2.weight": [[0, 1]]}
    with pytest.raises(ValidationError, match=r"\[0, 1\)"):
        ctrl.compression_rate = 1.0


def test_set_sparsity_level_of_one_layer():
    ctrl, _ = _create(TwoLinear(), {"algorithm": "magnitude_sparsity", "params": {"weight_importance": "abs"}})
    ctrl.set_sparsity_level(0.7, "fc1")  # rank int(3 * .7) = 2 -> threshold 3
    assert _masks(ctrl) == {"fc1.weight": [[0, 0], [0, 1]], "fc2.weight": [[1, 1]]}
    assert ctrl.thresholds()["fc1.weight"] == 3.0
    with pytest.raises(ValidationError, match="fc3"):
        ctrl.set_sparsity_level(0.5, "fc3")


def test_per_optimizer_step_updates_and_learned_steps_per_epoch():
    section = {"algorithm": "magnitude_sparsity", "params": {
        "sparsity_target": 0.4, "sparsity_target_epoch": 2, "power": 1, "update_per_optimizer_step": True}}
    ctrl, _ = _create(SmallCNN(), section, (1, 1, 8, 8))
    sched = ctrl.scheduler
    sched.epoch_step()
    for _ in range(4):  # epoch 0: steps per epoch unknown -> the epoch's level (0)
        sched.step()
        assert ctrl.compression_rate == 0.0
    sched.epoch_step()  # learns 4 steps per epoch
    assert sched.steps_per_epoch == 4 and ctrl.compression_rate == pytest.approx(0.2)
    sched.step()
    sched.step()
    sched.step()  # third step of epoch 1: position 1 + 2/4 -> p = 0.75
    assert ctrl.compression_rate == pytest.approx(0.3)


def test_exponential_multistep_and_adaptive_schedules():
    exp, _ = _create(TwoLinear(), {"algorithm": "magnitude_sparsity", "params": {
        "schedule": "exponential", "sparsity_target": 0.75, "sparsity_target_epoch": 2}})
    multi, _ = _create(TwoLinear(), {"algorithm": "magnitude_sparsity", "params": {
        "schedule": "multistep", "multistep_steps": [1, 3], "multistep_sparsity_levels": [0.1, 0.3, 0.6]}})
    adaptive, _ = _create(SmallCNN(), {"algorithm": "magnitude_sparsity", "sparsity_init": 0.1, "params": {
        "schedule": "adaptive", "sparsity_target": 0.2, "patience": 1}}, (1, 1, 8, 8))
    got = {"exp": [], "multi": [], "adaptive": []}
    for _ in range(4):
        for key, ctrl in (("exp", exp), ("multi", multi), ("adaptive", adaptive)):
            ctrl.scheduler.epoch_step()
            got[key].append(ctrl.compression_rate)
    assert got["exp"] == pytest.approx([0.0, 0.5, 0.75, 0.75])  # density 1 -> .5 -> .25
    assert got["multi"] == pytest.approx([0.1, 0.3, 0.3, 0.6])
    # every epoch reaches its level (magnitude masks are exact): +0.05 per epoch, capped at the target
    assert got["adaptive"] == pytest.approx([0.1, 0.15, 0.2, 0.2])
    assert multi.target_level() == 0.6


def test_freeze_epoch_stops_the_schedule():
    ctrl, _ = _create(TwoLinear(), {"algorithm": "magnitude_sparsity", "params": {
        "schedule": "multistep", "multistep_steps": [1, 2], "multistep_sparsity_levels": [0.0, 0.2, 0.5],
        "sparsity_freeze_epoch": 1}})
    ctrl.scheduler.epoch_step()
    ctrl.scheduler.epoch_step()  # epoch 1: level 0.2 set, then frozen
    assert ctrl.compression_rate == pytest.approx(0.2) and ctrl.scheduler.frozen
    ctrl.scheduler.epoch_step()
    assert ctrl.compression_rate == pytest.approx(0.2)


def test_statistics_table_lists_layers_levels_and_thresholds():
    ctrl, _ = _create(TwoLinear(), {"algorithm": "magnitude_sparsity", "sparsity_init": 0.5,
                                    "params": {"weight_importance": "abs"}})
    rows = ctrl.statistics().as_dict()["magnitude_sparsity"]
    assert rows["fc1.weight [2, 2]"] == "level 25.00 %, threshold 1"
    assert rows["fc2.weight [1, 2]"] == "level 100.00 %, threshold 1"
    assert rows["Sparsity level of the sparsified weights"] == "50.00 %"
    assert rows["Scheduled level / target"] == "50.00 % / 50.00 %"
    text = ctrl.statistics().to_str()
    assert "fc1.weight [2, 2]" in text and "Statistics of the magnitude_sparsity algorithm" in text


def test_strip_bakes_zeros_removes_hooks_and_keeps_outputs():
    torch.manual_seed(0)
    original = SmallCNN().eval()
    before = {k: v.clone() for k, v in original.state_dict().items()}
    ctrl, model = _create(original, {"algorithm": "magnitude_sparsity", "sparsity_init": 0.5}, (1, 1, 8, 8))
    stripped = ctrl.strip()
    assert storage_of(stripped) is None and storage_of(model) is not None
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(stripped.eval()(x), model.eval()(x))
    mask = ctrl.masks["conv2.weight"].binary_mask
    assert torch.equal(stripped.conv2.weight == 0, ~mask)
    assert all(torch.equal(v, original.state_dict()[k]) for k, v in before.items())  # input model untouched


def _train_steps(ctrl, model, steps=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for _ in range(steps):
        ctrl.scheduler.step()
        x, y = torch.rand(8, 1, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y) + ctrl.loss()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("algorithm", ["magnitude_sparsity", "rb_sparsity"])
def test_resume_from_compression_state_gives_identical_masks_and_outputs(algorithm):
    torch.manual_seed(0)
    section = {"algorithm": algorithm, "sparsity_init": 0.2,
               "params": {"sparsity_target": 0.5, "sparsity_target_epoch": 3, "schedule": "polynomial"}}
    ctrl, model = _create(SmallCNN(), section, (1, 1, 8, 8))
    for _ in range(2):
        ctrl.scheduler.epoch_step()
        _train_steps(ctrl, model)
    state, weights = ctrl.get_compression_state(), model.state_dict()
    ctrl2 = nncf.create_compressed_model(SmallCNN(), nncf.NNCFConfig.from_dict({
        "input_info": {"sample_size": [1, 1, 8, 8]}, "compression": section}), compression_state=state)[0]
    model2 = ctrl2.model
    nncf.load_state(model2, weights, is_resume=True)
    assert _masks(ctrl2) == _masks(ctrl)
    assert ctrl2.compression_rate == ctrl.compression_rate and ctrl2.scheduler.current_epoch == 1
    x = torch.rand(3, 1, 8, 8)
    assert torch.isfinite(model.eval()(x)).all()
    assert torch.equal(model2.eval()(x), model.eval()(x))
    for c in (ctrl, ctrl2):
        c.scheduler.epoch_step()
    assert ctrl2.compression_rate == ctrl.compression_rate
    assert _masks(ctrl2) == _masks(ctrl)


def test_invalid_params_are_config_errors():
    with pytest.raises(ConfigError, match="sparsity_target"):
        _create(TwoLinear(), {"algorithm": "magnitude_sparsity", "params": {"sparsity_target": 1.0}})
    with pytest.raises(ConfigError, match="one more level than steps"):
        _create(TwoLinear(), {"algorithm": "magnitude_sparsity", "params": {
            "schedule": "multistep", "multistep_steps": [1, 2], "multistep_sparsity_levels": [0.1, 0.2]}})


# --- RB ------------------------------------------------------------------------------------------------


def _rb(section_params=None, model=None, sample=(1, 1, 8, 8)):
    torch.manual_seed(0)
    return _create(model or SmallCNN(), {"algorithm": "rb_sparsity", "params": section_params or {}}, sample)


def test_rb_loss_by_hand_and_target_following_the_exponential_schedule():
    ctrl, _ = _rb({"sparsity_target": 0.5, "sparsity_target_epoch": 2})
    n = 9872
    with torch.no_grad():
        ctrl.masks["fc.weight"].mask.fill_(-1.0)  # drops all 5120 fc weights
    assert ctrl.loss().item() == pytest.approx(((n - 5120) / n - 1.0) ** 2 / 0.05**2, rel=1e-5)  # target 0
    ctrl.scheduler.epoch_step()
    ctrl.scheduler.epoch_step()  # epoch 1: density 0.5^(1/2) -> target 1 - 0.7071
    target = 1 - 0.5**0.5
    assert ctrl.compression_rate == pytest.approx(target)
    assert ctrl.loss().item() == pytest.approx(((n - 5120) / n - (1 - target)) ** 2 / 0.05**2, rel=1e-5)
    assert ctrl.measured_level() == pytest.approx(5120 / n)
    assert ctrl.compression_stage() is CompressionStage.PARTIALLY_COMPRESSED


def test_rb_loss_gradient_reaches_the_logits_and_local_loss_matches_numerics():
    ctrl, _ = _rb({"sparsity_level_setting_mode": "local"})
    ctrl.set_sparsity_level(0.3)
    ctrl.set_sparsity_level(0.6, "fc")
    names = list(ctrl.masks)
    kept = [ctrl.masks[n].kept().item() for n in names]
    totals = [ctrl.masks[n].mask.numel() for n in names]
    targets = [0.6 if n == "fc.weight" else 0.3 for n in names]
    loss = ctrl.loss()
    assert loss.item() == pytest.approx(sp.rb_local_loss(kept, totals, targets), rel=1e-6)
    loss.backward()
    assert all(m.mask.grad is not None and m.mask.grad.abs().sum() > 0 for m in ctrl.masks.values())


def test_rb_masks_are_stochastic_in_training_deterministic_in_eval_and_frozen():
    ctrl, model = _rb()
    with torch.no_grad():
        for m in ctrl.masks.values():
            m.mask.zero_()  # keep probability 0.5: every sampled mask differs
        ctrl.masks["conv1.weight"].mask[:8] = 3.0
    x = torch.rand(2, 1, 8, 8)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
    assert ctrl.layer_levels()["conv1.weight"] == pytest.approx(0.5)  # sigmoid(0) > 0.5 is False
    ctrl.freeze()
    model.train()
    first = model(x)
    assert torch.equal(first, model(x))
    assert ctrl.loss().item() == 0.0 and not ctrl.masks["fc.weight"].mask.requires_grad


def test_rb_freeze_epoch_and_shared_sampling_seed():
    ctrl, _ = _rb({"sparsity_freeze_epoch": 1})
    assert {id(m.generator) for m in ctrl.masks.values()} == {id(ctrl.generator)}
    ctrl.scheduler.epoch_step()
    assert not ctrl.scheduler.frozen and ctrl.masks["fc.weight"].mask.requires_grad
    ctrl.scheduler.epoch_step()
    assert ctrl.scheduler.frozen and all(bool(m.frozen) for m in ctrl.masks.values())
    assert ctrl.loss().item() == 0.0


def test_rb_sampling_follows_torch_manual_seed():
    def sampled():
        torch.manual_seed(5)
        ctrl, model = _create(SmallCNN(), {"algorithm": "rb_sparsity"}, (1, 1, 8, 8))
        with torch.no_grad():
            ctrl.masks["fc.weight"].mask.zero_()
        torch.manual_seed(99)  # the global RNG after creation does not matter: the masks' generator does
        return ctrl.masks["fc.weight"].train().sample()

    assert torch.equal(sampled(), sampled())


def test_rb_strip_uses_the_deterministic_masks():
    ctrl, model = _rb()
    with torch.no_grad():
        ctrl.masks["fc.weight"].mask[:, :100] = -2.0
    stripped = ctrl.strip()
    assert storage_of(stripped) is None
    assert int((stripped.fc.weight[:, :100] == 0).sum()) == 1000
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(stripped.eval()(x), model.eval()(x))


# --- const ---------------------------------------------------------------------------------------------


def test_const_masks_come_from_the_weights_zeros_and_stay_while_training():
    torch.manual_seed(0)
    dense = SmallCNN()
    with torch.no_grad():
        dense.fc.weight[:, ::2] = 0.0
    ctrl, model = _create(dense, {"algorithm": "const_sparsity"}, (1, 1, 8, 8))
    assert ctrl.layer_levels()["fc.weight"] == 0.5 and ctrl.layer_levels()["conv1.weight"] == 0.0
    assert ctrl.compression_stage() is CompressionStage.FULLY_COMPRESSED
    assert ctrl.compression_rate == pytest.approx(2560 / 9872)
    with pytest.raises(ValidationError, match="fixed masks"):
        ctrl.compression_rate = 0.3
    _train_steps(ctrl, model)
    stripped = ctrl.strip()
    assert torch.equal(stripped.fc.weight[:, ::2], torch.zeros(10, 256))
    assert int((stripped.fc.weight[:, 1::2] == 0).sum()) == 0


def test_const_masks_load_from_a_magnitude_checkpoint():
    torch.manual_seed(0)
    base = SmallCNN()
    mag, mag_model = _create(base, {"algorithm": "magnitude_sparsity", "sparsity_init": 0.4}, (1, 1, 8, 8))
    const, const_model = _create(base, {"algorithm": "const_sparsity"}, (1, 1, 8, 8))
    assert const.measured_level() == 0.0
    nncf.load_state(const_model, mag_model.state_dict(), is_resume=True)
    assert _masks(const) == _masks(mag)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(const_model.eval()(x), mag_model.eval()(x))
    assert np.isclose(const.measured_level(), 0.4, atol=1e-3)
