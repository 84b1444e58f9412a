"""Full bias correction (``fast_bias_correction=False``) on every backend against the hand computation.

On the MLP, each layer's corrected bias is its bias plus the gap between the float model's mean output and
the weight-quantized model's mean output, measured with the upstream layers already corrected. ONNX and
OpenVINO compute it with the region runner (one sequential pass), PyTorch in whole-model waves.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nncompress as nncf
from nncompress.algorithms.quantization import bias_correction
from nncompress.graph.edits import QuantizeWeight, SetConstant
from nncompress.numerics.qparams import fake_quantize
from tests.contract.backends import MLP_INPUT, dataset, items, record_edits, tiny

ITEMS = items(MLP_INPUT, count=10)
SUBSET = 2  # BiasCorrection measures on max(int(0.2 * subset_size), 1) items: subset_size=10 -> 2


def _torch_layout(mlp, layer: str, value: np.ndarray) -> np.ndarray:
    return value if mlp.layers[layer].weight.out_axis == 0 else value.T


def _by_hand(mlp, quantized: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    params = {k: v.detach().double().numpy() for k, v in mlp.module.state_dict().items()}
    x = np.stack(ITEMS[:SUBSET]).astype(np.float64)
    h_float, h_quant, want = x, x, {}
    for i, layer in enumerate(("fc1", "fc2", "fc3")):
        w, b = params[f"{layer}.weight"], params[f"{layer}.bias"]
        out_float = h_float @ w.T + b
        out_quant = h_quant @ quantized[layer].astype(np.float64).T + b
        shift = out_float.reshape(-1, b.size).mean(0) - out_quant.reshape(-1, b.size).mean(0)
        want[layer] = b + shift
        out_quant = out_quant + shift
        h_float, h_quant = (np.maximum(out_float, 0), np.maximum(out_quant, 0)) if i < 2 else (out_float, out_quant)
    return want


def test_full_bias_correction_equals_the_hand_computation(backend, tmp_path, caplog):
    mlp = tiny(backend, tmp_path)
    caplog.set_level("INFO", logger="nncompress")
    with record_edits(backend) as recorder:
        nncf.quantize(mlp.model, dataset(ITEMS, backend), subset_size=len(ITEMS), fast_bias_correction=False)
    quantized = {}
    for edit in recorder.of(QuantizeWeight):
        value = mlp.adapter.get_constant(mlp.model, edit.node, edit.port)
        quantized[mlp.layer_of(edit.node)] = _torch_layout(
            mlp, mlp.layer_of(edit.node), fake_quantize(value, edit.params)
        )
    got = {mlp.layer_of(e.node): e.value.reshape(-1) for e in recorder.of(SetConstant)}
    want = _by_hand(mlp, quantized)
    assert sorted(got) == ["fc1", "fc2", "fc3"]
    for layer, value in got.items():
        assert np.abs(want[layer] - mlp.module.state_dict()[f"{layer}.bias"].numpy()).max() > 1e-6  # a real shift
        np.testing.assert_allclose(value, want[layer], rtol=1e-4, atol=2e-6)
    in_waves = "correcting in waves" in caplog.text
    assert in_waves == (backend == "torch")  # PyTorch runs module scopes only: the MLP's pieces are not


@pytest.mark.parametrize("model_name", ["residual", "concat"])
def test_region_pass_equals_the_wave_passes_on_branching_networks(model_name, tmp_path):
    """The sequential region pass and the whole-model waves make the same corrections (ONNX and OpenVINO)."""
    import onnx
    import openvino as ov

    from nncompress.backends import registry
    from tests.contract.models import build, export_onnx

    module, example = build(model_name)
    path = export_onnx(module, example, tmp_path / "m.onnx")
    data = [np.random.default_rng(i).normal(size=example.shape).astype(np.float32) for i in range(6)]
    for model in (onnx.load(path), ov.convert_model(path)):
        adapter = registry.get_adapter(model)
        results = []
        for use_regions in (True, False):
            with record_edits(type(adapter).__module__.split(".")[2]) as recorder:
                if not use_regions:
                    original = bias_correction._RegionPass.edits
                    bias_correction._RegionPass.edits = _raise_unsupported
                try:
                    nncf.quantize(model, nncf.Dataset(data), subset_size=6, fast_bias_correction=False)
                finally:
                    if not use_regions:
                        bias_correction._RegionPass.edits = original
            results.append({e.node: e.value for e in recorder.of(SetConstant)})
        regions, waves = results
        assert sorted(regions) == sorted(waves) and len(regions) >= 2
        for node, value in regions.items():
            np.testing.assert_allclose(value, waves[node], rtol=1e-4, atol=1e-5)


def _raise_unsupported(self, dataset):
    from nncompress.errors import UnsupportedModelError

    raise UnsupportedModelError("regions disabled by the test")


del torch
