"""strip(model, do_copy, strip_format, example_input): NNCF's signature; NATIVE, DQ and IN_PLACE, in place on request.

The DQ and IN_PLACE formats themselves are pinned in tests/unit/backends/torch/test_strip_formats.py."""

from __future__ import annotations

import copy

import pytest

import nncompress as nncf
from nncompress.errors import ValidationError

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def quantized():
    from .tiny_models import tiny_mlp_and_items

    model, items = tiny_mlp_and_items()
    return nncf.quantize(model, nncf.Dataset(items)), items[0], model


def _has_hooks(model) -> bool:
    from nncompress.torch import is_wrapped_model

    return is_wrapped_model(model)


def test_default_strip_copies(quantized):
    model, x, _ = quantized
    stripped = nncf.strip(model, keep_activation_quantizers=False)
    assert stripped is not model and _has_hooks(model) and not _has_hooks(stripped)
    plain_params = dict(stripped.named_parameters())
    assert torch.equal(plain_params["fc1.weight"], stripped.fc1.weight)


def test_do_copy_false_strips_the_model_itself(quantized):
    model, x, float_model = quantized
    expected = nncf.strip(model, True, nncf.StripFormat.NATIVE, x, keep_activation_quantizers=False)
    target = copy.deepcopy(model)
    with torch.no_grad():
        result = nncf.strip(target, do_copy=False, keep_activation_quantizers=False)
        assert result is target and not _has_hooks(target)
        assert torch.equal(target.fc1.weight, expected.fc1.weight)  # fake-quantized weights baked in place
        assert torch.equal(target(x), expected(x))
        assert not torch.equal(target.fc1.weight, model.fc1.weight)  # the baked weights are on the INT8 grid
        assert torch.allclose(target(x), float_model(x), atol=0.02)  # INT8 weights, float activations


def test_bad_strip_arguments(quantized):
    message = "strip_format must be one of 'native', 'dequantize', 'in_place'; got 'fast'"
    with pytest.raises(ValidationError, match=message):
        nncf.strip(quantized[0], strip_format="fast")
    with pytest.raises(ValidationError, match="do_copy must be True or False; got 'no'"):
        nncf.strip(quantized[0], do_copy="no")


def test_torch_namespace_strip_is_the_same_function():
    from nncompress import torch as nncf_torch

    assert nncf_torch.strip is nncf.strip


@pytest.mark.parametrize("fmt", [nncf.StripFormat.DQ, "dequantize", nncf.StripFormat.IN_PLACE, "in_place"])
def test_every_strip_format_matches_native_outputs(quantized, fmt):
    model, x, _ = quantized
    with torch.no_grad():
        native = nncf.strip(model)(x)
        stripped = nncf.strip(model, strip_format=fmt, example_input=x)
        assert stripped is not model and _has_hooks(model)
        assert torch.allclose(stripped(x), native, rtol=0, atol=1e-6)
