"""Hooked copies of container models: the hook storage never sits where a container iterates."""

from __future__ import annotations

import copy
import pickle

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import nncompress as nncf  # noqa: E402
from nncompress.backends.torch.hooks import STORAGE_ATTR, HookStorage, storage_host, storage_of  # noqa: E402


class ListAndDict(nn.Module):
    """A model iterating an ``nn.ModuleList`` and reading an ``nn.ModuleDict`` and an inner ``nn.Sequential``."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])
        self.heads = nn.ModuleDict({"a": nn.Linear(8, 4), "b": nn.Linear(8, 4)})
        self.tail = nn.Sequential(nn.ReLU(), nn.Linear(4, 3))

    def forward(self, x):
        for block in self.blocks:
            x = torch.relu(block(x))
        return self.tail(sum(head(x) for head in self.heads.values()))


class Chain(nn.Sequential):
    """A Sequential subclass whose own forward iterates the children."""

    def forward(self, x):
        for module in self:
            x = module(x)
        return x


def _forms() -> dict:
    torch.manual_seed(0)
    return {
        "sequential": (nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), (2, 8)),
        "nested_sequential": (nn.Sequential(nn.Sequential(nn.Linear(8, 16), nn.ReLU()), nn.Linear(16, 4)), (2, 8)),
        "sequential_subclass": (Chain(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), (2, 8)),
        "list_dict_inside": (ListAndDict(), (2, 8)),
        "linear": (nn.Linear(8, 4), (2, 8)),
        "conv": (nn.Conv2d(3, 4, 3, padding=1), (2, 3, 6, 6)),
    }


FORMS = list(_forms())


def _setup(form: str, seed: int = 1):
    model, shape = _forms()[form]
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    data = [torch.randn(*shape, generator=gen) for _ in range(16)]
    test = torch.randn(*shape, generator=torch.Generator().manual_seed(99))
    return model, data, test


def _close(result: torch.Tensor, expected: torch.Tensor, tolerance: float) -> None:
    error = (result - expected).abs().max().item()
    assert error <= tolerance * expected.abs().max().item(), error


@pytest.mark.parametrize("form", FORMS)
def test_quantized_container_runs_close_to_float_and_keeps_its_children(form):
    model, data, x = _setup(form)
    children = list(model.named_children())
    with torch.no_grad():
        expected = model(x)
        quantized = nncf.quantize(model, nncf.Dataset(data), subset_size=16)
        result = quantized(x)
    assert type(quantized) is type(model) and list(model.named_children()) == children  # input untouched
    assert not torch.equal(result, expected)  # quantizers run
    _close(result, expected, 0.2)  # 16 calibration items, symmetric activations: about 13% here
    storage = storage_of(quantized)
    assert isinstance(storage, HookStorage) and len(storage) > 0
    if isinstance(model, (nn.Sequential, nn.ModuleList)):  # iterating the container meets no storage
        assert len(quantized) == len(model) and not any(isinstance(m, HookStorage) for m in quantized)
        assert storage_host(quantized) != ""
    else:
        assert STORAGE_ATTR in quantized._modules  # a non-container keeps it at the root


@pytest.mark.parametrize("form", FORMS)
def test_compressed_container_runs_close_to_float(form):
    model, data, x = _setup(form)
    with torch.no_grad():
        expected = model(x)
        int8 = nncf.compress_weights(model)
        int4 = nncf.compress_weights(model, mode="int4_sym", group_size=-1, all_layers=True, awq=True,
                                     dataset=nncf.Dataset(data))
        _close(int8(x), expected, 0.03)
        _close(int4(x), expected, 0.4)


@pytest.mark.parametrize("form", FORMS)
def test_state_dict_round_trip_to_and_parameters_see_the_quantizers(form):
    model, data, x = _setup(form)
    first = nncf.quantize(model, nncf.Dataset(data), subset_size=16)
    other = nncf.quantize(model, nncf.Dataset([d * 3 for d in data]), subset_size=16)  # other ranges
    with torch.no_grad():
        wanted = first(x)
        assert not torch.equal(other(x), wanted)
        state = first.state_dict()
        assert any(STORAGE_ATTR in key for key in state)
        other.load_state_dict(state)  # strict: the same keys in both copies
        torch.testing.assert_close(other(x), wanted, rtol=0, atol=0)
        torch.testing.assert_close(copy.deepcopy(first)(x), wanted, rtol=0, atol=0)
        torch.testing.assert_close(pickle.loads(pickle.dumps(first))(x), wanted, rtol=0, atol=0)
    hook_params = {id(p) for p in storage_of(first).parameters()}
    assert hook_params and hook_params <= {id(p) for p in first.parameters()}
    doubled = first.to(torch.float64)
    assert all(p.dtype is torch.float64 for p in storage_of(doubled).parameters())


def test_strip_and_export_of_a_quantized_sequential(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    model, data, x = _setup("sequential")
    quantized = nncf.quantize(model, nncf.Dataset(data), subset_size=16)
    stripped = nncf.strip(quantized)
    with torch.no_grad():
        torch.testing.assert_close(stripped(x), quantized(x), rtol=0, atol=1e-6)
    plain = nncf.strip(quantized, keep_activation_quantizers=False)  # weights baked in, no hook left
    assert storage_of(plain) is None and not any(STORAGE_ATTR in key for key in plain.state_dict())
    assert "forward" not in plain.__dict__ and len(plain) == len(model)
    with torch.no_grad():
        _close(plain(x), model(x), 0.05)
        assert not torch.equal(plain[0].weight, model[0].weight)  # int8 values
    path = nncf.export(quantized, tmp_path / "seq.onnx", example_input=x)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), quantized(x), rtol=0, atol=1e-5)


def test_an_empty_sequential_cannot_hold_quantizers():
    from nncompress.backends.torch.hooks import attach_storage
    from nncompress.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="without any layer"):
        attach_storage(nn.Sequential())


def test_hooks_at_one_point_follow_their_stage_not_their_insertion_order():
    from nncompress.graph.edits import Stage

    storage = HookStorage()
    key = ("post", "relu/0", 0)
    storage.insert(key, 0, "quantizer", nn.Identity(), Stage.ACTIVATION_QUANTIZER)
    storage.insert(key, 1, "sparsity", nn.Identity(), Stage.SPARSITY_MASK)  # asked for the end: goes first
    storage.insert(key, 5, "pruning", nn.Identity(), Stage.PRUNING_MASK)
    storage.insert(key, 0, "second_quantizer", nn.Identity(), Stage.ACTIVATION_QUANTIZER)  # first among quantizers
    assert storage.chain(*key) == ["pruning", "sparsity", "second_quantizer", "quantizer"]
    storage.remove("sparsity")
    storage.insert(key, 0, "sparsity", nn.Identity(), Stage.SPARSITY_MASK)
    assert storage.chain(*key) == ["pruning", "sparsity", "second_quantizer", "quantizer"]
    assert "sparsity" in storage.stages and len(storage.stages) == len(storage)


class _ReluLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(x))


def test_a_mask_inserted_after_a_quantizer_at_the_same_point_runs_before_it():
    """A quantized model gets a (mask-like) scaling hook at its activation quantizer's point afterwards."""
    from torch.nn import functional as F

    from nncompress.backends.torch.fake_quantize import Multiply
    from nncompress.graph.edits import Stage

    torch.manual_seed(0)
    model = _ReluLinear().eval()
    quantized = nncf.quantize(model, nncf.Dataset([torch.randn(8, 4) for _ in range(4)]), subset_size=4)
    storage = storage_of(quantized)
    key = ("post", "relu/0", 0)
    assert storage.chain(*key) == ["relu/0/fq_output_0"]
    scale = torch.tensor([0.37, 1.0, 0.61, 1.0])
    storage.insert(key, len(storage.chain(*key)), "mask", Multiply(scale.numpy()), Stage.SPARSITY_MASK)
    assert storage.chain(*key) == ["mask", "relu/0/fq_output_0"]

    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(3))
    act_fq = storage.module("relu/0/fq_output_0")
    weight = storage.module("fc/linear/0/fq_weights_1")(model.fc.weight)
    with torch.no_grad():
        result = quantized(x)
        mask_first = F.linear(act_fq(torch.relu(x) * scale), weight, quantized.fc.bias)
        quantizer_first = F.linear(act_fq(torch.relu(x)) * scale, weight, quantized.fc.bias)
    torch.testing.assert_close(result, mask_first, rtol=0, atol=1e-6)
    assert (result - quantizer_first).abs().max() > 1e-3  # the two orders really differ here


def test_a_discarded_hooked_model_is_freed_without_the_cyclic_collector():
    import gc
    import weakref

    model, data, x = _setup(FORMS[0])
    gc.disable()
    try:
        quantized = nncf.quantize(model, nncf.Dataset(data), subset_size=16)
        gone = weakref.ref(quantized)
        del quantized
        assert gone() is None  # freed by reference counting: the forward holds its model weakly
    finally:
        gc.enable()


def test_copies_run_their_own_forward_and_a_lone_forward_of_a_freed_model_is_named():
    model, data, x = _setup(FORMS[0])
    quantized = nncf.quantize(model, nncf.Dataset(data), subset_size=16)
    for twin in (copy.deepcopy(quantized), pickle.loads(pickle.dumps(quantized))):
        assert twin.forward.model is twin
        with torch.no_grad():
            next(storage_of(twin).parameters()).mul_(2.0)  # changing the copy leaves the original alone
            assert not torch.equal(twin(x), quantized(x))
    forward = quantized.forward
    del quantized
    with pytest.raises(nncf.UnsupportedModelError, match="no longer exists"):
        forward(x)
