"""Model inputs and run helpers: tensors without data get named errors; eval mode shared by threads;
values taken out of a run are copies that later in-place ops cannot change."""

from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import nncompress as nncf  # noqa: E402
from nncompress.backends.torch.inputs import copy_model, eval_mode, to_numpy  # noqa: E402
from nncompress.errors import CalibrationError, UnsupportedModelError  # noqa: E402


def _mlp(device: str = "cpu") -> nn.Module:
    with torch.device(device):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32)).eval()


def _data(device: str = "cpu") -> nncf.Dataset:
    return nncf.Dataset([torch.randn(2, 32).to(device) for _ in range(4)])


CALLS = {
    "quantize": lambda model, data: nncf.quantize(model, data, subset_size=4),
    "compress_weights_data_free": lambda model, data: nncf.compress_weights(model, mode="int4_sym", group_size=16),
    "compress_weights_data_aware": lambda model, data: nncf.compress_weights(
        model, mode="int4_sym", group_size=16, ratio=0.5, dataset=data, awq=True, scale_estimation=True
    ),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_a_model_on_the_meta_device_gets_a_named_error(call):
    with pytest.raises(UnsupportedModelError, match=r"parameter '0\.weight' is on the 'meta' device"):
        CALLS[call](_mlp("meta"), _data())


@pytest.mark.parametrize("call", ["quantize", "compress_weights_data_aware"])
def test_an_input_on_the_meta_device_gets_a_named_error(call):
    with pytest.raises(CalibrationError, match=r"model input tensor \(2, 32\) is on the 'meta' device"):
        CALLS[call](_mlp(), _data("meta"))


def test_a_meta_input_among_real_ones_is_named_when_it_is_read():
    items = [torch.randn(2, 32), torch.randn(2, 32), torch.empty(2, 32, device="meta")]
    with pytest.raises(CalibrationError, match="'meta' device"):
        nncf.quantize(_mlp(), nncf.Dataset(items), subset_size=3)


def test_meta_model_and_meta_input_name_the_model():
    with pytest.raises(UnsupportedModelError, match="'meta' device"):
        nncf.quantize(_mlp("meta"), _data("meta"), subset_size=4)


def test_to_numpy_names_a_device_it_cannot_read():
    with pytest.raises(CalibrationError, match="'meta' device"):
        to_numpy(torch.empty(3, device="meta"))
    assert to_numpy(torch.ones(2, dtype=torch.float16)).dtype.name == "float32"


def test_overlapping_eval_modes_restore_the_users_flags_last():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).train()
    model[0].eval()  # a mixed state, restored exactly
    both_in, first_out = threading.Barrier(2, timeout=10), threading.Event()
    seen = []

    def first():
        with eval_mode(model):
            both_in.wait()
        first_out.set()

    def second():
        with eval_mode(model):
            both_in.wait()
            first_out.wait(10)
            seen.append([m.training for m in model.modules()])  # the other run has left by now

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [[False, False, False]]
    assert [m.training for m in model.modules()] == [True, False, True]


def test_copy_model_keeps_the_users_flags_while_another_run_is_in_eval_mode():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).train()
    with eval_mode(model):
        copied = copy_model(model)
    assert [m.training for m in copied.modules()] == [True, True, True]
    assert [m.training for m in model.modules()] == [True, True, True]


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.bool])
def test_to_numpy_copies_even_when_no_conversion_is_needed(dtype):
    tensor = torch.tensor([[-1, 2], [3, 0]]).to(dtype)
    value = to_numpy(tensor)
    expected = value.copy()
    tensor.zero_()
    np.testing.assert_array_equal(value, expected)
    assert not np.shares_memory(value, tensor.numpy())


def test_to_numpy_of_a_view_and_of_half_precision():
    base = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    view = to_numpy(base.t())
    base.relu_().mul_(0)
    np.testing.assert_array_equal(view, np.arange(6, dtype=np.float32).reshape(2, 3).T)
    half = to_numpy(torch.tensor([1.5, -2.0], dtype=torch.float16))
    assert half.dtype == np.float32 and half.tolist() == [1.5, -2.0]


def test_exported_example_is_zeros_shaped_like_the_exported_inputs_and_eval_mode_accepts_graph_modules():
    from nncompress.backends.torch.inputs import exported_example

    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.drop = nn.Dropout(0.5)

        def forward(self, ids, scale):
            return self.drop(self.embed(ids)) * scale

    model = TwoInputs()
    graph_module = torch.export.export(model.eval(), (torch.ones(2, 3, dtype=torch.long), torch.ones(4))).module()
    example = exported_example(graph_module)
    assert [(tuple(t.shape), t.dtype) for t in example] == [((2, 3), torch.long), ((4,), torch.float32)]
    assert all(not t.any() for t in example)
    assert exported_example(model) is None
    flags = [m.training for m in graph_module.modules()]
    with eval_mode(graph_module):  # GraphModule.eval() raises NotImplementedError
        assert not any(m.training for m in graph_module.modules())
    assert [m.training for m in graph_module.modules()] == flags
