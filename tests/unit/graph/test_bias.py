"""graph.bias: the "bias is a following Add" rule on the neutral graph, and every backend using it."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.graph.bias import attach_following_add_biases, following_add_bias, is_channel_vector
from nncompress.graph.ir import BiasInfo, Graph, Node, TensorRef, WeightInfo
from nncompress.graph.ops import OpKind as K

CONV_W = WeightInfo(1, (8, 3, 3, 3), 0, 1)
LINEAR_W = WeightInfo(1, (16, 8), 1, 0)  # x @ W, W [in, out]


def _graph(kind: K, weight: WeightInfo, out_shape, const_shape, *, add_port: int = 1, extra_consumer=False,
           own_bias=None) -> Graph:
    """input -> op -> Add(const) -> output (and optionally a second consumer of the op)."""
    op = Node("op", kind, "Op", [TensorRef("x")], [out_shape], ["float"], {1: weight.shape}, weight, own_bias)
    inputs = [None, None]
    inputs[1 - add_port] = TensorRef("op")
    add = Node("add", K.ADD, "Add", inputs, [out_shape], ["float"], {add_port: const_shape})
    nodes = [Node("x", K.INPUT, "Input", [], [None]), op, add, Node("y", K.OUTPUT, "Output", [TensorRef("add")])]
    if extra_consumer:
        nodes.append(Node("z", K.OUTPUT, "Output", [TensorRef("op")]))
    return Graph(nodes)


@pytest.mark.parametrize(("kind", "weight", "out_shape", "const_shape"), [
    (K.CONV, CONV_W, (1, 8, 4, 4), (1, 8, 1, 1)),
    (K.CONV, CONV_W, (1, 8, 4, 4), (8, 1, 1)),
    (K.CONV, CONV_W, (-1, 8, 4, 4), (1, 8, 1, 1)),  # dynamic batch
    (K.LINEAR, LINEAR_W, (2, 5, 8), (8,)),
    (K.LINEAR, LINEAR_W, (2, 5, 8), (1, 1, 8)),
    (K.LINEAR, LINEAR_W, None, (1, 8)),  # unknown output: channels from the weight
])
def test_per_channel_constant_after_the_op_is_its_bias(kind, weight, out_shape, const_shape):
    for port in (0, 1):
        graph = _graph(kind, weight, out_shape, const_shape, add_port=port)
        attach_following_add_biases(graph)
        assert graph.node("op").bias == BiasInfo("add", port, const_shape, TensorRef("add", 0))


@pytest.mark.parametrize(("kind", "weight", "out_shape", "const_shape"), [
    (K.CONV, CONV_W, (1, 8, 4, 4), (8,)),  # broadcasts over the width, not the channels
    (K.CONV, CONV_W, (1, 8, 4, 4), (1, 8, 4, 4)),  # one value per element
    (K.CONV, CONV_W, (1, 8, 4, 4), ()),
    (K.CONV, CONV_W, (1, 8, 4, 4), (1, 1, 8, 1, 1)),  # higher rank than the output
    (K.CONV, WeightInfo(1, (8, 1, 3, 3), 0, 1, 8), (1, -1, 4, 4), (1, 8, 1, 1)),  # grouped, channels unknown
    (K.LINEAR, LINEAR_W, (2, 5, 8), (5, 1)),
    (K.LINEAR, LINEAR_W, (2, 5, 8), (4,)),
    (K.LINEAR, WeightInfo(0, (8, 16), 0, 1), (8, 5), (8, 1)),  # W @ x: channels are not on the last axis
    (K.EMBEDDING, WeightInfo(0, (100, 8), 0, 1), (2, 5, 8), (8,)),
])
def test_other_constants_are_not_biases(kind, weight, out_shape, const_shape):
    graph = _graph(kind, weight, out_shape, const_shape)
    assert following_add_bias(graph, graph.node("op")) is None


def test_shared_output_and_own_bias():
    graph = _graph(K.LINEAR, LINEAR_W, (2, 8), (8,), extra_consumer=True)  # the Add is not the only consumer
    attach_following_add_biases(graph)
    assert graph.node("op").bias is None
    own = BiasInfo("op", 2, (8,), TensorRef("op", 0))
    graph = _graph(K.LINEAR, LINEAR_W, (2, 8), (8,), own_bias=own)
    attach_following_add_biases(graph)
    assert graph.node("op").bias is own


def test_is_channel_vector():
    assert is_channel_vector((1, 8, 1, 1), 8, 1, 4) and is_channel_vector((8, 1, 1), 8, 1, 4)
    assert not is_channel_vector((8, 1), 8, 1, 4)
    assert is_channel_vector((1, 1, 1), 1, 1, 4) and not is_channel_vector((1, 1), 1, 1, 4)  # one channel
    assert is_channel_vector((1, 8), 8, None, None) and not is_channel_vector((8, 1), 8, None, None)


def test_every_backend_finds_the_same_hand_written_biases(tmp_path):
    """``conv(x, W) + b`` and ``x @ W.T + b`` written by hand: torch, ONNX and OpenVINO graphs agree."""
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    ov = pytest.importorskip("openvino")
    from nncompress.backends.registry import get_adapter
    from tests.contract.models import export_onnx

    class Hand(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w, self.b = torch.nn.Parameter(torch.randn(8, 3, 3, 3)), torch.nn.Parameter(torch.randn(1, 8, 1, 1))
            self.fw, self.fb = torch.nn.Parameter(torch.randn(10, 8)), torch.nn.Parameter(torch.randn(10))

        def forward(self, x):
            y = torch.nn.functional.conv2d(x, self.w) + self.b
            return torch.relu(y.mean((2, 3)) @ self.fw.T + self.fb)

    model, example = Hand().eval(), torch.randn(2, 3, 8, 8)
    path = export_onnx(model, example, tmp_path / "hand.onnx")
    for backend, m in (("torch", model), ("onnx", onnx.load(path)), ("openvino", ov.convert_model(path))):
        graph = get_adapter(m, example if backend == "torch" else None).build_graph(m)
        found = {n.kind: int(np.prod(n.bias.shape)) for n in graph if n.bias is not None}
        adds = {graph.node(n.bias.node).kind for n in graph if n.bias is not None}
        assert found == {K.CONV: 8, K.LINEAR: 10} and adds == {K.ADD}, backend
