"""The adapter contract: one protocol, capabilities instead of backend names, refusals checked in one place."""

from __future__ import annotations

import inspect
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import nncompress as nncf
from nncompress.backends.adapter import Adapter, Capabilities, check_export, check_strip
from nncompress.errors import UnsupportedBackendError, ValidationError

SRC = Path(nncf.__file__).parent
ADAPTERS = {
    "onnx": ("nncompress.backends.onnx.adapter", "OnnxAdapter"),
    "openvino": ("nncompress.backends.openvino.adapter", "OpenVINOAdapter"),
    "torch": ("nncompress.backends.torch.adapter", "TorchAdapter"),
}


def _adapter_class(name: str):
    module_name, class_name = ADAPTERS[name]
    return getattr(pytest.importorskip(module_name), class_name)


def _protocol_methods() -> set[str]:
    return {n for n, v in vars(Adapter).items() if inspect.isfunction(v) and not n.startswith("_")}


def test_the_protocol_declares_every_adapter_method_the_api_and_algorithms_call():
    called = set()
    for folder in ("api", "algorithms", "statistics"):
        for path in (SRC / folder).rglob("*.py"):
            called |= set(re.findall(r"\badapter\.([a-z_]+)\b", path.read_text()))
    assert {"apply", "build_graph", "get_constant", "collect", "check_inputs", "infer"} <= called
    assert called - {"capabilities"} <= _protocol_methods(), called - _protocol_methods()
    assert {"strip", "export", "prepare_for_validation"} <= _protocol_methods()


@pytest.mark.parametrize("name", ADAPTERS)
def test_each_backend_implements_the_protocol_less_what_its_capabilities_decline(name):
    cls = _adapter_class(name)
    missing = {m for m in _protocol_methods() if not callable(getattr(cls, m, None))}
    declined = ({"strip"} if not cls.capabilities.strippable else set()) | (
        {"fake_quantize_weights"} if not cls.capabilities.trainable else set())
    assert missing == declined
    assert set(cls.capabilities.export_formats) <= {"onnx", "openvino"} and cls.capabilities.export_formats


def test_no_backend_name_is_compared_in_api_or_algorithms():
    pattern = re.compile(r"backend ?(==|!=)|capabilities\.name ?(==|!=|in\b)|\b(Onnx|OpenVINO|Torch)Adapter\b")
    hits = [f"{p.name}:{i}" for folder in ("api", "algorithms") for p in (SRC / folder).rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_check_export_and_check_strip_read_the_capabilities():
    caps = Capabilities(name="toy", export_formats=("openvino",), export_needs_example_input=True)
    with pytest.raises(UnsupportedBackendError, match=r"format='onnx'.*'openvino'"):
        check_export(caps, "onnx", example_input=1)
    with pytest.raises(ValidationError, match="example_input"):
        check_export(caps, "openvino", example_input=None)
    check_export(caps, "openvino", example_input=1)
    assert check_strip(caps, keep_activation_quantizers=True) is False  # nothing to strip: returned as is
    with pytest.raises(UnsupportedBackendError, match="keep_activation_quantizers=False"):
        check_strip(caps, keep_activation_quantizers=False)
    assert check_strip(Capabilities(name="toy", strippable=True), keep_activation_quantizers=False) is True


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)).eval()
    path = tmp_path_factory.mktemp("adapter") / "mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, 8),), str(path), dynamo=False, opset_version=17, input_names=["x"])
    return model, onnx.load(str(path)), str(path)


def test_strip_and_export_refusals_come_from_the_capabilities(onnx_model, tmp_path):
    torch_model, onnx_model_, path = onnx_model
    ov = pytest.importorskip("openvino")
    assert nncf.strip(onnx_model_) is onnx_model_
    with pytest.raises(UnsupportedBackendError, match="onnx model holds its activation quantizers"):
        nncf.strip(onnx_model_, keep_activation_quantizers=False)
    with pytest.raises(UnsupportedBackendError, match=r"openvino model cannot be exported with format='onnx'"):
        nncf.export(ov.Core().read_model(path), tmp_path / "m.onnx", format="onnx")
    with pytest.raises(ValidationError, match="torch model traces it: pass example_input"):
        nncf.export(torch_model, tmp_path / "t.onnx")
    written = nncf.export(onnx_model_, tmp_path / "copy.onnx")
    assert written.exists() and written.stat().st_size > 0


def test_a_dataset_with_an_8bit_mode_is_refused_unless_the_graph_is_built_from_an_example_input(onnx_model):
    torch = pytest.importorskip("torch")
    torch_model, onnx_model_, _ = onnx_model
    items = [np.random.default_rng(i).normal(size=(2, 8)).astype(np.float32) for i in range(2)]
    with pytest.raises(ValidationError, match="dataset cannot be used"):
        nncf.compress_weights(onnx_model_, mode="int8_asym", dataset=nncf.Dataset([{"x": x} for x in items]))
    compressed = nncf.compress_weights(torch_model, mode="int8_asym", dataset=nncf.Dataset(
        [torch.from_numpy(x) for x in items]))
    x = torch.from_numpy(items[0])
    with torch.no_grad():
        error = (compressed(x) - torch_model(x)).abs().max().item()
    assert 0 < error < 0.02  # int8 weights: changed, but close to the float model
