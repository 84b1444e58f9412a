"""strip formats DQ (integer weights + scale) and IN_PLACE (float weights) on PyTorch models."""

from __future__ import annotations

import copy
import pickle

import pytest

import nncompress as nncf

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
def setup():
    torch.manual_seed(0)
    model = ConvNet().eval()
    items = [torch.randn(2, 3, 8, 8) for _ in range(4)]
    return model, nncf.quantize(model, nncf.Dataset(items)), items[0]


def test_dq_stores_int8_levels_and_scale_that_reproduce_the_native_weights(setup):
    _, quantized, x = setup
    with torch.no_grad():
        native = nncf.strip(quantized)
        dq = nncf.strip(quantized, strip_format=nncf.StripFormat.DQ)
        stored = dq.conv.weight_dq
        assert stored.weight_int.dtype == torch.int8 and "conv.weight" not in dict(dq.named_parameters())
        assert stored.scale.shape == (8, 1, 1, 1)  # per output channel
        levels = stored.weight_int.float()
        assert levels.abs().max() <= 128 and torch.equal(levels, levels.round())
        # the weight the layer reads in forward: (q - zero_point) * scale == the NATIVE baked weight
        assert torch.allclose(stored(), native.conv.weight, rtol=0, atol=1e-7)
        assert torch.allclose(dq(x), native(x), rtol=0, atol=1e-6)
        assert dq.conv.weight.device.type == "meta"  # no float copy outside forward
        assert not torch.equal(quantized(x), setup[0](x))  # the quantized model differs from the float one


def test_dq_state_dict_and_pickle_round_trip(setup):
    _, quantized, x = setup
    dq = nncf.strip(quantized, strip_format="dequantize")
    again = pickle.loads(pickle.dumps(dq))
    with torch.no_grad():
        assert torch.equal(again(x), dq(x))
    keys = set(dq.state_dict())
    assert {"conv.weight_dq.weight_int", "conv.weight_dq.scale", "fc.weight_dq.weight_int"} <= keys


def test_dq_of_a_qat_model_stores_its_trained_grid():
    torch.manual_seed(0)
    model = ConvNet().eval()
    config = nncf.NNCFConfig.from_dict({
        "input_info": {"sample_size": [2, 3, 8, 8]},
        "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 4}}},
    })
    loader = [(torch.randn(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)) for _ in range(2)]
    config = nncf.torch.register_default_init_args(config, torch.utils.data.DataLoader(loader, batch_size=None))
    _, qat = nncf.create_compressed_model(model, config)
    x = loader[0][0]
    with torch.no_grad():
        native = nncf.strip(qat)
        dq = nncf.strip(qat, strip_format=nncf.StripFormat.DQ)
        assert hasattr(dq.conv, "weight_dq") and dq.conv.weight_dq.weight_int.dtype in (torch.int8, torch.uint8)
        assert torch.allclose(dq(x), native(x), rtol=0, atol=1e-6)


def test_in_place_bakes_quantized_weights_into_float_parameters(setup):
    _, quantized, x = setup
    target = copy.deepcopy(quantized)
    with torch.no_grad():
        native = nncf.strip(quantized, keep_activation_quantizers=False)
        result = nncf.strip(target, do_copy=False, strip_format=nncf.StripFormat.IN_PLACE,
                            keep_activation_quantizers=False)
        assert result is target and not nncf.torch.is_wrapped_model(target)
        assert torch.equal(target.conv.weight, native.conv.weight)
        assert torch.equal(target(x), native(x))


def test_in_place_decompresses_weights_stored_by_compress_weights(setup):
    model, _, x = setup
    compressed = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_SYM)
    with torch.no_grad():
        plain = nncf.strip(compressed, strip_format="in_place")
        assert isinstance(plain.fc.weight, nn.Parameter) and not hasattr(plain.fc, "weight_compressed")
        assert set(plain.state_dict()) == set(model.state_dict())
        assert torch.equal(plain.fc.weight, compressed.fc.weight_compressed())
        assert torch.equal(plain(x), compressed(x))
        assert not torch.equal(plain.fc.weight, model.fc.weight)  # the INT8 rounding is kept
        # DQ leaves compressed storage as it is: it already is integers + scale
        dq = nncf.strip(compressed, strip_format="dequantize")
        assert hasattr(dq.fc, "weight_compressed") and torch.equal(dq(x), compressed(x))
