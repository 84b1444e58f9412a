"""Fake-quantizer modules, ``strip`` and ONNX (QDQ) export of quantized PyTorch models."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
nn = torch.nn

import nncompress  # noqa: E402
from nncompress.backends.torch import (  # noqa: E402
    AsymmetricQuantizer,
    SymmetricQuantizer,
    export_onnx,
    quantizer_from_params,
    strip,
)
from nncompress.errors import UnsupportedBackendError  # noqa: E402
from nncompress.graph.edits import FakeQuantParams  # noqa: E402
from nncompress.numerics.qparams import asymmetric_range, fake_quantize, symmetric_range  # noqa: E402

W = torch.randn(32, 40, generator=torch.Generator().manual_seed(0)) * 3


def _params() -> list[FakeQuantParams]:
    absmax = W.abs().amax(dim=1).numpy()
    cases = []
    for narrow in (False, True):
        low, high, levels, signed = symmetric_range(-absmax, absmax, 8, narrow, True)
        cases.append(FakeQuantParams(low, high, levels, 0, signed, narrow))
        low, high, levels, signed = symmetric_range(0.0, 4.0, 8, narrow, None)
        cases.append(FakeQuantParams(low, high, levels, None, signed, narrow))
    low, high, levels = asymmetric_range(W.amin(dim=0).numpy(), W.amax(dim=0).numpy())
    cases.append(FakeQuantParams(low, high, levels, -1, False, False))
    cases.append(FakeQuantParams(np.float32(-0.7), np.float32(2.2), 16, None, True, False))
    return cases


@pytest.mark.parametrize("params", _params())
def test_quantizer_is_bit_exact_with_the_numpy_reference(params):
    quantizer = quantizer_from_params(params)
    assert np.array_equal(quantizer(W).detach().numpy(), fake_quantize(W.numpy(), params))
    half = quantizer(W.half())
    assert half.dtype is torch.float16


def test_quantizer_classes_and_straight_through_gradients():
    sym = quantizer_from_params(FakeQuantParams(np.float32(-1.0), np.float32(1.0), 255, narrow=True))
    asym = quantizer_from_params(FakeQuantParams(np.float32(-1.0), np.float32(3.0), 256, signed=False))
    assert isinstance(sym, SymmetricQuantizer) and isinstance(asym, AsymmetricQuantizer)
    assert float(asym.input_low) == pytest.approx(-1.0, abs=0.02) and float(asym.input_range) == pytest.approx(4.0)
    x = torch.tensor([-2.0, -0.3, 0.2, 0.9, 5.0], requires_grad=True)
    sym.scale.requires_grad_(True)
    sym(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    assert sym.scale.grad is not None and torch.isfinite(sym.scale.grad).all()
    assert sym.scale.requires_grad and not asym.scale.requires_grad


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc = nn.Linear(8, 6)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        y = torch.relu(self.dw(y)) + y
        return self.fc(y.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def quantized():
    torch.manual_seed(0)
    model = Net().eval()
    data = [torch.randn(2, 3, 8, 8) for _ in range(4)]
    return model, nncompress.quantize(model, nncompress.Dataset(data)), data[0]


def test_strip_bakes_weights_and_optionally_drops_activation_quantizers(quantized):
    model, q, x = quantized
    stripped = strip(q)
    assert isinstance(stripped, Net)
    assert all("fq_weights" not in name for name in stripped._nncompress_hooks.keys)
    assert not torch.equal(stripped.conv.weight, model.conv.weight)
    with torch.no_grad():
        assert torch.equal(stripped(x), q(x))
    plain = strip(q, keep_activation_quantizers=False)
    assert not hasattr(plain, "_nncompress_hooks") and "forward" not in plain.__dict__
    assert torch.equal(plain.conv.weight, stripped.conv.weight)
    assert set(plain.state_dict()) == set(model.state_dict())


def test_onnx_export_is_standard_qdq_and_matches_in_onnxruntime(quantized, tmp_path):
    _, q, x = quantized
    path = export_onnx(q, tmp_path / "q.onnx", x)
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= ops.count("QuantizeLinear") + 3
    assert max(i.version for i in proto.opset_import if i.domain in ("", "ai.onnx")) >= 13
    weight_dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"
                 and any(a.name == "axis" for a in n.attribute)]
    assert len(weight_dq) == 3  # conv, depthwise conv and linear weights, per channel
    assert [i.name for i in proto.graph.input] == ["x"]
    session = ort.InferenceSession(str(path))
    result = session.run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        expected = q(x).numpy()
    np.testing.assert_allclose(result, expected, atol=1e-4 * float(np.abs(expected).max()))


def test_onnx_export_runs_in_openvino(quantized, tmp_path):
    ov = pytest.importorskip("openvino")
    _, q, x = quantized
    path = export_onnx(q, tmp_path / "q.onnx", x)
    compiled = ov.compile_model(ov.convert_model(str(path)), "CPU")
    with torch.no_grad():
        expected = q(x).numpy()
    result = compiled(x.numpy())[0]
    step = float(np.abs(expected).max()) / 64
    assert np.abs(result - expected).max() < step


def test_export_of_dict_inputs_and_low_bit_grids(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=16)
    torch.manual_seed(0)
    bert = transformers.BertModel(config).eval()
    data = [{"input_ids": torch.randint(0, 50, (1, 6)), "attention_mask": torch.ones(1, 6, dtype=torch.long)}
            for _ in range(3)]
    q = nncompress.quantize(bert, nncompress.Dataset(data), model_type=nncompress.ModelType.TRANSFORMER)
    path = export_onnx(q, tmp_path / "bert.onnx", data[0])
    session = ort.InferenceSession(str(path))
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state", "pooler_output"]
    result = session.run(None, {k: v.numpy() for k, v in data[0].items()})[0]
    with torch.no_grad():
        expected = q(**data[0]).last_hidden_state.numpy()
    cosine = float((result * expected).sum() / np.linalg.norm(result) / np.linalg.norm(expected))
    assert cosine > 0.99
    four_bit = quantizer_from_params(FakeQuantParams(np.float32(-0.7), np.float32(2.2), 16, None, True, False))
    path = export_onnx(four_bit, tmp_path / "q4.onnx", W)
    result = ort.InferenceSession(str(path)).run(None, {"x": W.numpy()})[0]
    np.testing.assert_allclose(result, four_bit(W).numpy(), atol=1e-6)
    ten_bit = SymmetricQuantizer(np.float32(0.01), 1024, -512, 511)
    with pytest.raises(UnsupportedBackendError, match="8-bit"):
        export_onnx(ten_bit, tmp_path / "q10.onnx", W)


def test_export_of_a_tuple_output_model_names_the_outputs_by_position(tmp_path):
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 2)

        def forward(self, x):
            return self.a(x), self.b(x)

    torch.manual_seed(0)
    model, x = TwoHeads().eval(), torch.randn(5, 4)
    session = ort.InferenceSession(str(export_onnx(model, tmp_path / "two.onnx", x)))
    assert [o.name for o in session.get_outputs()] == ["output_0", "output_1"]
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model(x)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e.numpy(), atol=1e-6)
