"""validate_quantize_args takes its options by keyword; NNCF options that change nothing warn once."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import nncompress as nncf
from nncompress.api.quantize import validate_quantize_args
from nncompress.parameters import AdvancedBiasCorrectionParameters, AdvancedQuantizationParameters

from ..option_warnings import fresh_warnings, warnings_naming  # noqa: F401

DATASET = nncf.Dataset([np.zeros((1, 4), np.float32)])


def test_options_are_keyword_only():
    options = validate_quantize_args(DATASET, subset_size=7, fast_bias_correction=False, target_device="CPU")
    assert options.subset_size == 7 and options.fast_bias_correction is False
    assert options.target_device is nncf.TargetDevice.CPU
    with pytest.raises(TypeError):
        validate_quantize_args(DATASET, None, None, "CPU")


@pytest.mark.parametrize("option, advanced", [
    ("inplace_statistics", AdvancedQuantizationParameters(inplace_statistics=False)),
    ("disable_channel_alignment", AdvancedQuantizationParameters(disable_channel_alignment=False)),
    ("apply_for_all_nodes", AdvancedQuantizationParameters(
        bias_correction_params=AdvancedBiasCorrectionParameters(apply_for_all_nodes=True))),
])
def test_an_option_without_effect_warns_once(fresh_warnings, caplog, option, advanced):  # noqa: F811
    with caplog.at_level(logging.WARNING, logger="nncompress"):
        validate_quantize_args(DATASET, advanced=AdvancedQuantizationParameters())
        assert warnings_naming(caplog, option) == []  # the default says nothing
        validate_quantize_args(DATASET, advanced=advanced)
        validate_quantize_args(DATASET, advanced=advanced)
    (message,) = warnings_naming(caplog, option)
    assert "has no effect" in message
