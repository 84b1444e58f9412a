"""nncompress.torch: NNCF's nncf.torch helpers (disable_tracing is a documented no-op that warns once)."""

from __future__ import annotations

import logging

import pytest

import nncompress as nncf
import nncompress.torch as nncf_torch
from nncompress.errors import UnsupportedBackendError

torch = pytest.importorskip("torch")


def test_disable_tracing_warns_once_and_returns_the_method(caplog, monkeypatch):
    monkeypatch.setattr(nncf_torch, "_warned_tracing", False)

    class Block(torch.nn.Module):
        def helper(self, x):
            return x * 2

    with caplog.at_level(logging.WARNING, logger="nncompress"):
        assert nncf_torch.disable_tracing(Block.helper) is Block.helper
        assert nncf_torch.disable_tracing(Block.forward) is Block.forward
    warnings = [r for r in caplog.records if "disable_tracing" in r.getMessage()]
    assert len(warnings) == 1 and "Block.helper" in warnings[0].getMessage()


def test_is_wrapped_model():
    from tests.unit.api.tiny_models import tiny_mlp_and_items

    model, items = tiny_mlp_and_items()
    assert not nncf_torch.is_wrapped_model(model) and not nncf_torch.is_wrapped_model(object())
    assert nncf_torch.is_wrapped_model(nncf.quantize(model, nncf.Dataset(items)))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: nncf_torch.wrap_model(torch.nn.Linear(2, 2), torch.ones(1, 2)), "wrap_model is not implemented"),
    ],
)
def test_unavailable_helpers_raise_with_guidance(call, message):
    with pytest.raises(UnsupportedBackendError, match=message):
        call()


def test_extension_builders_are_no_ops():
    assert nncf_torch.force_build_cpu_extensions() is None
    assert nncf_torch.force_build_cuda_extensions() is None
