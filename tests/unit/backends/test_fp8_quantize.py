"""quantize(mode=FP8_E4M3 | FP8_E5M2) on PyTorch, ONNX and OpenVINO: the right nodes, outputs close to
the float model, and the three backends computing the same FP8 quantizers."""

from __future__ import annotations

import io

import numpy as np
import pytest

import nncompress as nncf
from nncompress.errors import ValidationError

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.fc1 = torch.nn.Linear(8 * 6 * 6, 32)
        self.fc2 = torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.relu(self.conv(x)).flatten(1))))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = _Net().eval()
    items = [torch.randn(1, 3, 8, 8) for _ in range(16)]
    buffer = io.BytesIO()
    torch.onnx.export(model, (items[0],), buffer, input_names=["x"], dynamo=False, opset_version=17)
    onnx_model = onnx.load_from_string(buffer.getvalue())
    ov_model = ov.convert_model(model, example_input=items[0])
    test = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        reference = model(test).numpy()
    return model, onnx_model, ov_model, items, test, reference


def _relative(got, want) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def _run_torch(model, x):
    with torch.no_grad():
        return model(x).numpy()


def _run_onnx(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.numpy()})[0]


def _run_ov(model, x):
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x.numpy())[0]


@pytest.mark.parametrize("mode,bound", [(nncf.QuantizationMode.FP8_E4M3, 0.1), ("fp8_e5m2", 0.2)])
def test_fp8_on_every_backend(setup, mode, bound):
    model, onnx_model, ov_model, items, test, reference = setup
    destination = "f8e4m3" if "e4m3" in str(getattr(mode, "value", mode)) else "f8e5m2"
    on_torch = nncf.quantize(model, nncf.Dataset(items), mode=mode)
    assert any(n.startswith(f"FP8 quantization: activations {destination}") for n in nncf.last_report().notes)
    on_onnx = nncf.quantize(onnx_model, nncf.Dataset([{"x": i.numpy()} for i in items]), mode=mode)
    on_ov = nncf.quantize(ov_model, nncf.Dataset([i.numpy() for i in items]), mode=mode)

    from nncompress.backends.torch.fp8 import FP8Quantizer

    quantizers = [m for m in on_torch.modules() if isinstance(m, FP8Quantizer)]
    assert len(quantizers) == 6 and {q.destination for q in quantizers} == {destination}  # 3 inputs, 3 weights
    converts = [op for op in on_ov.get_ops() if op.get_type_name() == "FakeConvert"]
    assert len(converts) == 6 and {op.get_attributes()["destination_type"] for op in converts} == {destination}
    assert not any(op.get_type_name() == "FakeQuantize" for op in on_ov.get_ops())
    elem = {"f8e4m3": onnx.TensorProto.FLOAT8E4M3FN, "f8e5m2": onnx.TensorProto.FLOAT8E5M2}[destination]
    to_fp8 = [n for n in on_onnx.graph.node if n.op_type == "Cast" and any(a.name == "to" and a.i == elem
                                                                           for a in n.attribute)]
    assert len(to_fp8) == 3  # one per activation quantizer: Mul -> Cast(float8) -> Cast(float) -> Div
    fp8_weights = [t for t in on_onnx.graph.initializer if t.data_type == elem and len(t.dims) >= 2]
    assert sorted(tuple(t.dims) for t in fp8_weights) == [(8, 3, 3, 3), (10, 32), (32, 288)]  # one byte each
    assert next(o.version for o in on_onnx.opset_import if o.domain in ("", "ai.onnx")) >= 19

    got_torch, got_onnx, got_ov = _run_torch(on_torch, test), _run_onnx(on_onnx, test), _run_ov(on_ov, test)
    for got in (got_torch, got_onnx, got_ov):
        assert 1e-4 < _relative(got, reference) < bound
    np.testing.assert_allclose(got_onnx, got_torch, rtol=1e-4, atol=1e-5)
    # OpenVINO's CPU FakeConvert rounds through float16 first: a few values land one FP8 step away
    assert _relative(got_ov, got_torch) < 0.25 * _relative(got_torch, reference)


def test_fp8_parameters_pick_the_format_per_tensor_kind(setup):
    model, _, _, items, test, reference = setup
    advanced = nncf.AdvancedQuantizationParameters(
        weights_quantization_params=nncf.FP8QuantizationParameters(nncf.FP8Type.E5M2))
    quantized = nncf.quantize(model, nncf.Dataset(items), mode="fp8_e4m3", advanced_parameters=advanced)
    from nncompress.backends.torch.fp8 import FP8Quantizer

    kinds = sorted((q.on_constant, q.destination) for q in quantized.modules() if isinstance(q, FP8Quantizer))
    assert kinds == [(False, "f8e4m3")] * 3 + [(True, "f8e5m2")] * 3
    assert _relative(_run_torch(quantized, test), reference) < 0.2


def test_fp8_torch_quantizer_values_by_hand():
    from nncompress.backends.torch.fp8 import FP8Quantizer
    from nncompress.graph.edits import FakeConvertParams

    quantizer = FP8Quantizer(FakeConvertParams(np.float32(2.0), np.float32(0.0), "f8e4m3"))
    x = torch.tensor([0.55, 1.65, 150.0, -300.0])
    # x * 2 = 1.1, 3.3, 300, -600 -> 1.125, 3.25, 288 (step 32 on [256, 448]), -448 -> halved
    np.testing.assert_array_equal(quantizer(x).numpy(), [0.5625, 1.625, 144.0, -224.0])


@pytest.mark.parametrize("kwargs,message", [
    ({"preset": nncf.QuantizationPreset.MIXED}, "needs preset=PERFORMANCE"),
    ({"target_device": nncf.TargetDevice.NPU}, "target_device ANY or CPU"),
    ({"advanced_parameters": nncf.AdvancedQuantizationParameters(
        activations_quantization_params=nncf.QuantizationParameters(num_bits=8))},
     "must be FP8QuantizationParameters"),
])
def test_fp8_mode_validation(setup, kwargs, message):
    model, _, _, items, _, _ = setup
    with pytest.raises(ValidationError, match=message):
        nncf.quantize(model, nncf.Dataset(items), mode="fp8_e4m3", **kwargs)


def test_fp8_parameters_need_an_fp8_mode(setup):
    model, _, _, items, _, _ = setup
    advanced = nncf.AdvancedQuantizationParameters(activations_quantization_params=nncf.FP8QuantizationParameters())
    with pytest.raises(ValidationError, match="needs mode=QuantizationMode.FP8_E4M3 or FP8_E5M2"):
        nncf.quantize(model, nncf.Dataset(items), advanced_parameters=advanced)
