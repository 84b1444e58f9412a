"""The QAT quantizer setup from config: modes, bits, per-channel, scopes, overrides, overflow fix, range-init lists."""

import pytest

import nncompress as nncf
from nncompress.errors import UnsupportedBackendError, ValidationError
from nncompress.training.quantization.setup import QuantizerConfig
from tests.unit.training.models import SmallCNN

NO_INIT = {"initializer": {"range": {"num_init_samples": 0}}}


def _setup(target_device=None, **section):
    raw = {"input_info": {"sample_size": [1, 1, 8, 8]},
           "compression": {"algorithm": "quantization", **NO_INIT, **section}}
    if target_device:
        raw["target_device"] = target_device
    ctrl, _ = nncf.create_compressed_model(SmallCNN(), nncf.NNCFConfig.from_dict(raw))
    return {c.name: c for c in ctrl.configs}, ctrl


W1, W2, WFC = "conv1/conv2d/0/fq_weights_1", "conv2/conv2d/0/fq_weights_1", "fc/linear/0/fq_weights_1"
A_IN, A1, A2 = "x/fq_output_0", "relu/0/fq_output_0", "relu/1/fq_output_0"


def test_defaults_symmetric_8_bit_half_range_weights_on_any_device():
    configs, _ = _setup()
    assert set(configs) == {W1, W2, WFC, A_IN, A1, A2}
    for name in (W1, W2, WFC):
        c = configs[name]
        assert (c.mode, c.bits, c.signed, c.half_range, c.narrow_range, c.per_channel) == (
            "symmetric", 8, True, True, False, True)  # per channel: the hardware config's first choice
    for name in (A_IN, A1, A2):
        c = configs[name]
        assert (c.mode, c.bits, c.signed, c.narrow_range, c.half_range) == ("symmetric", 8, None, False, False)


@pytest.mark.parametrize("device, section, per_channel", [
    ("TRIAL", {}, False), (None, {"weights": {"per_channel": False}}, False), ("GPU", {}, True),
])
def test_weights_are_per_channel_unless_trial_or_set(device, section, per_channel):
    configs, _ = _setup(target_device=device, **section)
    assert {configs[n].per_channel for n in (W1, W2, WFC)} == {per_channel}
    assert {configs[n].per_channel for n in (A_IN, A1, A2)} == {False}


def test_preset_mixed_makes_activations_asymmetric():
    configs, _ = _setup(preset="mixed")
    assert {configs[n].mode for n in (A_IN, A1, A2)} == {"asymmetric"}
    assert {configs[n].mode for n in (W1, W2, WFC)} == {"symmetric"}


@pytest.mark.parametrize("fix, device, half", [
    ("enable", None, {W1, W2, WFC}), ("first_layer_only", None, {W1}), ("disable", None, set()),
    ("enable", "GPU", set()), ("enable", "CPU", {W1, W2, WFC}),
])
def test_overflow_fix_marks_half_range_and_narrow_range_follows(fix, device, half):
    configs, _ = _setup(target_device=device, overflow_fix=fix)
    weights = {n: configs[n] for n in (W1, W2, WFC)}
    assert {n for n, c in weights.items() if c.half_range} == half
    assert {n for n, c in weights.items() if c.narrow_range} == set(weights) - half  # 8-bit sym, no half range


def test_per_channel_and_bits():
    configs, ctrl = _setup(weights={"per_channel": True, "bits": 4}, activations={"per_channel": True})
    assert (configs[W2].axis, configs[W2].channels, configs[W2].half_range, configs[W2].narrow_range) == (0, 32, False,
                                                                                                         False)
    assert (configs[WFC].axis, configs[WFC].channels) == (0, 10)
    assert (configs[A1].per_channel, configs[A1].axis, configs[A1].channels) == (True, 1, 16)
    assert tuple(ctrl.quantizers()[W2].scale.shape) == (32, 1, 1, 1)
    assert tuple(ctrl.quantizers()[A1].scale.shape) == (1, 16, 1, 1)


def test_quantize_inputs_and_outputs():
    configs, _ = _setup(quantize_inputs=False, quantize_outputs=True)
    assert A_IN not in configs
    assert any(c.tensor and c.tensor[0] == "fc/linear/0" for c in configs.values())


def test_ignored_scopes_nncf_style_and_regex():
    configs, _ = _setup(ignored_scopes=["SmallCNN/Conv2d[conv2]/conv2d_0"])
    assert W2 not in configs and A1 not in configs  # the op's weight and its input stay float
    configs, _ = _setup(ignored_scopes=["{re}.*linear.*"])
    assert WFC not in configs and A2 not in configs and W1 in configs


def test_target_scopes_and_group_scopes():
    configs, _ = _setup(target_scopes=["SmallCNN/Linear[fc]/linear_0"])
    assert set(configs) == {WFC, A2}
    configs, _ = _setup(weights={"ignored_scopes": ["SmallCNN/Conv2d[conv1]"]})
    assert W1 not in configs and A_IN in configs


def test_validate_scopes():
    with pytest.raises(ValidationError, match=r"ignored_scopes: scope 'SmallCNN/Conv2d\[conv9\]' matches no operation"):
        _setup(ignored_scopes=["SmallCNN/Conv2d[conv9]"])
    configs, _ = _setup(ignored_scopes=["SmallCNN/Conv2d[conv9]"], validate_scopes=False)
    assert len(configs) == 6
    with pytest.raises(ValidationError, match="scope_overrides.weights"):
        _setup(scope_overrides={"weights": {"{re}nothing_here": {"bits": 4}}})


def test_scope_overrides_change_single_quantizers():
    configs, ctrl = _setup(scope_overrides={
        "weights": {"{re}.*conv1.*": {"mode": "asymmetric", "bits": 4}},
        "activations": {"relu/0": {"mode": "asymmetric", "initializer": {"range": {"type": "percentile",
                                                                                    "num_init_samples": 10}}}},
    })
    assert (configs[W1].mode, configs[W1].bits, configs[W1].half_range, configs[W1].narrow_range) == (
        "asymmetric", 4, False, False)
    assert configs[W2].bits == 8
    assert configs[A1].mode == "asymmetric" and configs[A1].range_init.type == "percentile"
    assert configs[A1].range_init.num_init_samples == 10
    assert type(ctrl.quantizers()[W1]).__name__ == "AsymmetricQATQuantizer"


def test_range_init_lists_per_group_and_scope():
    configs, _ = _setup(initializer={"range": [
        {"type": "min_max", "num_init_samples": 16, "target_quantizer_group": "weights"},
        {"type": "percentile", "num_init_samples": 64, "target_quantizer_group": "activations",
         "target_scopes": ["{re}relu"]},
        {"type": "mean_min_max", "num_init_samples": 32, "target_quantizer_group": "activations"},
    ]})
    assert {configs[n].range_init.type for n in (W1, W2, WFC)} == {"min_max"}
    assert configs[A1].range_init.type == configs[A2].range_init.type == "percentile"
    assert (configs[A_IN].range_init.type, configs[A_IN].range_init.num_init_samples) == ("mean_min_max", 32)


def test_cpu_spr_is_refused():
    with pytest.raises(UnsupportedBackendError, match="CPU_SPR"):
        _setup(target_device="CPU_SPR")


def test_saved_setup_with_unknown_fields_is_refused():
    with pytest.raises(ValidationError, match="unknown fields"):
        QuantizerConfig.from_dict({"name": "x", "bogus": 1})


def test_autoq_precision_init_and_unified_scale_ops_are_not_implemented_yet():
    with pytest.raises(UnsupportedBackendError, match="precision type 'autoq' is not implemented yet"):
        _setup(initializer={"range": {"num_init_samples": 0}, "precision": {"type": "autoq"}})
    with pytest.raises(UnsupportedBackendError, match="unified_scale_ops is not implemented yet"):
        _setup(activations={"unified_scale_ops": [["{re}relu_0", "{re}relu_1"]]})
