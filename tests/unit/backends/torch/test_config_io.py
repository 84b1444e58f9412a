"""get_config / load_from_config: a JSON config + the state dict rebuild a compressed PyTorch model."""

from __future__ import annotations

import json

import pytest

import nncompress as nncf
from nncompress.errors import ValidationError

torch = pytest.importorskip("torch")
nn = torch.nn


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    return ConvNet().eval(), [torch.randn(2, 3, 8, 8) for _ in range(4)]


def _round_trip(compressed, x):
    config = json.loads(json.dumps(nncf.torch.get_config(compressed)))  # JSON-serialisable
    torch.manual_seed(1)
    fresh = ConvNet().eval()  # other float weights: everything must come from the state dict
    rebuilt = nncf.torch.load_from_config(fresh, config, x)
    assert not nncf.torch.is_wrapped_model(fresh)  # the float input is not modified
    rebuilt.load_state_dict(compressed.state_dict())  # strict: the same structure
    with torch.no_grad():
        return rebuilt(x), compressed(x)


def _compressions(model, items):
    yield "ptq", nncf.quantize(model, nncf.Dataset(items))
    yield "int4", nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=4, all_layers=True)
    yield "dq", nncf.strip(nncf.quantize(model, nncf.Dataset(items)), strip_format=nncf.StripFormat.DQ)


@pytest.mark.parametrize("kind", ["ptq", "int4", "dq"])
def test_round_trip_reproduces_outputs(data, kind):
    model, items = data
    compressed = dict(_compressions(model, items))[kind]
    rebuilt, expected = _round_trip(compressed, items[0])
    assert torch.equal(rebuilt, expected)
    with torch.no_grad():
        assert not torch.equal(expected, model(items[0]))  # compression changed the outputs: a real check


def test_round_trip_of_a_qat_model_keeps_trained_ranges_and_bits(data):
    model, items = data
    config = nncf.NNCFConfig.from_dict({
        "input_info": {"sample_size": [2, 3, 8, 8]},
        "compression": {"algorithm": "quantization", "weights": {"bits": 4},
                        "initializer": {"range": {"num_init_samples": 4}}},
    })
    loader = torch.utils.data.DataLoader([(x, torch.zeros(2, dtype=torch.long)) for x in items], batch_size=None)
    _, qat = nncf.create_compressed_model(model, nncf.torch.register_default_init_args(config, loader))
    with torch.no_grad():
        for p in qat.parameters():  # "training": move every range so defaults cannot pass by accident
            p.mul_(1.1)
    rebuilt, expected = _round_trip(qat, items[0])
    assert torch.equal(rebuilt, expected)


def test_config_refusals(data):
    model, items = data
    with pytest.raises(ValidationError, match="carries no nncompress compression"):
        nncf.torch.get_config(model)
    config = nncf.torch.get_config(nncf.quantize(model, nncf.Dataset(items)))
    with pytest.raises(ValidationError, match="needs a config from nncompress.torch.get_config"):
        nncf.torch.load_from_config(model, {"format": "other"})
    with pytest.raises(ValidationError, match="outside allowed_modules"):
        nncf.torch.load_from_config(model, config, allowed_modules=("my_package.*",))
    evil = json.loads(json.dumps(config))
    evil["storage"]["class"] = "os:system"
    with pytest.raises(ValidationError, match="outside allowed_modules"):
        nncf.torch.load_from_config(model, evil)
