"""One template per algorithm: the same call on the same tiny MLP in every backend makes the same decisions and
the same numbers. MinMax is checked against ranges computed by hand from the torch model; the others against
another backend (OpenVINO <-> ONNX, PyTorch -> ONNX), on the edits the algorithm hands to ``adapter.apply``.
Placement on many small networks is pinned by ``test_placement_golden.py``."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import torch

import nncompress as nncf
from nncompress.graph.edits import CompressWeight, InsertMultiply, QuantizeActivation, QuantizeWeight, SetConstant
from nncompress.numerics.qparams import symmetric_range
from nncompress.parameters import CompressWeightsMode as M
from tests.contract.backends import MLP, MLP_INPUT, dataset, items, record_edits, tiny

ITEMS = items(MLP_INPUT, count=16)
REFERENCE = {"openvino": "onnx", "onnx": "openvino", "torch": "onnx"}


@functools.cache
def _edits(backend: str, call: str, **kwargs) -> tuple:
    """(edits, mlp): what ``nncf.<call>`` on the MLP in ``backend`` hands to ``adapter.apply``."""
    with tempfile.TemporaryDirectory() as tmp:
        mlp = tiny(backend, Path(tmp))
    data = dataset(ITEMS, backend)
    with record_edits(backend) as recorder:
        if call == "quantize":
            nncf.quantize(mlp.model, data, subset_size=len(ITEMS), **kwargs)
        else:
            nncf.compress_weights(mlp.model, dataset=data, subset_size=len(ITEMS), **kwargs)
    return recorder.edits, mlp


def _consumers(mlp, edit: QuantizeActivation) -> tuple[str, ...]:
    refs = edit.consumers if edit.consumers is not None else mlp.graph.consumers(edit.tensor)
    return tuple(sorted(mlp.layer_of(ref.node) for ref in refs))


def _torch_layout(values: np.ndarray, weight: CompressWeight) -> np.ndarray:
    """Codes or scales of a compressed weight with the output channels first (ONNX stores MatMul weights [in, out])."""
    return np.moveaxis(values, -1, 0) if weight.axis == 0 and len(weight.shape) == 2 else values


def test_min_max_places_and_ranges_like_the_hand_computation(backend):
    edits, mlp = _edits(backend, "quantize", fast_bias_correction=False)
    acts = {_consumers(mlp, e): e.params for e in edits if isinstance(e, QuantizeActivation)}
    weights = {mlp.layer_of(e.node): e.params for e in edits if isinstance(e, QuantizeWeight)}
    assert sorted(acts) == [("fc1",), ("fc2",), ("fc3",)] and sorted(weights) == ["fc1", "fc2", "fc3"]
    module, inputs = MLP().eval(), {}
    for name in ("fc1", "fc2", "fc3"):
        getattr(module, name).register_forward_pre_hook(lambda m, a, n=name: inputs.setdefault(n, []).append(a[0]))
    with torch.no_grad():
        for item in ITEMS:
            module(torch.from_numpy(item))
    for name, seen in inputs.items():
        # per-tensor symmetric (performance preset): mean over items of each item's min and abs-max
        low = np.float32(np.mean([t.min().item() for t in seen]))
        absmax = max(np.float32(np.mean([t.abs().max().item() for t in seen])), abs(low))
        want_low, want_high, levels, signed = symmetric_range(low, absmax, 8, False, None)
        got = acts[(name,)]
        assert (got.levels, got.signed, got.axis) == (levels, signed, None)
        np.testing.assert_allclose([got.low, got.high], [want_low, want_high], rtol=1e-5)
        weight = getattr(module, name).weight.detach().numpy()
        w = weights[name]  # per output channel, symmetric, narrow range
        np.testing.assert_allclose(np.abs(w.high).reshape(-1), np.abs(weight).max(axis=1), rtol=1e-6)
        np.testing.assert_allclose(w.low, -w.high)
        assert (w.levels, w.narrow) == (255, True)


def _bias_values(backend: str) -> dict[str, np.ndarray]:
    edits, mlp = _edits(backend, "quantize", fast_bias_correction=True)
    return {mlp.layer_of(e.node): e.value.reshape(-1) for e in edits if isinstance(e, SetConstant)}


def test_fast_bias_correction_shifts_the_same_biases(backend):
    got, want = _bias_values(backend), _bias_values(REFERENCE[backend])
    assert sorted(got) == sorted(want) and got
    module = MLP()
    for name, value in got.items():
        original = getattr(module, name).bias.detach().numpy()
        assert np.abs(value - original).max() > 1e-5  # a real correction
        np.testing.assert_allclose(value, want[name], rtol=1e-4, atol=1e-6)


def _weight_edits(backend: str, **kwargs) -> dict[str, CompressWeight]:
    edits, mlp = _edits(backend, "compress_weights", **kwargs)
    return {mlp.layer_of(e.node): e.weight for e in edits if isinstance(e, CompressWeight)}


INT4 = {"mode": M.INT4_SYM, "ratio": 1.0, "group_size": 16}


def test_awq_scales_the_same_layers_by_the_same_factors(backend):
    def scales(name: str) -> dict[tuple, np.ndarray]:
        edits, mlp = _edits(name, "compress_weights", awq=True, **INT4)
        multiplies = [e for e in edits if isinstance(e, InsertMultiply)]
        return {tuple(sorted(mlp.layer_of(c.node) for c in e.consumers)): e.scale.reshape(-1) for e in multiplies}

    got, want = scales(backend), scales(REFERENCE[backend])
    assert sorted(got) == sorted(want) == [("fc2",)]  # ReLU -> fc2; fc3 (the last Linear) stays 8-bit
    for key, value in got.items():
        assert np.abs(value - 1).max() > 1e-3
        np.testing.assert_allclose(value, want[key], rtol=1e-5)


def test_scale_estimation_finds_the_same_scales(backend):
    got = _weight_edits(backend, scale_estimation=True, **INT4)
    want = _weight_edits(REFERENCE[backend], scale_estimation=True, **INT4)
    plain = _weight_edits(backend, **INT4)
    assert sorted(got) == sorted(want) == ["fc1", "fc2", "fc3"]
    assert not np.array_equal(got["fc2"].scale, plain["fc2"].scale)  # the estimation moved the scales
    for name, weight in got.items():
        np.testing.assert_allclose(_torch_layout(weight.scale, weight), _torch_layout(want[name].scale, want[name]),
                                   rtol=1e-5)


def test_gptq_produces_the_same_integer_weights(backend):
    got = _weight_edits(backend, gptq=True, **INT4)
    want = _weight_edits(REFERENCE[backend], gptq=True, **INT4)
    plain = _weight_edits(backend, **INT4)
    assert sorted(got) == sorted(want) == ["fc1", "fc2", "fc3"]
    assert not np.array_equal(got["fc2"].codes(), plain["fc2"].codes())  # GPTQ changed the rounding
    for name, weight in got.items():
        assert weight.mode == want[name].mode
        want_codes = _torch_layout(want[name].codes(), want[name])
        np.testing.assert_array_equal(_torch_layout(weight.codes(), weight), want_codes)


def test_mixed_precision_picks_the_same_layers(backend):
    kwargs = {"mode": M.INT4_ASYM, "ratio": 0.5, "group_size": 16, "all_layers": True}
    got = {name: w.mode for name, w in _weight_edits(backend, **kwargs).items()}
    want = {name: w.mode for name, w in _weight_edits(REFERENCE[backend], **kwargs).items()}
    assert got == want
    assert {M.INT4_ASYM, M.INT8_ASYM} <= set(got.values())
