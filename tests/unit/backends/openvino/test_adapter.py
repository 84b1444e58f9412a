"""Tests of the OpenVINO backend adapter on small torch models converted to OpenVINO."""

from __future__ import annotations

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
torch = pytest.importorskip("torch")
ops = pytest.importorskip("openvino.opset13")

from torch import nn  # noqa: E402

from nncompress.backends.openvino import OpenVINOAdapter, model_size_bytes  # noqa: E402
from nncompress.errors import CalibrationError  # noqa: E402
from nncompress.graph.edits import (  # noqa: E402
    FakeQuantParams,
    InsertMultiply,
    QuantizeActivation,
    QuantizeWeight,
    SetConstant,
)
from nncompress.graph.ir import InputRef, TensorRef  # noqa: E402
from nncompress.graph.ops import OpKind  # noqa: E402
from nncompress.numerics.qparams import fake_quantize  # noqa: E402


class CNN(nn.Module):
    def __init__(self, bn: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8) if bn else nn.Identity()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.bn(self.conv(x)))), 1))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(8, 6, 1)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        y = self.c2(y) + x
        return self.c3(torch.cat([y, x], dim=1))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.grouped = nn.Conv2d(6, 4, 1, groups=2)

    def forward(self, x):
        return self.grouped(torch.relu(self.dw(x)))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)

    def forward(self, x, ids):
        e = self.emb(ids)
        return x @ e.transpose(1, 2)


def convert(module: nn.Module, *shapes) -> tuple:
    torch.manual_seed(0)
    module = module.eval()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        for b in module.buffers():
            if b.dtype.is_floating_point:
                b.copy_(torch.rand_like(b) + 0.5)
    inputs = tuple(torch.randn(*s) for s in shapes)
    return module, ov.convert_model(module, example_input=inputs, input=[list(s) for s in shapes]), inputs


@pytest.fixture(scope="module")
def adapter():
    return OpenVINOAdapter()


@pytest.fixture(scope="module")
def cnn():
    return convert(CNN(bn=False), (1, 3, 8, 8))


@pytest.fixture(scope="module")
def mlp():
    return convert(MLP(), (3, 16))


@pytest.fixture(scope="module")
def residual():
    return convert(Residual(), (1, 4, 6, 6))


def kinds(graph) -> list[OpKind]:
    return [n.kind for n in graph]


def by_kind(graph, kind: OpKind) -> list:
    return [n for n in graph if n.kind is kind]


def xml_of(model, tmp_path, name="m.xml") -> bytes:
    ov.save_model(model, tmp_path / name, compress_to_fp16=False)
    return (tmp_path / name).read_bytes()


# ---------------------------------------------------------------- build_graph / get_constant


def test_cnn_graph_kinds_weights_and_bias(adapter, cnn):
    _, model, _ = cnn
    graph = adapter.build_graph(model)
    assert kinds(graph) == [
        OpKind.INPUT, OpKind.CONV, OpKind.ADD, OpKind.RELU, OpKind.MAX_POOL,
        OpKind.RESHAPE, OpKind.LINEAR, OpKind.ADD, OpKind.OUTPUT,
    ]
    assert all(n.op_type != "Constant" for n in graph)
    conv = by_kind(graph, OpKind.CONV)[0]
    assert conv.inputs[1] is None and conv.const_ports == {1: (8, 3, 3, 3)}
    assert (conv.weight.port, conv.weight.shape, conv.weight.out_axis, conv.weight.in_axis) == (
        1, (8, 3, 3, 3), 0, 1)
    assert conv.bias.shape == (1, 8, 1, 1)
    assert graph.node(conv.bias.node).kind is OpKind.ADD
    assert conv.bias.output == TensorRef(conv.bias.node, 0)
    linear = by_kind(graph, OpKind.LINEAR)[0]
    assert linear.weight.shape == (10, 128) and (linear.weight.out_axis, linear.weight.in_axis) == (0, 1)
    assert linear.bias is not None and linear.bias.shape[-1] == 10
    out = graph.outputs()[0]
    assert out.name.startswith("output/") and out.inputs == [linear.bias.output]
    assert graph.node("x").output_shapes == [(1, 3, 8, 8)] and graph.node("x").output_dtypes == ["float"]


def test_get_constant_equals_torch_parameters(adapter, cnn):
    module, model, _ = cnn
    graph = adapter.build_graph(model)
    conv = by_kind(graph, OpKind.CONV)[0]
    linear = by_kind(graph, OpKind.LINEAR)[0]
    np.testing.assert_allclose(adapter.get_constant(model, conv.name, 1), module.conv.weight.detach().numpy())
    np.testing.assert_allclose(adapter.get_constant(model, linear.name, 1), module.fc.weight.detach().numpy())
    bias = adapter.get_constant(model, conv.bias.node, conv.bias.port)
    np.testing.assert_allclose(bias.reshape(-1), module.conv.bias.detach().numpy(), rtol=1e-6)
    assert adapter.get_constant(model, conv.name, 1).dtype == np.float32


def test_batch_norm_folded_into_conv_weights(adapter):
    module, model, _ = convert(CNN(bn=True), (1, 3, 8, 8))
    graph = adapter.build_graph(model)
    assert not by_kind(graph, OpKind.BATCH_NORM)
    conv = by_kind(graph, OpKind.CONV)[0]
    bn = module.bn
    factor = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    folded = module.conv.weight.detach().numpy() * factor[:, None, None, None]
    np.testing.assert_allclose(adapter.get_constant(model, conv.name, 1), folded, rtol=1e-5, atol=1e-6)


def test_depthwise_and_grouped_conv(adapter):
    module, model, _ = convert(Depthwise(), (1, 6, 5, 5))
    graph = adapter.build_graph(model)
    dw = by_kind(graph, OpKind.DEPTHWISE_CONV)
    grouped = [n for n in by_kind(graph, OpKind.CONV) if n.op_type == "GroupConvolution"]
    assert len(dw) == 1 and len(grouped) == 1
    assert dw[0].weight.shape == (6, 1, 1, 3, 3) and dw[0].weight.groups == 6
    assert (dw[0].weight.out_axis, dw[0].weight.in_axis) == (0, 2)
    assert grouped[0].weight.groups == 2 and grouped[0].weight.shape == (2, 2, 3, 1, 1)
    assert dw[0].bias is not None and dw[0].bias.shape == (1, 6, 1, 1)
    value = adapter.get_constant(model, dw[0].name, 1)
    np.testing.assert_allclose(value.reshape(6, 1, 3, 3), module.dw.weight.detach().numpy())
    value = adapter.get_constant(model, grouped[0].name, 1)
    np.testing.assert_allclose(value.reshape(4, 3, 1, 1), module.grouped.weight.detach().numpy())


def test_embedding_and_activation_matmul(adapter):
    module = TwoInputs().eval()
    model = ov.convert_model(module, example_input=(torch.randn(2, 3, 4), torch.randint(0, 10, (2, 5))))
    graph = adapter.build_graph(model)
    emb = by_kind(graph, OpKind.EMBEDDING)[0]
    assert emb.inputs[0] is None and emb.weight.port == 0 and emb.weight.shape == (10, 4)
    assert (emb.weight.out_axis, emb.weight.in_axis) == (0, 1)
    np.testing.assert_allclose(adapter.get_constant(model, emb.name, 0), module.emb.weight.detach().numpy())
    assert len(by_kind(graph, OpKind.MATMUL)) == 1 and not by_kind(graph, OpKind.LINEAR)
    assert {n.name for n in graph.inputs()} == {"x", "ids"}
    assert graph.node("ids").output_dtypes == ["int"]


def _hand_built_model():
    """Parameter -> MatMul(int8 decompressed weight) -> Add(f16 bias) -> Reshape(ShapeOf-derived shape)."""
    x = ops.parameter([2, 6], np.float32, name="x")
    q = np.arange(-12, 12, dtype=np.int8).reshape(4, 6)
    weight = ops.multiply(
        ops.subtract(ops.convert(ops.constant(q, ov.Type.i8), ov.Type.f32),
                     ops.convert(ops.constant(np.int8(1), ov.Type.i8), ov.Type.f32)),
        ops.constant(np.full((4, 1), 0.5, np.float32)),
    )
    mm = ops.matmul(x, weight, False, True)
    mm.set_friendly_name("dup")
    bias = ops.convert(ops.constant(np.arange(4, dtype=np.float16)), ov.Type.f32)
    add = ops.add(mm, bias)
    add.set_friendly_name("dup")  # duplicate friendly name on purpose
    shape = ops.concat([ops.gather(ops.shape_of(x), ops.constant([0]), ops.constant(0)),
                        ops.constant(np.array([2, 2], np.int64))], 0)
    reshape = ops.reshape(add, shape, False)
    reshape.set_friendly_name("reshape")
    result = ops.result(reshape)
    model = ov.Model([result], [x], "hand")
    model.outputs[0].get_tensor().set_names({"y"})
    return model, (q.astype(np.float32) - 1) * 0.5, np.arange(4, dtype=np.float32)


def test_folding_of_constant_and_shape_subgraphs(adapter):
    model, weight, bias = _hand_built_model()
    graph = adapter.build_graph(model)
    assert [(n.name, n.kind) for n in graph] == [
        ("x", OpKind.INPUT), ("dup", OpKind.LINEAR), ("dup#1", OpKind.ADD),
        ("reshape", OpKind.RESHAPE), ("output/y", OpKind.OUTPUT),
    ]
    assert graph.node("reshape").inputs == [TensorRef("dup#1", 0), None]
    assert graph.node("reshape").const_ports == {1: (3,)}
    assert graph.node("dup").weight.shape == (4, 6) and graph.node("dup").bias.node == "dup#1"
    np.testing.assert_array_equal(adapter.get_constant(model, "dup", 1), weight)
    np.testing.assert_array_equal(adapter.get_constant(model, "dup#1", 1), bias)
    np.testing.assert_array_equal(adapter.get_constant(model, "reshape", 1), [2, 2, 2])
    x = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)
    edited = adapter.apply(model, [SetConstant("dup#1", 1, np.ones(4, np.float32))])
    expected = (x @ weight.T + 1).reshape(2, 2, 2)
    np.testing.assert_allclose(adapter.infer(edited, x)[0], expected, rtol=1e-5)


# ---------------------------------------------------------------- collect / infer / inputs


def test_collect_matches_model_outputs(adapter, residual):
    module, model, (x,) = residual
    graph = adapter.build_graph(model)
    assert OpKind.CONCAT in kinds(graph) and len(by_kind(graph, OpKind.ADD)) >= 3
    tensors = [TensorRef(n.name, 0) for n in graph if n.kind is not OpKind.OUTPUT]
    out_ref = TensorRef(graph.outputs()[0].name, 0)
    items = [x.numpy(), {"x": x.numpy() * 2}, (x,)]
    seen = []
    adapter.collect(model, tensors + [out_ref], items, seen.append)
    assert len(seen) == 3 and set(seen[0]) == set(tensors) | {out_ref}
    for stats, item in zip(seen, [x, x * 2, x]):
        expected = module(item).detach().numpy()
        np.testing.assert_allclose(stats[out_ref], expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(stats[out_ref], adapter.infer(model, item)[0])
        np.testing.assert_array_equal(stats[TensorRef("x", 0)], item.numpy())
    relu = by_kind(graph, OpKind.RELU)[0]
    assert seen[0][TensorRef(relu.name, 0)].min() >= 0


def test_collect_compiles_only_what_the_tensors_need(adapter, residual, monkeypatch):
    from nncompress.backends.openvino import runner

    module, model, (x,) = residual
    graph = adapter.build_graph(model)
    relu = by_kind(graph, OpKind.RELU)[0]
    compiled = []
    real = runner.compile_model
    monkeypatch.setattr(runner, "compile_model", lambda m: compiled.append(m) or real(m))
    seen = []
    adapter.collect(model, [TensorRef(relu.name, 0)], [x.numpy()], seen.append)
    names = {op.get_friendly_name() for op in compiled[0].get_ops()}
    downstream, stack = set(), [TensorRef(relu.name, 0)]
    while stack:  # every node computed from the Relu's output
        for consumer in graph.consumers(stack.pop()):
            if consumer.node not in downstream and graph.node(consumer.node).kind is not OpKind.OUTPUT:
                downstream.add(consumer.node)
                stack.append(TensorRef(consumer.node, 0))
    assert relu.name in names and len(downstream) >= 3 and not names & downstream  # the tail is not compiled
    assert len(compiled[0].outputs) == 1 and len(model.outputs) == 1  # the user's model keeps its outputs
    everything = []
    adapter.collect(model, [TensorRef(relu.name, 0), TensorRef(graph.outputs()[0].name, 0)], [x.numpy()],
                    everything.append)
    np.testing.assert_array_equal(seen[0][TensorRef(relu.name, 0)], everything[0][TensorRef(relu.name, 0)])


def test_bad_inputs_raise_calibration_error(adapter, mlp):
    _, model, (x,) = mlp
    adapter.check_inputs(model, x)
    adapter.check_inputs(model, {"x": x.numpy()})
    for bad in (np.zeros((3, 15), np.float32), {"y": x.numpy()}, (x, x), "text", np.zeros((3,), np.float32)):
        with pytest.raises(CalibrationError, match="x"):
            adapter.check_inputs(model, bad)
    with pytest.raises(CalibrationError, match=r"\[3,16\]"):
        adapter.collect(model, [], [np.zeros((2, 2), np.float32)], lambda _: None)


# ---------------------------------------------------------------- apply


def _sym(high, axis=None, signed=True, narrow=False) -> FakeQuantParams:
    high = np.asarray(high, np.float32)
    low = -high if narrow else -high * 128 / 127
    if not signed:
        low = np.zeros_like(high)
    return FakeQuantParams(low, high, 255 if narrow else 256, axis, signed, narrow)


def test_apply_quantizers_match_numpy_reference(adapter, mlp, tmp_path):
    module, model, (x,) = mlp
    before = xml_of(model, tmp_path, "before.xml")
    graph = adapter.build_graph(model)
    fc1, fc2 = by_kind(graph, OpKind.LINEAR)
    w1, b1 = module.fc1.weight.detach().numpy(), module.fc1.bias.detach().numpy()
    w2, b2 = module.fc2.weight.detach().numpy(), module.fc2.bias.detach().numpy()
    act1 = _sym(np.abs(x.numpy()).max())
    act2 = _sym(3.0, signed=False)
    wq1 = _sym(np.abs(w1).max(axis=1), axis=0, narrow=True)
    wq2 = FakeQuantParams(w2.min(axis=1), w2.max(axis=1), 256, 0, signed=False)  # asymmetric: zero points
    edits = [
        QuantizeActivation(fc1.inputs[0], None, act1, "a1"),
        QuantizeActivation(fc2.inputs[0], (InputRef(fc2.name, 0),), act2, "a2"),
        QuantizeWeight(fc1.name, 1, wq1, "w1"),
        QuantizeWeight(fc2.name, 1, wq2, "w2"),
    ]
    quantized = adapter.apply(model, edits)
    h = np.maximum(fake_quantize(x.numpy(), act1) @ fake_quantize(w1, wq1).T + b1, 0)
    expected = fake_quantize(h, act2) @ fake_quantize(w2, wq2).T + b2
    np.testing.assert_allclose(adapter.infer(quantized, x)[0], expected, rtol=1e-3, atol=2e-3)
    assert xml_of(model, tmp_path, "before.xml") == before  # the input model is unchanged
    names = {op.get_friendly_name() for op in quantized.get_ops()}
    assert {"x/fq_output_0", f"{fc2.name}/fq_input_0", fc1.name, fc2.name} <= names
    types = {op.get_element_type() for op in quantized.get_ops() if op.get_type_name() == "Constant"}
    assert ov.Type.i8 in types and ov.Type.u8 in types
    regraph = adapter.build_graph(quantized)  # int8 weights fold back into constants
    np.testing.assert_allclose(adapter.get_constant(quantized, fc1.name, 1), fake_quantize(w1, wq1), atol=1e-6)
    assert regraph.node(fc1.name).weight.shape == (32, 16)


def test_int8_weights_shrink_the_saved_model(adapter):
    _, model, _ = convert(nn.Linear(256, 128), (2, 256))
    node = by_kind(adapter.build_graph(model), OpKind.LINEAR)[0]
    quantized = adapter.apply(model, [QuantizeWeight(node.name, 1, _sym(np.full(128, 0.5), 0, narrow=True), "w")])
    assert model_size_bytes(quantized) < 0.35 * model_size_bytes(model)
    assert model_size_bytes(model) > 256 * 128 * 4


def test_per_channel_activation_quantizer_on_conv(adapter, cnn):
    module, model, (x,) = cnn
    graph = adapter.build_graph(model)
    conv = by_kind(graph, OpKind.CONV)[0]
    high = np.abs(x.numpy()).max(axis=(0, 2, 3)) * 0.8
    act = _sym(high, axis=1)
    wq = _sym(np.abs(module.conv.weight.detach().numpy()).max(axis=(1, 2, 3)), axis=0, narrow=True)
    quantized = adapter.apply(model, [QuantizeActivation(TensorRef("x", 0), None, act, "a"),
                                      QuantizeWeight(conv.name, 1, wq, "w")])
    with torch.no_grad():
        module.conv.weight.copy_(torch.from_numpy(fake_quantize(module.conv.weight.numpy(), wq)))
        expected = module(torch.from_numpy(fake_quantize(x.numpy(), act))).numpy()
    np.testing.assert_allclose(adapter.infer(quantized, x)[0], expected, rtol=1e-3, atol=1e-3)


def test_quantized_conv_and_matmul_run_in_int8(adapter, cnn):
    _, model, (x,) = cnn
    graph = adapter.build_graph(model)
    edits = []
    for node in by_kind(graph, OpKind.CONV) + by_kind(graph, OpKind.LINEAR):
        weight = adapter.get_constant(model, node.name, 1)
        reduce = tuple(a for a in range(weight.ndim) if a != node.weight.out_axis)
        edits.append(QuantizeActivation(node.inputs[0], (InputRef(node.name, 0),), _sym(4.0), "a"))
        edits.append(QuantizeWeight(node.name, 1, _sym(np.abs(weight).max(axis=reduce), 0, narrow=True), "w"))
    compiled = ov.Core().compile_model(adapter.apply(model, edits), "CPU")
    precisions = {
        op.get_rt_info()["layerType"].astype(str): op.get_rt_info()["runtimePrecision"].astype(str)
        for op in compiled.get_runtime_model().get_ordered_ops()
    }
    assert precisions.get("Convolution") in ("U8", "I8", "u8", "i8")
    assert precisions.get("FullyConnected") in ("U8", "I8", "u8", "i8")


def test_fake_quantize_before_output_keeps_output_name(adapter, mlp):
    _, model, (x,) = mlp
    graph = adapter.build_graph(model)
    out = graph.outputs()[0]
    edited = adapter.apply(model, [QuantizeActivation(out.inputs[0], None, _sym(8.0), "o")])
    assert edited.outputs[0].get_names() == model.outputs[0].get_names()
    assert adapter.build_graph(edited).outputs()[0].name == out.name
    result = adapter.infer(edited, x)[0]
    np.testing.assert_allclose(result, fake_quantize(adapter.infer(model, x)[0], _sym(8.0)), atol=1e-5)


def test_set_constant_and_insert_multiply(adapter, residual):
    module, model, (x,) = residual
    graph = adapter.build_graph(model)
    conv1 = by_kind(graph, OpKind.CONV)[0]
    relu = by_kind(graph, OpKind.RELU)[0]
    zero = adapter.apply(model, [SetConstant(conv1.name, 1, np.zeros((4, 4, 3, 3), np.float32)),
                                 SetConstant(conv1.bias.node, conv1.bias.port, np.zeros(4, np.float32))])
    stats = []
    adapter.collect(zero, [TensorRef(relu.name, 0)], [x], stats.append)
    assert not stats[0][TensorRef(relu.name, 0)].any()
    conv2 = graph.node(graph.consumers(TensorRef(relu.name, 0))[0].node)
    scaled = adapter.apply(model, [InsertMultiply(TensorRef(relu.name, 0), (InputRef(conv2.name, 0),),
                                                  np.full((1, 4, 1, 1), 2.0, np.float32), "smooth")])
    assert "smooth" in {op.get_friendly_name() for op in scaled.get_ops()}
    base, doubled = [], []
    adapter.collect(model, [TensorRef(conv2.name, 0)], [x], base.append)
    adapter.collect(scaled, [TensorRef(conv2.name, 0)], [x], doubled.append)
    ref = TensorRef(conv2.name, 0)
    np.testing.assert_allclose(doubled[0][ref], 2 * base[0][ref], rtol=1e-5, atol=1e-5)


def test_save_load_round_trip(adapter, residual, tmp_path):
    _, model, (x,) = residual
    graph = adapter.build_graph(model)
    conv = by_kind(graph, OpKind.CONV)[0]
    quantized = adapter.apply(model, [QuantizeActivation(TensorRef("x", 0), None, _sym(3.0), "a"),
                                      QuantizeWeight(conv.name, 1, _sym(np.full(4, 0.9), 0, narrow=True), "w")])
    ov.save_model(quantized, tmp_path / "q.xml", compress_to_fp16=False)
    loaded = ov.Core().read_model(tmp_path / "q.xml")
    np.testing.assert_array_equal(adapter.infer(loaded, x)[0], adapter.infer(quantized, x)[0])
    assert [n.name for n in adapter.build_graph(loaded)] == [n.name for n in adapter.build_graph(quantized)]
