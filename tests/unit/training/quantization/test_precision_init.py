"""Mixed-precision init end to end: HAWQ (a sensitive layer gets the most bits, resume skips the search,
device rules, dumps) and manual bitwidth_per_scope, on tiny models."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import nncompress as nncf
from nncompress.algorithms.hawq import PrecisionWarning
from nncompress.errors import ValidationError
from tests.unit.training.models import SmallCNN, loader


class Sensitive(nn.Module):
    """Three parallel linear layers of equal cost on differently activated copies of the input, summed; the
    output of layer ``hot`` is multiplied by 30, so the loss's Hessian in its weights is ~900 times larger."""

    def __init__(self, hot: int):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(8, 4), nn.Linear(8, 4), nn.Linear(8, 4)
        self.gain = [30.0 if hot == i else 1.0 for i in (1, 2, 3)]

    def forward(self, x):
        a = self.fc1(torch.relu(x)) * self.gain[0]
        b = self.fc2(torch.tanh(x)) * self.gain[1]
        c = self.fc3(torch.sigmoid(x)) * self.gain[2]
        return a + b + c


def _regression_data():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(32, 8, generator=g), torch.randn(32, 4, generator=g)) for _ in range(2)]


def _config(precision: dict, device: str = "TRIAL", sample=(1, 8), **extra) -> nncf.NNCFConfig:
    return nncf.NNCFConfig.from_dict({
        "input_info": {"sample_size": list(sample)}, "target_device": device, **extra,
        "compression": {"algorithm": "quantization",
                        "initializer": {"range": {"num_init_samples": 32}, "precision": precision}},
    })


HAWQ = {"type": "hawq", "bits": [4, 8], "num_data_points": 32, "iter_number": 10, "compression_ratio": 1.3}


def _weight_bits(ctrl) -> dict[str, int]:
    return {c.nodes[0].split("/")[0]: c.bits for c in ctrl.configs if c.group == "weights"}


@pytest.mark.parametrize("hot, layer", [(1, "fc1"), (3, "fc3")])
def test_hawq_gives_the_sensitive_layer_the_most_bits(hot, layer):
    torch.manual_seed(0)
    data = _regression_data()
    config = nncf.torch.register_default_init_args(_config(HAWQ), data, criterion=nn.MSELoss())
    ctrl, model = nncf.create_compressed_model(Sensitive(hot), config)
    bits = _weight_bits(ctrl)
    assert bits[layer] == 8
    assert sorted(bits.values()) == [4, 4, 8]
    traces = {row["name"].split("/")[0]: row["trace"] for row in ctrl.precision_summary["layers"]}
    assert traces[layer] == max(traces.values())
    assert ctrl.precision_summary["compression_ratio"] == pytest.approx(8 * 3 / (4 + 4 + 8))
    # the quantizer modules run at the chosen widths
    for config_, module in zip(ctrl.configs, ctrl.modules):
        assert module.num_bits == config_.bits and int(module._num_bits) == config_.bits
    per_layer = ctrl.statistics().as_dict()["quantization bit widths per quantizer"]
    assert per_layer[f"{next(c.name for c in ctrl.configs if c.nodes[0].startswith(layer + '/'))} (weights)"] == "8-bit"
    # activations follow the weights they feed: the input of a 4-bit layer is 4-bit
    feeding = {c.nodes[1].split("/")[0]: c.bits for c in ctrl.configs if c.group == "activations"
               and c.nodes[1].split("/")[0] in bits}
    for name, width in feeding.items():
        assert width == bits[name]


def test_resume_restores_the_chosen_widths_without_searching():
    data = _regression_data()
    config = nncf.torch.register_default_init_args(_config(HAWQ), data, criterion=nn.MSELoss())
    ctrl, model = nncf.create_compressed_model(Sensitive(2), config)
    state, weights = ctrl.get_compression_state(), model.state_dict()
    chosen = [c.bits for c in ctrl.configs]

    def exploding(outputs, target, criterion):
        raise AssertionError("the search ran again on resume")

    fresh = nncf.torch.register_default_init_args(_config(HAWQ), data, criterion=nn.MSELoss(),
                                                  criterion_fn=exploding)
    ctrl2, model2 = nncf.create_compressed_model(Sensitive(2), fresh, compression_state=state)
    nncf.load_state(model2, weights, is_resume=True)
    assert [c.bits for c in ctrl2.configs] == chosen
    assert [m.num_bits for m in ctrl2.modules] == chosen
    assert ctrl2.precision_summary == ctrl.precision_summary
    x = data[0][0]
    torch.testing.assert_close(model2(x), model(x))


def test_hawq_without_a_criterion_is_refused():
    config = nncf.torch.register_default_init_args(_config(HAWQ), _regression_data())
    with pytest.raises(ValidationError, match="criterion=torch.nn.CrossEntropyLoss"):
        nncf.create_compressed_model(Sensitive(1), config)


def test_cpu_target_warns_that_low_widths_are_not_searched():
    config = nncf.torch.register_default_init_args(_config({**HAWQ, "compression_ratio": 1.0}, device="CPU"),
                                                   _regression_data(), criterion=nn.MSELoss())
    with pytest.warns(PrecisionWarning, match=r"'CPU' cannot run \[4\]-bit weights"):
        ctrl, _ = nncf.create_compressed_model(Sensitive(1), config)
    assert {c.bits for c in ctrl.configs} == {8}
    with pytest.warns(PrecisionWarning), pytest.raises(ValidationError, match="cannot be reached"):
        nncf.create_compressed_model(Sensitive(1), _with_args(_config(HAWQ, device="CPU")))


def _with_args(config):
    return nncf.torch.register_default_init_args(config, _regression_data(), criterion=nn.MSELoss())


def test_dump_and_reuse_of_the_traces(tmp_path):
    precision = {**HAWQ, "dump_init_precision_data": True}
    ctrl, _ = nncf.create_compressed_model(Sensitive(2), _with_args(_config(precision, log_dir=str(tmp_path))))
    traces = json.loads((tmp_path / "traces_per_layer.json").read_text())
    assert traces == {row["name"]: row["trace"] for row in ctrl.precision_summary["layers"]}
    per_scope = json.loads((tmp_path / "bitwidth_per_scope.json").read_text())
    assert [8, "Sensitive/Linear[fc2]/linear_0|WEIGHT"] in per_scope
    csv_lines = (tmp_path / "precision_init.csv").read_text().splitlines()
    assert csv_lines[0] == "layer,trace,flops,bits,noise_4bit,noise_8bit" and len(csv_lines) == 4
    assert "fc2" in (tmp_path / "precision_init.txt").read_text()
    # the traces file replaces the estimate: no criterion needed, same choice
    reuse = {**HAWQ, "traces_per_layer_path": str(tmp_path / "traces_per_layer.json")}
    config = nncf.torch.register_default_init_args(_config(reuse), _regression_data())
    ctrl2, _ = nncf.create_compressed_model(Sensitive(2), config)
    assert [c.bits for c in ctrl2.configs] == [c.bits for c in ctrl.configs]
    # the dumped bitwidth_per_scope works as a manual configuration
    manual = {"type": "manual", "bitwidth_per_scope": per_scope}
    ctrl3, _ = nncf.create_compressed_model(Sensitive(2), _with_args(_config(manual)))
    assert [c.bits for c in ctrl3.configs] == [c.bits for c in ctrl.configs]


def test_manual_bitwidth_per_scope_on_a_cnn():
    manual = {"type": "manual", "bitwidth_per_scope": [
        [4, "SmallCNN/NNCFConv2d[conv2]/conv2d_0|WEIGHT"], [2, "{re}fc|WEIGHT"], [4, "relu/0|OUTPUT"]]}
    config = _config(manual, sample=(1, 1, 8, 8))
    config = nncf.torch.register_default_init_args(config, loader(limit=64, batch_size=32))
    ctrl, model = nncf.create_compressed_model(SmallCNN(), config)
    weights = _weight_bits(ctrl)
    assert weights == {"conv1": 8, "conv2": 4, "fc": 2}
    acts = {c.nodes[0]: c.bits for c in ctrl.configs if c.group == "activations"}
    assert acts["relu/0"] == 4 and all(b == 8 for n, b in acts.items() if n != "relu/0")
    assert [m.num_bits for m in ctrl.modules] == [c.bits for c in ctrl.configs]
    stats = ctrl.statistics().as_dict()["quantization"]
    assert stats["Bit widths"] == "2-bit: 1, 4-bit: 2, 8-bit: 3"
    state = ctrl.get_compression_state()  # manual widths are in the setup too
    assert sorted(d["bits"] for d in state["builder_state"]["quantization"]["quantizer_setup"]) == [2, 4, 4, 8, 8, 8]


def test_manual_errors_name_the_scope_and_the_device():
    bad_scope = {"type": "manual", "bitwidth_per_scope": [[4, "nowhere|WEIGHT"]]}
    with pytest.raises(ValidationError, match=r"bitwidth_per_scope\[0\]: scope 'nowhere\|WEIGHT' selects no"):
        nncf.create_compressed_model(Sensitive(1), _with_args(_config(bad_scope)))
    forbidden = {"type": "manual", "bitwidth_per_scope": [[4, "fc1|WEIGHT"]]}
    with pytest.raises(ValidationError, match=r"target_device 'CPU' cannot run 4-bit weights"):
        nncf.create_compressed_model(Sensitive(1), _with_args(_config(forbidden, device="CPU")))


def test_autoq_is_still_refused():
    with pytest.raises(nncf.errors.UnsupportedBackendError, match="'autoq' is not implemented"):
        nncf.create_compressed_model(Sensitive(1), _with_args(_config({"type": "autoq"})))


def _q(name: str, group: str, nodes: list[str], bits: int = 8):
    from nncompress.training.quantization.setup import QuantizerConfig

    return QuantizerConfig(name=name, group=group, mode="symmetric", bits=bits, signed=None, per_channel=False,
                           axis=None, channels=None, ndim=4, narrow_range=False, half_range=False,
                           logarithm_scale=False, nodes=nodes)


def test_activation_groups_follow_weighted_consumers_and_merge_unified_modules():
    from nncompress.algorithms.hawq import Activation
    from nncompress.training.quantization.precision import activation_groups

    configs = [
        _q("y", "activations", ["relu", "conv4", "add"]),  # feeds a conv and the residual add
        _q("z", "activations", ["bn", "add"], bits=6),  # feeds no weighted layer
        _q("c1", "activations", ["a", "head"]), _q("c2", "activations", ["b", "head2"]),  # one unified module
        _q("w4", "weights", ["conv4"]), _q("wh", "weights", ["head"]), _q("wh2", "weights", ["head2"]),
    ]
    shared = object()
    modules = [object(), object(), shared, shared, object(), object(), object()]
    groups = activation_groups(configs, modules)
    assert groups == [(Activation("y", ("w4",), None), [0]), (Activation("z", (), 6), [1]),
                      (Activation("c1", ("wh", "wh2"), None), [2, 3])]
