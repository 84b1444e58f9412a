"""rules_for_device reads its device from a per-device table (all INT8 devices share the CPU rules)."""

from __future__ import annotations

import pytest

from nncompress.errors import ValidationError
from nncompress.hardware.rules import CPU_RULES, DEVICE_RULES, rules_for_device
from nncompress.parameters import TargetDevice


@pytest.mark.parametrize("device", list(TargetDevice))
def test_every_target_device_has_rules(device):
    assert rules_for_device(device) is DEVICE_RULES[device.value] is CPU_RULES
    assert rules_for_device(device.value) is CPU_RULES


def test_the_table_decides(monkeypatch):
    npu = {}
    monkeypatch.setitem(DEVICE_RULES, "NPU", npu)
    assert rules_for_device(TargetDevice.NPU) is npu and rules_for_device(TargetDevice.CPU) is CPU_RULES


def test_an_unknown_device_is_named():
    with pytest.raises(ValidationError, match="target_device='TPU' has no quantization rules; valid: ANY, CPU"):
        rules_for_device("TPU")
