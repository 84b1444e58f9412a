"""Option records: NNCF's helpers (api, changes_asdict, convert_to_dict_recursively) and the check of
AdvancedQuantizationParameters values that quantize does not implement."""

from __future__ import annotations

import logging

import pytest

import nncompress as nncf
from nncompress.errors import UnsupportedBackendError, ValidationError
from nncompress.parameters import api, changes_asdict, check_advanced_quantization, convert_to_dict_recursively
from nncompress.quantization.advanced_parameters import QuantizationMode, QuantizationParameters


def test_changes_asdict_lists_only_changed_fields():
    params = nncf.AdvancedCompressionParameters(lora_adapter_rank=8, awq_params=nncf.AdvancedAWQParameters(steps=5))
    assert changes_asdict(params) == {"lora_adapter_rank": 8, "awq_params": nncf.AdvancedAWQParameters(steps=5)}
    assert changes_asdict(nncf.AdvancedQuantizationParameters()) == {}


def test_convert_to_dict_recursively_nests_dataclasses():
    result = convert_to_dict_recursively(nncf.AdvancedSmoothQuantParameters(matmul=0.5))
    assert result == {"convolution": -1, "matmul": 0.5}
    nested = convert_to_dict_recursively(nncf.AdvancedQuantizationParameters())
    assert nested["smooth_quant_alphas"] == {"convolution": -1, "matmul": 0.95}
    assert nested["activations_range_estimator_params"]["min"]["quantile_outlier_prob"] == 1e-4
    with pytest.raises(ValidationError, match="expected a parameters dataclass; got int"):
        convert_to_dict_recursively(3)


def test_api_marks_and_returns_the_object():
    @api(canonical_alias="nncf.thing")
    def thing():
        return 1

    assert thing() == 1 and thing.__nncompress_api__ == "nncf.thing"


def test_supported_advanced_values_are_coerced():
    advanced = nncf.AdvancedQuantizationParameters(
        quantizer_propagation_rule="do_not_merge_branches",  # NNCF 2.x spelling (the member name)
        weights_quantization_params=QuantizationParameters(mode="asymmetric"),
    )
    checked = check_advanced_quantization(advanced)
    assert checked.quantizer_propagation_rule is nncf.QuantizerPropagationRule.DO_NOT_MERGE_BRANCHES
    assert checked.weights_quantization_params.mode is QuantizationMode.ASYMMETRIC
    assert check_advanced_quantization(nncf.AdvancedQuantizationParameters(quantizer_propagation_rule="3")) \
        .quantizer_propagation_rule is nncf.QuantizerPropagationRule.MERGE_ALL_IN_ONE


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"quantizer_propagation_rule": nncf.QuantizerPropagationRule.MERGE_IF_ALL_BRANCHES_SAME},
         "quantizer_propagation_rule=MERGE_IF_ALL_BRANCHES_SAME is not supported; use MERGE_ALL_IN_ONE or DO_NOT"),
        ({"activations_quantization_params": QuantizationParameters(mode=QuantizationMode.SYMMETRIC_LORA)},
         "activations_quantization_params.mode='symmetric_lora' .* is not supported"),
    ],
)
def test_unimplemented_advanced_values_are_rejected(kwargs, message):
    with pytest.raises(UnsupportedBackendError, match=message):
        check_advanced_quantization(nncf.AdvancedQuantizationParameters(**kwargs))


def test_fp8_parameters_are_accepted_with_their_type_coerced():
    advanced = nncf.AdvancedQuantizationParameters(
        weights_quantization_params=nncf.FP8QuantizationParameters("f8e5m2"))
    checked = check_advanced_quantization(advanced)
    assert checked.weights_quantization_params.destination_type is nncf.FP8Type.E5M2
    with pytest.raises(ValidationError, match="destination_type must be one of 'f8e4m3', 'f8e5m2'"):
        check_advanced_quantization(nncf.AdvancedQuantizationParameters(
            weights_quantization_params=nncf.FP8QuantizationParameters("bf16")))


def test_unknown_rule_is_a_validation_error():
    with pytest.raises(ValidationError, match="quantizer_propagation_rule must be one of '0', '1', '2', '3'"):
        check_advanced_quantization(nncf.AdvancedQuantizationParameters(quantizer_propagation_rule="merge"))


def test_backend_params_are_reported_as_unused_once(caplog, monkeypatch):
    from nncompress import log

    monkeypatch.setattr(log, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="nncompress"):
        for _ in range(3):
            check_advanced_quantization(nncf.AdvancedQuantizationParameters(backend_params={"external_data_dir": "/x"}))
    assert caplog.text.count("backend_params ['external_data_dir']: quantize does not use backend parameters yet") == 1
