"""Bad inputs to ``quantize`` on every backend: each gets a named error that names the bad value, or a
documented, correct result (issue 11's matrix)."""

from __future__ import annotations

import numpy as np
import pytest

import nncompress as nncf
from nncompress.errors import CalibrationError, OneShotDatasetError, UnsupportedModelError, ValidationError

from . import nonfinite as nf
from .conftest import make_case, torch


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"subset_size": 0}, ValidationError, "subset_size.*0"),
        ({"preset": "fastest"}, ValidationError, "'fastest'"),
        ({"target_device": "TPU"}, ValidationError, "'TPU'"),
        ({"fast_bias_correction": "yes"}, ValidationError, "'yes'"),
        ({"ignored_scope": nncf.IgnoredScope(names=["no_such_op"])}, ValidationError, "no_such_op"),
    ],
)
def test_bad_options_are_named(case, kwargs, error, named):
    with pytest.raises(error, match=named):
        nncf.quantize(case.model, nncf.Dataset(case.items(2)), **kwargs)


def test_data_must_be_a_dataset(case):
    with pytest.raises(ValidationError, match="must be an nncompress.Dataset; got list"):
        nncf.quantize(case.model, case.items(2))


def test_empty_dataset(case):
    with pytest.raises(CalibrationError, match="empty"):
        nncf.quantize(case.model, nncf.Dataset([]))


def test_one_shot_generator_serves_one_pass(case):
    items = case.items(8)
    from_list = nncf.quantize(case.model, nncf.Dataset(items))
    from_generator = nncf.quantize(case.model, nncf.Dataset(item for item in items))
    x = np.random.default_rng(3).normal(size=(1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(case.run(from_generator, x), case.run(from_list, x))


def test_one_shot_generator_where_two_passes_are_needed(case):
    pulled = []

    def generator():
        for item in case.items(8):
            pulled.append(item)
            yield item

    with pytest.raises(OneShotDatasetError, match="lambda"):
        nncf.quantize(case.model, nncf.Dataset(generator()), fast_bias_correction=False)
    assert len(pulled) == 1  # refused before any statistics pass


@pytest.mark.parametrize("backend", nf.BACKENDS)
def test_quantize_one_nan_pixel_gives_the_clean_result(backend, tmp_path):
    module, example = nf.build("conv_bn_relu_pool_linear")
    model = nf.as_backend(module, example, backend, tmp_path)
    items = nf.items((1, 3, 8, 8))
    clean = nncf.quantize(model, nf.dataset(items, backend), subset_size=nf.ITEMS)
    clean_report = nncf.last_report()
    dirty = nncf.quantize(model, nf.dataset(nf.one_nan(items), backend), subset_size=nf.ITEMS)
    x = np.random.default_rng(1).normal(size=(4, 3, 8, 8)).astype(np.float32)
    nf.check_close(nf.run(dirty, x), nf.run(clean, x), nf.run(model, x))
    nf.check_report(nncf.last_report(), clean_report)


@pytest.mark.parametrize("backend", nf.BACKENDS)
def test_quantize_input_never_finite_is_a_calibration_error_naming_it(backend, tmp_path):
    module, example = nf.build("conv_bn_relu_pool_linear")
    model = nf.as_backend(module, example, backend, tmp_path)
    items = [np.full((1, 3, 8, 8), np.nan, np.float32)] * 4
    with pytest.raises(nncf.CalibrationError, match=r"tensor 'x' has no finite value in any of the 4 .*item 0"):
        nncf.quantize(model, nf.dataset(items, backend), subset_size=4)


def test_wrong_model_type():
    with pytest.raises(UnsupportedModelError, match="dict"):
        nncf.quantize({"not": "a model"}, nncf.Dataset([np.zeros(3)]))


# PyTorch-only shapes of bad or unusual input.


def test_torch_meta_model_is_named(tmp_path):
    with torch.device("meta"):
        model = make_case("torch", tmp_path).model.to("meta")
    with pytest.raises(UnsupportedModelError, match="'meta' device"):
        nncf.quantize(model, nncf.Dataset([torch.zeros(1, 3, 8, 8)]))


def test_torch_meta_input_is_named(tmp_path):
    model = make_case("torch", tmp_path).model
    with pytest.raises(CalibrationError, match="'meta' device"):
        nncf.quantize(model, nncf.Dataset([torch.zeros(1, 3, 8, 8, device="meta")]))


def test_torch_numpy_items_say_how_to_convert(tmp_path):
    model = make_case("torch", tmp_path).model
    with pytest.raises(CalibrationError, match="torch.from_numpy"):
        nncf.quantize(model, nncf.Dataset([np.zeros((1, 3, 8, 8), np.float32)]))


@pytest.mark.parametrize("form", ["sequential", "single_module", "module_list_inside"])
def test_torch_container_models_run_after_quantization(form):
    torch.manual_seed(0)
    if form == "sequential":
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3)).eval()
    elif form == "single_module":
        model = torch.nn.Conv2d(3, 4, 3).eval()
    else:
        model = _WithModuleList().eval()
    items = [torch.randn(1, 3, 8, 8) for _ in range(8)]
    int8 = nncf.quantize(model, nncf.Dataset(items))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected, got = model(x), int8(x)
    assert torch.allclose(got, expected, atol=0.1 * expected.abs().max().item())
    assert any("_nncompress_hooks" in key and "fq_weights" in key for key in int8.state_dict())


class _WithModuleList(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 4, 3)])

    def forward(self, x):
        for layer in self.layers:
            x = torch.relu(layer(x))
        return x
