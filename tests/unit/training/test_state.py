"""``load_state``: prefixes, strict resume, warnings otherwise."""

import logging

import pytest
import torch
from torch import nn

from nncompress.errors import ValidationError
from nncompress.training.state import load_state


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def test_prefixes_are_stripped_on_both_sides():
    src, dst = _net(), _net()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    sd = {f"module.nncf_module.{k}": v for k, v in src.state_dict().items()}
    assert load_state(dst, sd, is_resume=True) == 4
    for a, b in zip(src.parameters(), dst.parameters()):
        assert torch.equal(a, b)
    wrapped = nn.Module()
    wrapped.module = _net()
    assert load_state(wrapped, src.state_dict(), is_resume=True) == 4
    assert torch.equal(wrapped.module[0].weight, src[0].weight)


def test_resume_raises_on_missing_and_unexpected_keys():
    src, dst = _net(), _net()
    sd = dict(src.state_dict())
    sd.pop("2.bias")
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValidationError, match=r"2\.bias.*|extra\.weight"):
        load_state(dst, sd, is_resume=True)


def test_non_resume_warns_and_loads_matching(caplog):
    src, dst = _net(), _net()
    sd = dict(src.state_dict())
    sd["0.weight"] = torch.zeros(5, 5)  # wrong shape: skipped
    with caplog.at_level(logging.WARNING):
        loaded = load_state(dst, sd, is_resume=False)
    assert loaded == 3
    assert "0.weight" in caplog.text and "shape" in caplog.text
    assert torch.equal(dst[2].weight, src[2].weight)
    assert not torch.equal(dst[0].weight, torch.zeros(3, 4))
