"""The PyTorch adapter: statistics, edits as hooks on a copy, state_dict, generate, end-to-end PTQ."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import nncompress  # noqa: E402
from nncompress.backends.torch import TorchAdapter  # noqa: E402
from nncompress.graph.edits import (  # noqa: E402
    FakeQuantParams,
    InsertMultiply,
    QuantizeActivation,
    QuantizeWeight,
    SetConstant,
)
from nncompress.graph.ir import InputRef, TensorRef  # noqa: E402
from nncompress.numerics.qparams import asymmetric_range, fake_quantize, symmetric_range  # noqa: E402

from .tiny_transformers import tiny_gpt2  # noqa: E402


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 4)
        self.skip = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x))) + self.skip(x)


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return MLP().eval()


X = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))


def _weight_params(w: np.ndarray) -> FakeQuantParams:
    absmax = np.abs(w).max(axis=1)
    low, high, levels, _ = symmetric_range(-absmax, absmax, 8, narrow=True, signed=True)
    return FakeQuantParams(low, high, levels, axis=0, signed=True, narrow=True)


def _act_params(values: np.ndarray) -> FakeQuantParams:
    low, high, levels = asymmetric_range(values.min(), values.max())
    return FakeQuantParams(low, high, levels, signed=False)


def _numpy_mlp(m: MLP, x, fq_x=None, fq_w1=None, fq_relu=None) -> np.ndarray:
    def p(t):
        return t.detach().numpy()

    x = p(x)
    xq = fake_quantize(x, fq_x) if fq_x else x
    w1 = fake_quantize(p(m.fc1.weight), fq_w1) if fq_w1 else p(m.fc1.weight)
    h = np.maximum(xq @ w1.T + p(m.fc1.bias), 0)
    h = fake_quantize(h, fq_relu) if fq_relu else h
    return h @ p(m.fc2.weight).T + p(m.fc2.bias) + x @ p(m.skip.weight).T + p(m.skip.bias)


def test_collect_gives_the_intermediate_tensors(mlp):
    adapter = TorchAdapter(example_input=X)
    adapter.check_inputs(mlp, X)
    refs = [TensorRef("x"), TensorRef("fc1/linear/0"), TensorRef("relu/0"), TensorRef("add/0")]
    seen: dict[str, torch.Tensor] = {}
    handle = mlp.fc1.register_forward_hook(lambda m, a, out: seen.setdefault("fc1", out.detach().clone()))
    with torch.no_grad():
        expected = mlp(X)
    handle.remove()
    values = []
    adapter.collect(mlp, refs, [X, X * 2], values.append)
    assert len(values) == 2 and set(values[0]) == set(refs)
    assert np.array_equal(values[0][TensorRef("x")], X.numpy())
    assert np.array_equal(values[0][TensorRef("fc1/linear/0")], seen["fc1"].numpy())
    assert np.array_equal(values[0][TensorRef("relu/0")], np.maximum(seen["fc1"].numpy(), 0))
    assert np.array_equal(values[0][TensorRef("add/0")], expected.numpy())
    assert values[1][TensorRef("x")].max() == pytest.approx(float(X.max() * 2))


def test_apply_quantizers_matches_the_numpy_reference_and_keeps_the_input(mlp):
    adapter = TorchAdapter(example_input=X)
    adapter.check_inputs(mlp, X)
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    fq_x = _act_params(X.numpy())
    fq_w1 = _weight_params(mlp.fc1.weight.detach().numpy())
    fq_relu = FakeQuantParams(np.float32(0.0), np.float32(1.5), 256, signed=False)
    edits = [
        QuantizeActivation(TensorRef("x"), (InputRef("fc1/linear/0", 0),), fq_x, "fc1/linear/0/fq_input_0"),
        QuantizeWeight("fc1/linear/0", 1, fq_w1, "fc1/linear/0/fq_weights_1"),
        QuantizeActivation(TensorRef("relu/0"), None, fq_relu, "relu/0/fq_output_0"),
    ]
    quantized = adapter.apply(mlp, edits)
    assert isinstance(quantized, MLP) and type(quantized) is MLP
    with torch.no_grad():
        out = quantized(X).numpy()
    np.testing.assert_allclose(out, _numpy_mlp(mlp, X, fq_x, fq_w1, fq_relu), rtol=1e-5, atol=1e-5)
    assert np.array_equal(adapter.infer(quantized, X)[0], out)
    # the skip branch reads x unquantized; the float weight is kept, fake-quantized on the fly
    assert torch.equal(quantized.fc1.weight, mlp.fc1.weight)
    assert np.array_equal(adapter.get_constant(quantized, "fc1/linear/0", 1),
                          fake_quantize(mlp.fc1.weight.detach().numpy(), fq_w1))
    assert all(torch.equal(before[k], v) for k, v in mlp.state_dict().items())
    assert "forward" not in mlp.__dict__ and not hasattr(mlp, "_nncompress_hooks")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in mlp.modules())
    graph = adapter.build_graph(quantized)  # quantizers on activations are nodes of the hooked graph
    assert graph.node("relu/0/fq_output_0").inputs == [TensorRef("relu/0")]
    assert graph.node("fc2/linear/0").inputs[0] == TensorRef("relu/0/fq_output_0")
    assert "fc1/linear/0/fq_weights_1" not in graph.nodes


def test_state_dict_round_trip_deepcopy_and_pickle(mlp):
    adapter = TorchAdapter(example_input=X)
    adapter.check_inputs(mlp, X)
    wide = FakeQuantParams(np.float32(-4.0), np.float32(4.0), 256)
    edits = [QuantizeActivation(TensorRef("relu/0"), None, wide, "relu/0/fq_output_0"),
             QuantizeWeight("fc2/linear/0", 1, _weight_params(mlp.fc2.weight.detach().numpy()), "fc2/fq_weights_1")]
    first = adapter.apply(mlp, edits)
    with torch.no_grad():
        first._nncompress_hooks.module("relu/0/fq_output_0").scale.mul_(0.5)  # as after QAT
        first.fc2.bias.add_(0.1)
        expected = first(X)
    second = adapter.apply(mlp, edits)
    second.load_state_dict(first.state_dict())
    with torch.no_grad():
        assert torch.equal(second(X), expected)
        assert torch.equal(copy.deepcopy(first)(X), expected)
        buffer = io.BytesIO()
        torch.save(first, buffer)
        buffer.seek(0)
        assert torch.equal(torch.load(buffer, weights_only=False)(X), expected)
    assert any(k.startswith("_nncompress_hooks.") for k in first.state_dict())


def test_set_constant_multiply_and_edits_on_a_hooked_model(mlp):
    adapter = TorchAdapter(example_input=X)
    adapter.check_inputs(mlp, X)
    scale = np.linspace(0.5, 2.0, 16).astype(np.float32)
    weight = mlp.fc1.weight.detach().numpy() * scale
    smoothed = adapter.apply(mlp, [
        SetConstant("fc1/linear/0", 1, weight),
        SetConstant("fc1/linear/0", 2, np.zeros(32, np.float32)),
        InsertMultiply(TensorRef("x"), (InputRef("fc1/linear/0", 0),), 1.0 / scale, "x/smooth"),
    ])
    with torch.no_grad():
        reference = torch.relu(X @ mlp.fc1.weight.T) @ mlp.fc2.weight.T + mlp.fc2.bias + mlp.skip(X)
        np.testing.assert_allclose(smoothed(X).numpy(), reference.numpy(), rtol=1e-5, atol=1e-5)
    assert np.array_equal(adapter.get_constant(smoothed, "fc1/linear/0", 1), weight)
    graph = adapter.build_graph(smoothed)
    assert graph.node("x/smooth").inputs == [TensorRef("x"), None]
    assert graph.node("fc1/linear/0").inputs[0] == TensorRef("x/smooth")
    assert graph.node("skip/linear/0").inputs[0] == TensorRef("x")
    params = FakeQuantParams(np.float32(-3.0), np.float32(3.0), 256)
    quantized = adapter.apply(smoothed, [
        QuantizeActivation(TensorRef("x/smooth"), None, params, "x/smooth/fq_output_0")])
    assert quantized._nncompress_hooks.chains[("pre", "fc1/linear/0", 0)] == ["x/smooth", "x/smooth/fq_output_0"]
    with torch.no_grad():
        h = fake_quantize((X / torch.from_numpy(scale)).numpy(), params) @ weight.T
        expected = np.maximum(h, 0) @ mlp.fc2.weight.numpy().T + mlp.fc2.bias.numpy() + mlp.skip(X).numpy()
        np.testing.assert_allclose(quantized(X).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert "x/smooth/fq_output_0" not in smoothed._nncompress_hooks.keys  # the input of apply is untouched


def test_gpt2_quantize_then_generate_and_tied_weights_stay_separate():
    model = tiny_gpt2()
    ids = torch.randint(0, 100, (1, 6), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": torch.randint(0, 100, (1, 8))} for _ in range(3)]
    quantized = nncompress.quantize(model, nncompress.Dataset(data), model_type=nncompress.ModelType.TRANSFORMER)
    assert isinstance(quantized, type(model))
    out = quantized.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 10) and torch.equal(out[:, :6], ids)
    assert model.lm_head.weight is model.transformer.wte.weight  # the user's model is untouched
    assert quantized.lm_head.weight is quantized.transformer.wte.weight
    adapter = TorchAdapter(example_input=data[0])
    adapter.check_inputs(model, data[0])
    table = model.transformer.wte.weight.detach().numpy()
    changed = adapter.apply(model, [SetConstant("lm_head/linear/0", 1, table * 2)])
    assert torch.equal(changed.transformer.wte.weight, model.transformer.wte.weight)  # shared: a Replace hook
    assert np.array_equal(adapter.get_constant(changed, "lm_head/linear/0", 1), table * 2)
    assert np.array_equal(adapter.get_constant(changed, "transformer/wte/embedding/0", 1), table)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = torch.relu(self.dw(y)) + y
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def test_quantize_end_to_end_on_a_cnn():
    torch.manual_seed(0)
    model = SmallCNN().eval()
    data = [torch.randn(4, 3, 12, 12) for _ in range(4)]
    quantized = nncompress.quantize(model, nncompress.Dataset(data))
    report = nncompress.last_report()
    assert report.backend == "torch" and len(report.quantized) >= 5
    with torch.no_grad():
        ref, out = model(data[0]), quantized(data[0])
    assert torch.nn.functional.cosine_similarity(ref.flatten(), out.flatten(), dim=0) > 0.99
    assert not torch.equal(ref, out)


class ComputedWeight(nn.Module):
    """A weight computed in forward (not a parameter): a folded constant of the LINEAR node."""

    def __init__(self):
        super().__init__()
        self.raw = nn.Parameter(torch.randn(6, 16))

    def forward(self, x):
        return nn.functional.linear(x, self.raw * 2)


def test_computed_weights_are_constants_that_can_be_quantized_and_replaced():
    torch.manual_seed(0)
    model = ComputedWeight().eval()
    adapter = TorchAdapter(example_input=X)
    graph = adapter.build_graph(model)
    assert [n.name for n in graph] == ["x", "linear/0", "output/0"] and graph.node("linear/0").weight.port == 1
    weight = adapter.get_constant(model, "linear/0", 1)
    assert np.array_equal(weight, model.raw.detach().numpy() * 2)
    params = _weight_params(weight)
    quantized = adapter.apply(model, [QuantizeWeight("linear/0", 1, params, "linear/0/fq_weights_1")])
    with torch.no_grad():
        np.testing.assert_allclose(quantized(X).numpy(), X.numpy() @ fake_quantize(weight, params).T, atol=1e-5)
    replaced = adapter.apply(model, [SetConstant("linear/0", 1, np.ones((6, 16), np.float32))])
    with torch.no_grad():
        assert torch.allclose(replaced(X), X.sum(dim=1, keepdim=True).expand(8, 6))
    assert torch.equal(replaced.raw, model.raw)


def test_quantized_model_trains_with_straight_through_gradients(mlp):
    adapter = TorchAdapter(example_input=X)
    adapter.check_inputs(mlp, X)
    quantized = adapter.apply(mlp, [
        QuantizeActivation(TensorRef("relu/0"), None, FakeQuantParams(np.float32(0), np.float32(2), 256, signed=False),
                           "relu/0/fq_output_0"),
        QuantizeWeight("fc1/linear/0", 1, _weight_params(mlp.fc1.weight.detach().numpy()), "fc1/fq_weights_1"),
    ])
    quantized.train()
    for parameter in quantized._nncompress_hooks.parameters():
        parameter.requires_grad_(True)
    quantized(X).pow(2).mean().backward()
    assert quantized.fc1.weight.grad is not None and quantized.fc1.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in quantized._nncompress_hooks.parameters())
    assert mlp.fc1.weight.grad is None


class OptionalMask(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x, mask=None):
        if mask is not None:
            x = x * mask[..., None].float()  # a getitem before the one quantized on the example path
        return self.fc(x)[:, 0]


def test_hooks_never_run_on_another_op_that_took_their_name():
    torch.manual_seed(0)
    model = OptionalMask().eval()
    x = torch.randn(2, 3, 16)
    adapter = TorchAdapter(example_input=(x,))
    adapter.check_inputs(model, (x,))
    coarse = FakeQuantParams(np.float32(-1.0), np.float32(1.0), 4)
    quantized = adapter.apply(model, [QuantizeActivation(TensorRef("getitem/0"), None, coarse, "getitem/0/fq")])
    mask = torch.ones(2, 3, dtype=torch.long)
    with torch.no_grad():
        assert not torch.equal(quantized(x), model(x))
        with pytest.warns(RuntimeWarning, match="another path"):
            assert torch.equal(quantized(x, mask), model(x, mask))


def test_quantizers_on_model_outputs(mlp):
    adapter = TorchAdapter(example_input=X)
    adapter.check_inputs(mlp, X)
    grid = FakeQuantParams(np.float32(-2.0), np.float32(2.0), 256)
    quantized = adapter.apply(mlp, [QuantizeActivation(TensorRef("add/0"), (InputRef("output/0", 0),), grid, "out/fq")])
    assert quantized._nncompress_hooks.chains == {("pre", "output/0", 0): ["out/fq"]}
    with torch.no_grad():
        assert np.array_equal(quantized(X).numpy(), fake_quantize(mlp(X).numpy(), grid))
    assert adapter.build_graph(quantized).node("output/0").inputs == [TensorRef("out/fq")]
