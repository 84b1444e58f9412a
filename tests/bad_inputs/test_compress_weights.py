"""Bad inputs to ``compress_weights`` on every backend: each gets a named error that names the bad value, or a
documented, correct result (issue 11's matrix). Option validation, which does not depend on the backend, is
in tests/api/test_compress_weights.py."""

from __future__ import annotations

import numpy as np
import pytest

import nncompress as nncf
from nncompress.errors import CalibrationError, UnsupportedModelError, ValidationError

from . import nonfinite as nf
from .conftest import torch

DATA_AWARE = dict(mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=32, awq=True, scale_estimation=True)


@pytest.fixture(params=nf.BACKENDS)
def mlp(request, tmp_path):
    """(backend, model) of the MLP that AWQ's Activation->Linear pattern applies to."""
    return request.param, nf.as_backend(nf.MLP().eval(), torch.zeros(1, 8, 64), request.param, tmp_path)


def test_data_must_be_a_dataset(mlp):
    backend, model = mlp
    with pytest.raises(ValidationError, match="dataset must be an nncompress.Dataset.*got list"):
        nncf.compress_weights(model, dataset=nf.items((1, 8, 64))[:2], **DATA_AWARE)


def test_empty_dataset(mlp):
    backend, model = mlp
    with pytest.raises(CalibrationError, match="empty"):
        nncf.compress_weights(model, dataset=nf.dataset([], backend), **DATA_AWARE)


def test_one_shot_generator_serves_its_one_pass(mlp):
    backend, model = mlp
    items = nf.items((1, 8, 64))[:16]
    from_list = nncf.compress_weights(model, dataset=nf.dataset(items, backend), subset_size=16, **DATA_AWARE)
    generator = (item for item in items)
    from_generator = nncf.compress_weights(model, dataset=nf.dataset(generator, backend), subset_size=16, **DATA_AWARE)
    x = np.random.default_rng(2).normal(size=(2, 8, 64)).astype(np.float32)
    np.testing.assert_array_equal(nf.run(from_generator, x), nf.run(from_list, x))


@pytest.mark.parametrize("backend", nf.BACKENDS)
@pytest.mark.parametrize(
    "kwargs", [{"awq": True, "scale_estimation": True, "ratio": 0.7}, {"gptq": True}], ids=["awq_se_ratio", "gptq"]
)
def test_compress_weights_one_nan_value_gives_the_clean_result(backend, kwargs, tmp_path):
    module, example = nf.MLP().eval(), torch.zeros(1, 8, 64)
    model = nf.as_backend(module, example, backend, tmp_path)
    items = nf.items((1, 8, 64))
    options = dict(mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=32, subset_size=nf.ITEMS, **kwargs)
    clean = nncf.compress_weights(model, dataset=nf.dataset(items, backend), **options)
    clean_report = nncf.last_report()
    dirty = nncf.compress_weights(model, dataset=nf.dataset(nf.one_nan(items), backend), **options)
    x = np.random.default_rng(1).normal(size=(2, 8, 64)).astype(np.float32)
    nf.check_close(nf.run(dirty, x), nf.run(clean, x), nf.run(model, x))
    nf.check_report(nncf.last_report(), clean_report)


@pytest.mark.parametrize("backend", nf.BACKENDS)
def test_compress_weights_input_never_finite_is_a_calibration_error_naming_it(backend, tmp_path):
    model = nf.as_backend(nf.MLP().eval(), torch.zeros(1, 8, 64), backend, tmp_path)
    items = [np.full((1, 8, 64), np.inf, np.float32)] * 4
    with pytest.raises(nncf.CalibrationError, match=r"tensor '.*' has no finite value in any of the 4 .*item 0"):
        nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=32, awq=True,
                              dataset=nf.dataset(items, backend), subset_size=4)


@pytest.mark.parametrize("backend", nf.BACKENDS)
def test_nan_weight_is_a_validation_error_naming_it(backend, tmp_path):
    module = nf.MLP().eval()
    with torch.no_grad():
        module.fc2.weight[3, 5] = float("inf")
    model = nf.as_backend(module, torch.zeros(1, 8, 64), backend, tmp_path)
    items = nf.items((1, 8, 64))[:4]
    found_when_encoding = [{}, dict(mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=32),
                           dict(mode=nncf.CompressWeightsMode.NF4, group_size=32, all_layers=True)]
    checked_first = [dict(mode=nncf.CompressWeightsMode.INT4_SYM, group_size=32, ratio=0.5, all_layers=True),
                     dict(DATA_AWARE, dataset=nf.dataset(items, backend), subset_size=4)]
    for options in found_when_encoding + checked_first:
        with pytest.raises(nncf.ValidationError, match=r"weight of '.*fc2.*' .* 1 non-finite values"):
            nncf.compress_weights(model, **options)
    with pytest.raises(nncf.ValidationError, match=r"weight of '.*fc2.*' .* 1 non-finite values"):
        nncf.quantize(model, nf.dataset(items, backend), subset_size=4)


def test_wrong_model_type():
    with pytest.raises(UnsupportedModelError, match="str"):
        nncf.compress_weights("model.onnx")


# PyTorch-only shapes of bad or unusual input.


def test_torch_meta_model_is_named():
    model = nf.MLP().to("meta")
    with pytest.raises(UnsupportedModelError, match="'fc1.weight' is on the 'meta' device"):
        nncf.compress_weights(model)


def test_torch_meta_input_is_named():
    with pytest.raises(CalibrationError, match="'meta' device"):
        nncf.compress_weights(nf.MLP().eval(), dataset=nncf.Dataset([torch.zeros(1, 8, 64, device="meta")]),
                              **DATA_AWARE)


@pytest.mark.parametrize("data_aware", [False, True], ids=["data_free", "awq_se"])
def test_torch_sequential_runs_after_compression(data_aware):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64)).eval()
    items = [torch.randn(1, 8, 64) for _ in range(8)]
    data_free = dict(mode="int4_asym", group_size=32, all_layers=True)
    options = dict(DATA_AWARE, dataset=nncf.Dataset(items)) if data_aware else data_free
    compressed = nncf.compress_weights(model, **options)
    x = torch.randn(2, 8, 64)
    with torch.no_grad():
        expected, got = model(x), compressed(x)
    error = (got - expected).abs().mean() / expected.abs().mean()
    assert 0 < error < 0.1
