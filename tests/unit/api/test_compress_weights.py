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
