"""Filter pruning through create_compressed_model, alone and stacked with INT8 QAT (either list order):
one apply, pruning mask before the quantizer on a shared weight, strip = channels really removed (the
quantizers' per-channel state sliced along), exports that load in ONNX Runtime and OpenVINO with the
PyTorch model's outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nncompress.backends.torch.hooks import storage_of
from nncompress.training.builder import create_compressed_model
from nncompress.training.controller import CompositeCompressionAlgorithmController
from tests.unit.training.pruning.helpers import config, example, model, with_quantization


def _ort(path, x: torch.Tensor) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def _openvino(path, x: torch.Tensor) -> np.ndarray:
    ov = pytest.importorskip("openvino")
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.asarray(compiled(x.numpy())[0])


def _onnx_weight_elements(path) -> int:
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(t).size for t in onnx.load(str(path)).graph.initializer)


def test_pruned_export_is_physically_smaller_and_matches_pytorch_in_onnxruntime_and_openvino(tmp_path):
    ctrl, compressed = create_compressed_model(model(), config({"schedule": "baseline"}, pruning_init=0.5))
    compressed.eval()
    x = example(4)
    expected = compressed(x).detach().numpy()
    pruned = ctrl.export_model(tmp_path / "pruned.onnx")
    full_ctrl, _ = create_compressed_model(model(), config({"schedule": "baseline"}))
    full = full_ctrl.export_model(tmp_path / "full.onnx")
    assert _onnx_weight_elements(pruned) < 0.45 * _onnx_weight_elements(full)
    assert pruned.stat().st_size < 0.5 * full.stat().st_size
    np.testing.assert_allclose(_ort(pruned, x), expected, rtol=1e-4, atol=1e-5)
    ir = ctrl.export_model(tmp_path / "pruned.xml", save_format="openvino")
    np.testing.assert_allclose(_openvino(ir, x), expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("quantization_first", [True, False])
def test_pruning_and_int8_stack_in_one_apply_and_export_shrunk_qdq(tmp_path, quantization_first):
    cfg = with_quantization(config({"schedule": "baseline"}, pruning_init=0.5), quantization_first)
    ctrl, compressed = create_compressed_model(model(), cfg)
    assert isinstance(ctrl, CompositeCompressionAlgorithmController)
    assert [c.name for c in ctrl.children] == (["quantization", "filter_pruning"] if quantization_first
                                               else ["filter_pruning", "quantization"])
    chain = storage_of(compressed).chain("pre", "expand/conv2d/0", 1)  # the shared weight
    assert chain[:2] == ["expand/conv2d/0/pruning_mask_1_0", "expand/conv2d/0/pruning_mask_1_1"]
    assert chain[2].endswith("fq_weights_1")
    quantizer = ctrl.quantizers()[chain[2]]
    assert tuple(quantizer.scale.shape) == (64, 1, 1, 1)
    with torch.no_grad():  # distinct per-channel scales, so slicing them wrongly would show
        quantizer.scale.copy_(torch.linspace(0.5, 2.0, 64).view(-1, 1, 1, 1))
    compressed.eval()
    x = example(4)
    expected = compressed(x).detach()
    stripped = ctrl.strip()
    assert stripped.expand.weight.shape[0] == 32
    torch.testing.assert_close(stripped(x), expected, rtol=1e-5, atol=1e-5)
    onnx_path = ctrl.export_model(tmp_path / "stacked.onnx")
    onnx = pytest.importorskip("onnx")
    ops = {node.op_type for node in onnx.load(str(onnx_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    scales = [t for t in onnx.load(str(onnx_path)).graph.initializer if t.dims and t.dims[0] == 64]
    assert not scales  # no tensor of the unpruned 64 channels is left
    np.testing.assert_allclose(_ort(onnx_path, x), expected.numpy(), rtol=1e-3, atol=1e-3)
    ir = ctrl.export_model(tmp_path / "stacked.xml", save_format="openvino")
    np.testing.assert_allclose(_openvino(ir, x), expected.numpy(), rtol=1e-3, atol=1e-3)
