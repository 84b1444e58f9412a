"""compress_weights: NNCF 3.x modes (INT3_SYM/INT2_SYM, FP8 backups) and option types on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import nncompress as nncf
from nncompress.errors import ValidationError

torch = pytest.importorskip("torch")


@pytest.fixture
def model():
    from .tiny_models import tiny_mlp_and_items

    return tiny_mlp_and_items(hidden=32)[0]


def _backend_model(backend: str):
    from tests.weights import models

    return {"onnx": models.onnx_model, "openvino": models.openvino_model, "torch": models.torch_model}[backend]()


def _outputs(backend: str, model) -> list[np.ndarray]:
    from tests.weights.models import inputs

    if backend == "torch":
        with torch.no_grad():
            return [t.numpy() for t in model(**{k: torch.from_numpy(v) for k, v in inputs().items()})]
    if backend == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, inputs())
    from nncompress.backends.openvino.runner import compile_model

    compiled = compile_model(model)
    result = compiled(inputs())
    return [result[compiled.output(i)] for i in range(len(compiled.outputs))]


@pytest.mark.parametrize("backend", ["torch", "onnx", "openvino"])
def test_int3_int2_modes_compress_every_backend(backend):
    """INT4_SYM, INT3_SYM (enum) and INT2_SYM (string) on the two Linear layers: each bit less, more error."""
    model = _backend_model(backend)
    reference = _outputs(backend, model)[0]
    errors = []
    for mode, value in ((nncf.CompressWeightsMode.INT4_SYM, "int4_sym"),
                        (nncf.CompressWeightsMode.INT3_SYM, "int3_sym"), ("int2_sym", "int2_sym")):
        compressed = nncf.compress_weights(model, mode=mode, group_size=16)
        configs = {row.config: row.layers for row in nncf.last_report().distribution}
        assert configs == {f"{value}, group size 16": 2, "int8_asym, per-channel": 3}
        got = _outputs(backend, compressed)[0]
        errors.append(np.linalg.norm(got - reference) / np.linalg.norm(reference))
    assert 0.01 < errors[0] < errors[1] < errors[2] < 0.6, errors


@pytest.mark.parametrize("backend", ["torch", "onnx", "openvino"])
@pytest.mark.parametrize("backup,group", [(nncf.BackupMode.FP8_E4M3, 16), ("mxfp8_e4m3", 32)])
def test_fp8_backup_modes_on_every_backend(backend, backup, group):
    """The embedding, the conv and the last layer take the FP8 / MXFP8 backup instead of INT8_ASYM."""
    model = _backend_model(backend)
    compressed = nncf.compress_weights(model, mode="int4_sym", group_size=16, backup_mode=backup)
    value = getattr(backup, "value", backup)
    rows = {row.config: row.layers for row in nncf.last_report().distribution}
    # the conv's 27 input elements take no group of 16 or 32: FP8 per channel, MXFP8 falls back to INT8_ASYM
    conv = "fp8_e4m3, per-channel" if value == "fp8_e4m3" else "int8_asym, per-channel"
    backup_rows = {f"{value}, group size {group}": 2, conv: 1}
    assert rows == {"int4_sym, group size 16": 2, **backup_rows}
    int8 = nncf.compress_weights(_backend_model(backend), mode="int4_sym", group_size=16)
    (logits, conv), (int8_logits, int8_conv), (want_logits, want_conv) = (
        _outputs(backend, m) for m in (compressed, int8, model))
    assert not np.allclose(logits, int8_logits, atol=1e-6)  # the backup layers really are stored otherwise

    def error(got, want):
        return np.linalg.norm(got - want) / np.linalg.norm(want)

    assert error(logits, want_logits) < 1.5 * error(int8_logits, want_logits)  # INT4 layers dominate
    assert error(conv, want_conv) < (0.06 if value == "fp8_e4m3" else 0.02)  # E4M3 per channel: 3 mantissa bits


def test_adaptive_codebook_takes_tensor_data_types(model):
    x = torch.randn(4, 8)
    for value_type in (nncf.TensorDataType.f8e4m3, nncf.TensorDataType.float16):
        params = nncf.AdvancedAdaptiveCodebookParameters(value_type=value_type)
        advanced = nncf.AdvancedCompressionParameters(adaptive_codebook_params=params)
        compressed = nncf.compress_weights(
            model, mode="adaptive_codebook", all_layers=True, advanced_parameters=advanced
        )
        with torch.no_grad():
            cosine = torch.nn.functional.cosine_similarity(compressed(x).flatten(), model(x).flatten(), dim=0)
        assert cosine > 0.95
    params = nncf.AdvancedAdaptiveCodebookParameters(value_type=nncf.TensorDataType.bfloat16)
    with pytest.raises(ValidationError, match="value_type must be 'f8e4m3' or 'float16'.*got <TensorDataType.bfloat16"):
        nncf.compress_weights(model, mode="adaptive_codebook",
                              advanced_parameters=nncf.AdvancedCompressionParameters(adaptive_codebook_params=params))


def test_validate_compress_args_takes_keywords():
    from nncompress.api.compress_weights import validate_compress_args
    from nncompress.backends.adapter import Capabilities

    onnx_like = Capabilities(name="onnx")
    options = validate_compress_args(capabilities=onnx_like, mode="int4_asym", group_size=32, ratio=0.5)
    assert (options.mode, options.group_size, options.ratio) == (nncf.CompressWeightsMode.INT4_ASYM, 32, 0.5)
    with pytest.raises(TypeError):
        validate_compress_args(onnx_like, "int4_asym")


def test_lora_adapter_rank_only_shapes_the_fq_lora_format(model, caplog):
    import logging

    x = torch.randn(4, 8)
    options = {"mode": "int4_sym", "group_size": 8, "all_layers": True}
    advanced = nncf.AdvancedCompressionParameters(lora_adapter_rank=16)
    with caplog.at_level(logging.WARNING, logger="nncompress"):
        plain = nncf.compress_weights(model, **options)
        ranked = nncf.compress_weights(model, **options, advanced_parameters=advanced)
        lora = nncf.compress_weights(model, **options, advanced_parameters=advanced,
                                     compression_format=nncf.CompressionFormat.FQ_LORA)
    assert not [r for r in caplog.records if "lora_adapter_rank" in r.getMessage()]
    assert lora.fc1.weight_compressed.lora_A.shape == (16, 8)
    with torch.no_grad():
        torch.testing.assert_close(ranked(x), plain(x), rtol=0, atol=0)
        torch.testing.assert_close(lora(x), plain(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode,bits", [("int3_sym", 3), ("int2_sym", 2)])
def test_int3_int2_pytorch_buffers_are_packed(mode, bits):
    from tests.weights.models import FFN, HIDDEN, OUT

    compressed = nncf.compress_weights(_backend_model("torch"), mode=mode, group_size=16, all_layers=True)
    for name, (rows, cols) in (("fc1", (FFN, HIDDEN)), ("fc2", (FFN, FFN)), ("head", (OUT, FFN))):
        storage = getattr(compressed, name).weight_compressed
        assert storage.data.dtype == torch.uint8 and storage.data.numel() == rows * cols * bits // 8
        assert storage.scale.dtype == torch.float16 and storage.scale.numel() == rows * cols // 16


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_int2_mixed_precision_with_fp8_backup(backend):
    compressed = nncf.compress_weights(_backend_model(backend), mode="int2_sym", group_size=16, ratio=0.5,
                                       all_layers=True, backup_mode="fp8_e4m3")
    report = nncf.last_report()
    int2 = next(r for r in report.distribution if r.config.startswith("int2_sym"))
    assert 0 < int2.ratio_params <= 0.5 * report.ratio_params
    assert {r.config for r in report.distribution} >= {"int2_sym, group size 16", "fp8_e4m3, group size 16"}
    reference = _outputs(backend, _backend_model(backend))[0]
    got = _outputs(backend, compressed)[0]
    assert np.linalg.norm(got - reference) / np.linalg.norm(reference) < 0.5
