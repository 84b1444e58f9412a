"""compress_weights rejects NNCF enum members nncompress does not implement yet, naming them."""

from __future__ import annotations

import pytest

import nncompress as nncf
from nncompress.errors import UnsupportedBackendError, ValidationError

torch = pytest.importorskip("torch")


@pytest.fixture
def model():
    from .tiny_models import tiny_mlp_and_items

    return tiny_mlp_and_items(hidden=32)[0]


@pytest.mark.parametrize("mode", [nncf.CompressWeightsMode.INT3_SYM, "int2_sym"])
def test_unimplemented_modes_are_rejected(model, mode):
    value = getattr(mode, "value", mode)
    with pytest.raises(UnsupportedBackendError, match=f"mode='{value}' is not implemented yet"):
        nncf.compress_weights(model, mode=mode)


@pytest.mark.parametrize("backup", [nncf.BackupMode.FP8_E4M3, "mxfp8_e4m3"])
def test_unimplemented_backup_modes_are_rejected(model, backup):
    value = getattr(backup, "value", backup)
    with pytest.raises(UnsupportedBackendError, match=f"backup_mode='{value}' is not implemented yet; use 'int8_asym'"):
        nncf.compress_weights(model, mode="int4_sym", group_size=8, backup_mode=backup)


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
