"""Stored compressed weights: decompression subgraphs equal the numpy reference; ORT and OpenVINO agree."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

from nncompress.graph.edits import CompressWeight
from nncompress.numerics.encoding import encode
from nncompress.numerics.lowbit import mode_bits
from nncompress.parameters import CompressWeightsMode as M
from tests.weights.models import inputs, onnx_model, openvino_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")

MODES = [M.INT8_ASYM, M.INT8_SYM, M.INT4_ASYM, M.INT4_SYM, M.INT3_SYM, M.INT2_SYM, M.NF4, M.MXFP4, M.FP4, M.NVFP4,
         M.FP8_E4M3, M.MXFP8_E4M3, M.CB4_F8E4M3]
STORED_TYPE = {M.INT8_ASYM: "u8", M.INT8_SYM: "i8", M.INT4_ASYM: "u4", M.INT4_SYM: "i4", M.NF4: "nf4",
               M.INT3_SYM: "u3", M.INT2_SYM: "u2",
               M.MXFP4: "f4e2m1", M.FP4: "f4e2m1", M.NVFP4: "f4e2m1", M.FP8_E4M3: "f8e4m3",
               M.MXFP8_E4M3: "f8e4m3", M.CB4_F8E4M3: "u4"}


def _slow_except(params: list, *fast) -> list:
    """``params`` with all but ``fast`` marked slow (the full matrix runs in the whole suite)."""
    first = [p[0] if isinstance(p, tuple) else p for p in params]
    return [p if f in fast else pytest.param(*(p if isinstance(p, tuple) else (p,)), marks=pytest.mark.slow)
            for p, f in zip(params, first)]


def _group(mode, kind: str) -> int:
    if mode in (M.INT8_ASYM, M.INT8_SYM, M.CB4_F8E4M3) or kind == "conv":
        return -1
    return {M.MXFP4: 32, M.MXFP8_E4M3: 32}.get(mode, 16)


def _api_kwargs(mode) -> dict:
    """compress_weights arguments: every Linear and the embedding in ``mode`` (small groups)."""
    if mode in (M.INT8_ASYM, M.INT8_SYM):
        return {}
    return {"group_size": _group(mode, "linear"), "all_layers": True}


def _edits(adapter, model, mode):
    """One CompressWeight per weighted node (convs stay 8-bit) and the dequantized reference values."""
    edits, reference = [], {}
    for node in adapter.build_graph(model):
        if node.weight is None:
            continue
        weight = adapter.get_constant(model, node.name, node.weight.port)
        layer_mode = M.INT8_ASYM if node.kind.value == "conv" and mode not in (M.INT8_SYM,) else mode
        compressed = encode(
            weight, layer_mode, node.weight.in_axis, _group(mode, node.kind.value), node.weight.out_axis
        )
        edits.append(CompressWeight(node.name, node.weight.port, compressed, f"{node.name}/w"))
        reference[node.name] = compressed.decompress()
    return edits, reference


def _onnx_reference(model, reference):
    """The float model with every weight replaced by its dequantized value."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    inits = {t.name: t for t in copy.graph.initializer}
    for node in copy.graph.node:
        if node.name in reference:
            port = 0 if node.op_type == "Gather" else 1
            name = node.input[port]
            inits[name].CopyFrom(onnx.numpy_helper.from_array(reference[node.name], name))
    return copy


def _ort(model):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, inputs())


@pytest.mark.parametrize("mode", MODES)
def test_onnx_storage_equals_reference_dequantization(mode):
    from nncompress.backends.onnx.adapter import OnnxAdapter

    adapter = OnnxAdapter()
    model = onnx_model()
    before = model.SerializeToString()
    edits, reference = _edits(adapter, model, mode)
    compressed = adapter.apply(model, edits)
    assert model.SerializeToString() == before  # the input model is untouched
    onnx.checker.check_model(compressed)
    for got, want in zip(_ort(compressed), _ort(_onnx_reference(model, reference))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)
    assert compressed.ByteSize() < model.ByteSize() / (3.0 if mode_bits(mode) == 8 else 4.0)
    ops = {n.op_type for n in compressed.graph.node}
    if mode in (M.INT4_SYM, M.INT4_ASYM, M.INT2_SYM, M.INT8_SYM, M.INT8_ASYM):
        assert "MatMulNBits" in ops and "Gemm" not in ops  # Gemm bias moved into MatMulNBits: added once


def test_onnx_gemm_bias_applied_exactly_once():
    from nncompress.backends.onnx.adapter import OnnxAdapter

    adapter = OnnxAdapter()
    model = onnx_model()
    edits, reference = _edits(adapter, model, M.INT4_ASYM)
    gemm = [e for e in edits if e.node == "fc2"]
    compressed = adapter.apply(model, gemm)
    node = next(n for n in compressed.graph.node if n.name == "fc2")
    assert node.op_type == "MatMulNBits" and len(node.input) == 6 and node.input[5]
    want = _ort(_onnx_reference(model, {"fc2": reference["fc2"]}))
    np.testing.assert_allclose(_ort(compressed)[0], want[0], rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("mode", MODES)
def test_openvino_storage_equals_reference_dequantization(mode):
    from nncompress.backends.openvino.adapter import OpenVINOAdapter

    adapter = OpenVINOAdapter()
    model = openvino_model()
    edits, reference = _edits(adapter, model, mode)
    compressed = adapter.apply(model, edits)
    constants = [op for op in compressed.get_ops() if op.get_type_name() == "Constant"]
    types = {op.get_output_element_type(0).get_type_name() for op in constants}
    assert STORED_TYPE[mode] in types
    # reference: the float model with each weight constant replaced by the dequantized value
    from nncompress.graph.edits import SetConstant

    float_ref = adapter.apply(model, [SetConstant(e.node, e.port, reference[e.node]) for e in edits])
    item = inputs()
    for got, want in zip(adapter.infer(compressed, item), adapter.infer(float_ref, item)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)


def _ir_bytes(model) -> int:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.xml")
        ov.save_model(model, path, compress_to_fp16=False)
        return os.path.getsize(os.path.join(folder, "m.bin"))


@pytest.mark.parametrize("mode,factor", _slow_except([(M.INT8_ASYM, 3.5), (M.INT4_SYM, 6.0), (M.NF4, 6.0),
                                                      (M.INT3_SYM, 7.2), (M.INT2_SYM, 9.3)], M.INT4_SYM, M.INT2_SYM))
def test_openvino_saved_bin_shrinks(mode, factor):
    import nncompress as nncf

    model = openvino_model()
    kwargs = {} if mode is M.INT8_ASYM else {"group_size": 16, "all_layers": True}
    compressed = nncf.compress_weights(model, mode=mode, **kwargs)
    # convs (8-bit) and scales keep the ratio under the ideal 4x / 8x on this tiny model
    assert _ir_bytes(compressed) < _ir_bytes(model) / factor


@pytest.mark.parametrize("mode", _slow_except(MODES, M.INT4_ASYM, M.NF4))
def test_onnx_runtime_and_openvino_agree(mode):
    """The same compressed weights give the same outputs in ONNX Runtime and OpenVINO."""
    import nncompress as nncf
    from nncompress.backends.openvino.runner import compile_model

    kwargs = _api_kwargs(mode)
    on_onnx = nncf.compress_weights(onnx_model(), mode=mode, **kwargs)
    on_ov = nncf.compress_weights(openvino_model(), mode=mode, **kwargs)
    compiled = compile_model(on_ov)
    ov_out = compiled(inputs())
    ov_values = [ov_out[compiled.output(i)] for i in range(len(compiled.outputs))]
    for got, want in zip(_ort(on_onnx), ov_values):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode,stored", _slow_except([(M.INT4_SYM, "i4"), (M.INT4_ASYM, "u4"), (M.INT8_ASYM, "u8"),
                                         (M.FP4, "f4e2m1"), (M.NVFP4, "f4e2m1"), (M.FP8_E4M3, "f8e4m3"),
                                                      (M.INT2_SYM, "u2")], M.INT4_SYM, M.INT2_SYM))
def test_openvino_compiled_model_keeps_compressed_weights(mode, stored):
    """The CPU plugin folds the decompression into FullyConnected: low-bit constants reach the kernels."""
    import nncompress as nncf

    kwargs = {} if mode is M.INT8_ASYM else {"group_size": 16}
    compressed = nncf.compress_weights(openvino_model(), mode=mode, **kwargs)
    runtime = ov.Core().compile_model(compressed, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).get_runtime_model()
    kinds = {(op.get_rt_info()["layerType"].astype(str), op.get_output_element_type(0).get_type_name())
             for op in runtime.get_ops()}
    assert ("FullyConnected", "f32") in kinds and ("Const", stored) in kinds
    assert not any(kind == "Multiply" for kind, _ in kinds)  # no decompression left as separate ops


@pytest.mark.parametrize("mode", MODES)
def test_pytorch_agrees_with_onnx_runtime(mode):
    """The same weights compressed on PyTorch and on ONNX give the same outputs."""
    torch = pytest.importorskip("torch")
    import nncompress as nncf
    from tests.weights.models import torch_model

    kwargs = _api_kwargs(mode)
    on_onnx = nncf.compress_weights(onnx_model(), mode=mode, **kwargs)
    on_torch = nncf.compress_weights(torch_model(), mode=mode, **kwargs)
    with torch.no_grad():
        got = on_torch(**{k: torch.from_numpy(v) for k, v in inputs().items()})
    want = _ort(on_onnx)
    assert not np.allclose(want[0], _ort(onnx_model())[0], atol=1e-4)  # the weights really changed
    for out, ref in zip(got, want):
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-4)


def test_user_codebook_on_every_backend():
    """mode='codebook' with an 8-value codebook: the nearest values, the same outputs on all backends."""
    torch = pytest.importorskip("torch")
    import nncompress as nncf
    from nncompress.backends.openvino.adapter import OpenVINOAdapter
    from tests.weights.models import torch_model

    book = np.array([-1.0, -0.5, -0.25, -0.1, 0.0, 0.1, 0.3, 1.0], np.float32)
    advanced = nncf.AdvancedCompressionParameters(codebook=book)
    kwargs = {"mode": "codebook", "all_layers": True, "advanced_parameters": advanced}
    on_onnx = nncf.compress_weights(onnx_model(), **kwargs)
    assert nncf.last_report().layers["fc2"] == "codebook, per-channel"
    on_ov = nncf.compress_weights(openvino_model(), **kwargs)
    on_torch = nncf.compress_weights(torch_model(), **kwargs)
    weight = on_torch.fc2.weight_compressed()
    normalized = weight / weight.abs().amax(dim=1, keepdim=True)
    assert set(np.unique(np.round(normalized.numpy(), 5))) <= set(np.round(book, 5))  # only codebook values
    want = _ort(on_onnx)
    with torch.no_grad():
        got = on_torch(**{k: torch.from_numpy(v) for k, v in inputs().items()})
    for out, ref, ov_out in zip(got, want, OpenVINOAdapter().infer(on_ov, inputs())):
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ov_out, ref, rtol=1e-4, atol=1e-4)
    assert not np.allclose(want[0], _ort(onnx_model())[0], atol=1e-3)


@pytest.mark.parametrize("codebook,match", [(None, "needs its values"), ([0.5, 0.1], "strictly increasing"),
                                            (np.arange(17.0), "2 to 16 values"), ([[0.0, 1.0]], "1-D")])
def test_user_codebook_validation(codebook, match):
    import nncompress as nncf

    advanced = nncf.AdvancedCompressionParameters(codebook=codebook)
    with pytest.raises(nncf.errors.ValidationError, match=match):
        nncf.compress_weights(onnx_model(), mode="codebook", advanced_parameters=advanced)


def test_adaptive_codebook_fits_each_weight():
    import nncompress as nncf

    compressed = nncf.compress_weights(onnx_model(), mode="adaptive_codebook", all_layers=True)
    assert nncf.last_report().layers["fc1"] == "adaptive_codebook, per-channel"
    books = {init.name: numpy_values(init) for init in compressed.graph.initializer if init.name.endswith("codebook")}
    assert len(books) == 4 and all(2 <= b.size <= 16 for b in books.values())
    assert len({b.tobytes() for b in books.values()}) == 4  # one codebook per weight
    fixed = nncf.compress_weights(onnx_model(), mode="cb4", all_layers=True)
    reference = _ort(onnx_model())[0]
    errors = [np.linalg.norm(_ort(m)[0] - reference) for m in (compressed, fixed)]
    assert errors[0] < errors[1]  # fitted values beat the fixed CB4 grid on these Gaussian weights
    with pytest.raises(nncf.errors.UnsupportedBackendError, match="across_blocks"):
        params = nncf.AdvancedAdaptiveCodebookParameters(across_blocks=True)
        nncf.compress_weights(onnx_model(), mode="adaptive_codebook",
                              advanced_parameters=nncf.AdvancedCompressionParameters(adaptive_codebook_params=params))


def numpy_values(init):
    return onnx.numpy_helper.to_array(init)
