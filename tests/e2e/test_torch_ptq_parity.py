"""quantize on torch.nn.Module: the user's class survives, and exports agree with the fake-quantized model."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import nncompress as nncf

pytestmark = pytest.mark.slow  # end to end on the trained digits CNN

torch = pytest.importorskip("torch")
pytest.importorskip("nncompress.backends.torch.adapter")
ort = pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def digits_int8(digits_torch, digits_data):
    calibration = nncf.Dataset(list(digits_data.x_train[:300]), lambda image: torch.from_numpy(image[None]))
    before = copy.deepcopy(digits_torch.state_dict())
    int8 = nncf.quantize(digits_torch, calibration)
    for key, value in digits_torch.state_dict().items():
        assert torch.equal(value, before[key]), key
    return int8


def _logits_torch(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_torch_int8_is_the_users_class_and_keeps_accuracy(digits_torch, digits_int8, digits_data):
    assert isinstance(digits_int8, type(digits_torch))
    x, y = digits_data.x_test, digits_data.y_test
    fp32 = (_logits_torch(digits_torch, x).argmax(1) == y).mean()
    int8 = (_logits_torch(digits_int8, x).argmax(1) == y).mean()
    assert int8 >= fp32 - 0.002


def test_torch_int8_state_dict_round_trips(digits_int8, digits_torch, digits_data, tmp_path):
    path = tmp_path / "int8.pt"
    torch.save(digits_int8.state_dict(), path)
    calibration = nncf.Dataset(list(digits_data.x_train[:8]), lambda image: torch.from_numpy(image[None]))
    other = nncf.quantize(digits_torch, calibration)
    other.load_state_dict(torch.load(path, weights_only=True))
    x = digits_data.x_test[:32]
    np.testing.assert_array_equal(_logits_torch(other, x), _logits_torch(digits_int8, x))


def test_onnx_and_openvino_exports_agree_with_fake_quantized_torch(digits_int8, digits_data, tmp_path):
    x = digits_data.x_test
    reference = _logits_torch(digits_int8, x)
    onnx_path = nncf.export(digits_int8, tmp_path / "int8.onnx", example_input=torch.from_numpy(x[:1]))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    onnx_logits = np.concatenate([session.run(None, {name: x[i : i + 64]})[0] for i in range(0, len(x), 64)])
    ov_path = nncf.export(digits_int8, tmp_path / "int8.xml", format="openvino", example_input=torch.from_numpy(x[:1]))
    compiled = ov.Core().compile_model(str(ov_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    ov_logits = np.concatenate([compiled(x[i : i + 64])[0] for i in range(0, len(x), 64)])
    for logits in (onnx_logits, ov_logits):
        assert np.abs(logits - reference).max() < 0.5  # integer kernels vs float simulation
        assert (logits.argmax(1) == reference.argmax(1)).mean() >= 0.995


def test_strip_bakes_weights_and_keeps_outputs(digits_int8, digits_data):
    stripped = nncf.strip(digits_int8)
    x = digits_data.x_test[:64]
    np.testing.assert_allclose(_logits_torch(stripped, x), _logits_torch(digits_int8, x), atol=1e-4)
    weights_only = nncf.strip(digits_int8, keep_activation_quantizers=False)
    assert not np.allclose(_logits_torch(weights_only, x), _logits_torch(digits_int8, x), atol=1e-6)


def test_torch_graph_needs_and_uses_an_example_input(digits_torch, digits_data):
    graph = nncf.build_graph(digits_torch, example_input=torch.from_numpy(digits_data.x_test[:1]))
    assert any(node.weight is not None for node in graph)
