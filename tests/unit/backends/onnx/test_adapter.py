"""Tests of the ONNX backend adapter on small torch-exported models."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
nn = torch.nn

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from nncompress.backends.onnx import OnnxAdapter, model_size_bytes  # noqa: E402
from nncompress.errors import CalibrationError, UnsupportedModelError  # noqa: E402
from nncompress.graph.edits import (  # noqa: E402
    FakeQuantParams,
    InsertMultiply,
    QuantizeActivation,
    QuantizeWeight,
    SetConstant,
)
from nncompress.graph.ir import InputRef, TensorRef  # noqa: E402
from nncompress.graph.ops import OpKind  # noqa: E402
from nncompress.numerics.qparams import asymmetric_range, fake_quantize, symmetric_range  # noqa: E402

RNG = np.random.default_rng(0)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.fc(x.view(x.size(0), -1))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.side = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = torch.relu(self.conv1(x))
        y = self.conv2(y) + x
        return torch.cat([y, self.side(x)], dim=1)


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.pw = nn.Conv2d(3, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)

    def forward(self, x):
        return self.grouped(self.dw(self.pw(x)))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(16, 32)
        self.l2 = nn.Linear(32, 4)

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x)))


def _export(module, shape, path, dynamic=False, fold=True):
    torch.manual_seed(0)
    module.eval()
    for m in module.modules():  # non-trivial batch-norm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    axes = {"x": {0: "N"}, "y": {0: "N"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            torch.randn(*shape),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes=axes,
            do_constant_folding=fold,
        )
    return module, onnx.load(str(path))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    return {
        "cnn": _export(CNN(), (2, 3, 8, 8), tmp / "cnn.onnx", dynamic=True, fold=False),
        "residual": _export(Residual(), (1, 4, 6, 6), tmp / "res.onnx"),
        "depthwise": _export(Depthwise(), (1, 3, 6, 6), tmp / "dw.onnx"),
        "mlp": _export(MLP(), (2, 5, 16), tmp / "mlp.onnx", fold=False),
    }


@pytest.fixture()
def adapter():
    return OnnxAdapter()


def _kinds(graph):
    return [n.kind for n in graph]


def _node(graph, op_type):
    return next(n for n in graph if n.op_type == op_type)


def _run_torch(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def test_cnn_graph_kinds_weights_and_folded_shapes(models, adapter):
    _, model = models["cnn"]
    graph = adapter.build_graph(model)
    assert _kinds(graph) == [
        OpKind.INPUT,
        OpKind.CONV,
        OpKind.BATCH_NORM,
        OpKind.RELU,
        OpKind.MAX_POOL,
        OpKind.RESHAPE,
        OpKind.LINEAR,
        OpKind.OUTPUT,
    ]
    assert not {"Shape", "Gather", "Concat", "Unsqueeze", "Constant", "Identity"} & {n.op_type for n in graph}
    conv, gemm, reshape = _node(graph, "Conv"), _node(graph, "Gemm"), _node(graph, "Reshape")
    assert conv.weight.port == 1 and conv.weight.shape == (8, 3, 3, 3)
    assert (conv.weight.out_axis, conv.weight.in_axis, conv.weight.groups) == (0, 1, 1)
    assert conv.bias.node == conv.name and conv.bias.port == 2 and conv.bias.shape == (8,)
    assert gemm.weight.shape == (10, 128) and (gemm.weight.out_axis, gemm.weight.in_axis) == (0, 1)
    assert gemm.bias.port == 2 and gemm.bias.output == TensorRef(gemm.name, 0)
    assert reshape.inputs[1] is None and reshape.const_ports[1] == (2,)
    assert graph.inputs()[0].output_shapes == [(-1, 3, 8, 8)]
    assert _node(graph, "BatchNormalization").output_shapes[0] == (-1, 8, 8, 8)
    assert graph.outputs()[0].name == "output/y" and graph.outputs()[0].inputs == [TensorRef(gemm.name, 0)]
    assert conv.output_dtypes == ["float"]


def test_get_constant_matches_torch_parameters(models, adapter):
    cnn, model = models["cnn"]
    graph = adapter.build_graph(model)
    conv, bn, gemm = _node(graph, "Conv"), _node(graph, "BatchNormalization"), _node(graph, "Gemm")
    np.testing.assert_array_equal(adapter.get_constant(model, conv.name, 1), cnn.conv.weight.detach().numpy())
    np.testing.assert_array_equal(adapter.get_constant(model, gemm.name, 2), cnn.fc.bias.detach().numpy())
    np.testing.assert_array_equal(adapter.get_constant(model, bn.name, 3), cnn.bn.running_mean.numpy())
    mlp, model = models["mlp"]  # weights are Transpose(initializer) chains
    mm = _node(adapter.build_graph(model), "MatMul")
    np.testing.assert_allclose(adapter.get_constant(model, mm.name, 1), mlp.l1.weight.detach().numpy().T)
    with pytest.raises(UnsupportedModelError):  # the reshape target depends on the dynamic batch
        adapter.get_constant(models["cnn"][1], _node(graph, "Reshape").name, 1)


def test_residual_and_depthwise_graphs(models, adapter):
    graph = adapter.build_graph(models["residual"][1])
    add, concat = _node(graph, "Add"), _node(graph, "Concat")
    assert add.kind is OpKind.ADD and len(add.activation_ports()) == 2 and add.const_ports == {}
    assert concat.kind is OpKind.CONCAT and len(concat.activation_ports()) == 2
    conv2 = graph.node(add.inputs[0].node if graph.node(add.inputs[0].node).kind is OpKind.CONV else add.inputs[1].node)
    assert conv2.bias.node == conv2.name  # Conv's own bias, not the residual Add
    assert graph.consumers(TensorRef("x", 0)) and len(graph.consumers(TensorRef("x", 0))) == 3
    dw_graph = adapter.build_graph(models["depthwise"][1])
    kinds = [(n.kind, n.weight.groups) for n in dw_graph if n.weight]
    assert kinds == [(OpKind.CONV, 1), (OpKind.DEPTHWISE_CONV, 8), (OpKind.CONV, 2)]
    assert [n.weight.shape for n in dw_graph if n.weight][1] == (8, 1, 3, 3)


def test_mlp_matmul_add_bias(models, adapter):
    mlp, model = models["mlp"]
    graph = adapter.build_graph(model)
    assert [n.kind for n in graph] == [
        OpKind.INPUT,
        OpKind.LINEAR,
        OpKind.ADD,
        OpKind.RELU,
        OpKind.LINEAR,
        OpKind.ADD,
        OpKind.OUTPUT,
    ]
    mm = _node(graph, "MatMul")
    assert mm.weight.shape == (16, 32) and (mm.weight.out_axis, mm.weight.in_axis) == (1, 0)
    add = graph.node(mm.bias.node)
    assert add.kind is OpKind.ADD and mm.bias.shape == (32,) and mm.bias.output == TensorRef(add.name, 0)
    np.testing.assert_array_equal(adapter.get_constant(model, add.name, mm.bias.port), mlp.l1.bias.detach().numpy())


def test_collect_matches_model_outputs(models, adapter):
    cnn, model = models["cnn"]
    graph = adapter.build_graph(model)
    relu, gemm = _node(graph, "Relu"), _node(graph, "Gemm")
    xs = [RNG.standard_normal((n, 3, 8, 8)).astype(np.float32) for n in (1, 2, 3)]
    items = [xs[0], {"x": xs[1]}, (torch.from_numpy(xs[2]),)]
    seen = []
    adapter.collect(model, [TensorRef(relu.name, 0), TensorRef(gemm.name, 0)], items, seen.append)
    assert len(seen) == 3
    for x, values in zip(xs, seen):
        with torch.no_grad():
            expected_relu = torch.relu(cnn.bn(cnn.conv(torch.from_numpy(x)))).numpy()
        np.testing.assert_allclose(values[TensorRef(relu.name, 0)], expected_relu, atol=1e-5)
        np.testing.assert_allclose(values[TensorRef(gemm.name, 0)], _run_torch(cnn, x), atol=1e-5)
    np.testing.assert_allclose(adapter.infer(model, xs[1])[0], _run_torch(cnn, xs[1]), atol=1e-5)


def _weight_quantizer(adapter, model, node):
    w = adapter.get_constant(model, node.name, node.weight.port)
    axes = tuple(i for i in range(w.ndim) if i != node.weight.out_axis)
    low, high, levels, signed = symmetric_range(w.min(axis=axes), np.abs(w).max(axis=axes), narrow=True)
    params = FakeQuantParams(low, high, levels, axis=node.weight.out_axis, signed=signed, narrow=True)
    return QuantizeWeight(node.name, node.weight.port, params, f"{node.name}/wq"), w, params


def _act_params(low, high):
    lo, hi, levels = asymmetric_range(low, high)
    return FakeQuantParams(lo, hi, levels, signed=False)


def test_apply_quantization_matches_fake_quantize_reference(models, adapter):
    mlp, model = models["mlp"]
    graph = adapter.build_graph(model)
    mm1, mm2 = [n for n in graph if n.kind is OpKind.LINEAR]
    relu = _node(graph, "Relu")
    wq1, w1, p1 = _weight_quantizer(adapter, model, mm1)
    wq2, w2, p2 = _weight_quantizer(adapter, model, mm2)
    px, pr = _act_params(-2.5, 2.0), _act_params(0.0, 1.5)
    edits = [
        wq1,
        wq2,
        QuantizeActivation(TensorRef("x", 0), None, px, "x/aq"),
        QuantizeActivation(TensorRef(relu.name, 0), (InputRef(mm2.name, 0),), pr, "relu/aq"),
    ]
    before = model.SerializeToString()
    quantized = adapter.apply(model, edits)
    assert model.SerializeToString() == before
    onnx.checker.check_model(quantized, full_check=True)
    ints = [t for t in quantized.graph.initializer if t.data_type == TensorProto.INT8 and len(t.dims) == 2]
    assert len(ints) == 2
    x = RNG.standard_normal((2, 5, 16)).astype(np.float32) * 1.5
    b1, b2 = mlp.l1.bias.detach().numpy(), mlp.l2.bias.detach().numpy()
    hidden = np.maximum(fake_quantize(x, px) @ fake_quantize(w1, p1) + b1, 0)
    expected = fake_quantize(hidden, pr) @ fake_quantize(w2, p2) + b2
    np.testing.assert_allclose(adapter.infer(quantized, x)[0], expected, atol=1e-4)


def test_quantized_convs_run_integer_kernels(models, adapter, tmp_path):
    _, model = models["depthwise"]
    graph = adapter.build_graph(model)
    convs = [n for n in graph if n.weight is not None]
    edits = [_weight_quantizer(adapter, model, n)[0] for n in convs]
    for tensor in [TensorRef("x", 0)] + [TensorRef(n.name, 0) for n in convs]:
        edits.append(QuantizeActivation(tensor, None, _act_params(-3.0, 3.0), f"{tensor.node}/aq"))
    quantized = adapter.apply(model, edits)
    onnx.checker.check_model(quantized)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(quantized.SerializeToString(), options, providers=["CPUExecutionProvider"])
    op_types = {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert op_types & {"QLinearConv", "ConvInteger"}, op_types


def test_set_constant_and_insert_multiply(models, adapter):
    _, model = models["mlp"]
    graph = adapter.build_graph(model)
    mm1, mm2 = [n for n in graph if n.kind is OpKind.LINEAR]
    x = RNG.standard_normal((2, 5, 16)).astype(np.float32)
    base = adapter.infer(model, x)[0]
    bias = mm2.bias
    delta = np.linspace(-1, 1, 4).astype(np.float32)
    old = adapter.get_constant(model, bias.node, bias.port)
    shifted = adapter.apply(model, [SetConstant(bias.node, bias.port, old + delta)])
    np.testing.assert_allclose(adapter.infer(shifted, x)[0] - base, np.broadcast_to(delta, base.shape), atol=1e-5)
    np.testing.assert_allclose(adapter.get_constant(shifted, bias.node, bias.port), old + delta)
    scale = np.linspace(0.5, 2.0, 16).astype(np.float32)
    scaled = adapter.apply(model, [InsertMultiply(TensorRef("x", 0), (InputRef(mm1.name, 0),), scale, "smooth")])
    onnx.checker.check_model(scaled)
    assert "Mul" in {n.op_type for n in scaled.graph.node}
    np.testing.assert_allclose(adapter.infer(scaled, x)[0], adapter.infer(model, x * scale)[0], atol=1e-5)


def test_quantize_model_output_keeps_output_name(models, adapter):
    _, model = models["mlp"]
    graph = adapter.build_graph(model)
    last = graph.outputs()[0].inputs[0]
    params = _act_params(-1.0, 1.0)
    quantized = adapter.apply(model, [QuantizeActivation(last, None, params, "out/aq")])
    assert [o.name for o in quantized.graph.output] == ["y"]
    onnx.checker.check_model(quantized)
    x = RNG.standard_normal((2, 5, 16)).astype(np.float32)
    np.testing.assert_allclose(
        adapter.infer(quantized, x)[0], fake_quantize(adapter.infer(model, x)[0], params), atol=1e-6
    )


def _hand_model(opset=17, names=("mm", "mm")):
    w = numpy_helper.from_array(RNG.standard_normal((4, 3)).astype(np.float32), "W")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["a"], name=names[0]),
        helper.make_node("MatMul", ["x", "W"], ["b"], name=names[1]),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_names_shared_weights_and_opset(adapter):
    model = _hand_model()
    graph = adapter.build_graph(model)
    names = [n.name for n in graph]
    assert names == ["x", "mm", "mm_1", "Add_2", "output/y"]
    assert adapter.build_graph(model).dump() == graph.dump()
    edits = [_weight_quantizer(adapter, model, graph.node(n))[0] for n in ("mm", "mm_1")]
    quantized = adapter.apply(model, edits)
    onnx.checker.check_model(quantized)
    assert [n.name for n in adapter.build_graph(quantized)] == names
    weights = [n.input[1] for n in quantized.graph.node if n.op_type == "MatMul"]
    assert len(set(weights)) == 2 and "W" not in {t.name for t in quantized.graph.initializer}
    one = adapter.apply(model, edits[:1])  # the other MatMul still reads the float weight
    assert "W" in {t.name for t in one.graph.initializer}
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(adapter.infer(quantized, x)[0], adapter.infer(model, x)[0], atol=0.1)
    old = _hand_model(opset=11)
    upgraded = adapter.apply(old, edits)
    assert max(o.version for o in upgraded.opset_import if o.domain == "") >= 13
    onnx.checker.check_model(upgraded)
    with pytest.raises(UnsupportedModelError):
        adapter.apply(_hand_model(opset=9), edits)


def test_bad_inputs_raise_calibration_error(models, adapter):
    _, model = models["cnn"]
    good = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    adapter.check_inputs(model, good)
    bad_items = [{"input": good}, (good, good), good[0], good.astype(np.float64), good[:, :2]]
    for item in bad_items:
        with pytest.raises(CalibrationError, match=r"x: float32 \[N, 3, 8, 8\]"):
            adapter.check_inputs(model, item)
    with pytest.raises(CalibrationError, match="float64"):
        adapter.collect(model, [], [good.astype(np.float64)], lambda values: None)


def test_model_size_and_read_only_methods(models, adapter):
    _, model = models["cnn"]
    before = model.SerializeToString()
    assert model_size_bytes(model) == len(before)
    graph = adapter.build_graph(model)
    adapter.collect(
        model,
        [TensorRef(_node(graph, "Relu").name, 0)],
        [RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)],
        lambda values: None,
    )
    adapter.infer(model, RNG.standard_normal((1, 3, 8, 8)).astype(np.float32))
    assert model.SerializeToString() == before


def test_weight_fed_session_matches_the_plain_session(monkeypatch):
    """Large weights fed as inputs (held once) give the same outputs and extra outputs."""
    from nncompress.backends.onnx import runner

    w1 = RNG.standard_normal((64, 32)).astype(np.float32)
    w2 = RNG.standard_normal((32, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["r"], name="mm"),
         helper.make_node("MatMul", ["r", "w2"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    monkeypatch.setattr(runner, "FED_WEIGHT_MIN_BYTES", 2048)  # w1 (8 KB) fed, w2 (1 KB) kept
    fed = runner.create_session(model, ["h"], feed_weights=True)
    assert isinstance(fed, runner.WeightFedSession) and set(fed.weights) == {"w1"}
    assert [i.name for i in fed.get_inputs()] == ["x"] and len(model.graph.output) == 1
    x = RNG.standard_normal((3, 64)).astype(np.float32)
    y, h = fed.run(["y", "h"], {"x": x})
    np.testing.assert_allclose(h, x @ w1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, np.maximum(x @ w1, 0) @ w2, rtol=1e-5, atol=1e-4)
    monkeypatch.setattr(runner, "FED_MODEL_MIN_BYTES", 4096)
    assert isinstance(runner.create_session(model), runner.WeightFedSession)  # chosen by size
