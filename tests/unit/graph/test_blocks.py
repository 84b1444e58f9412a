"""Block detection on the neutral graph: transformer layers of Llama, BERT and GPT-2 (PyTorch capture, ONNX
and OpenVINO of the same model), and one region per weighted group for models without repetition."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.graph.blocks import find_blocks
from nncompress.graph.ir import Graph, WeightInfo
from nncompress.graph.ops import OpKind as K
from tests.unit.graph_builder import G

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _graph(model, item=None):
    from nncompress.backends.registry import get_adapter

    return get_adapter(model, item).build_graph(model)


def _llama(layers: int = 3):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(config).eval()


def _shapes(graph, block) -> list[tuple]:
    return [tuple(sorted(graph.node(n).weight.shape)) for n in block.linears]


LLAMA_LAYER = [(32, 32), (16, 32), (16, 32), (32, 32), (32, 64), (32, 64), (32, 64)]


def _check_llama(graph, layers: int) -> None:
    blocks = find_blocks(graph)
    assert len(blocks) == layers + 1  # the decoder layers, then the final norm and lm_head
    for block in blocks[:-1]:
        assert _shapes(graph, block) == LLAMA_LAYER
        assert len(block.outputs) == 1 and block.input is not None
    assert _shapes(graph, blocks[-1]) == [(32, 64)]
    for before, after in zip(blocks, blocks[1:]):
        assert after.input == before.outputs[0]  # each block feeds the next
    assert graph.node(blocks[0].input.node).kind is K.EMBEDDING
    # every stream node between the first and the last block belongs to exactly one block
    names = [n for block in blocks for n in block.nodes]
    assert len(names) == len(set(names))


def test_llama_layers_from_pytorch_capture():
    model = _llama()
    graph = _graph(model, {"input_ids": torch.randint(0, 64, (1, 8))})
    _check_llama(graph, 3)
    blocks = find_blocks(graph)
    for k, block in enumerate(blocks[:-1]):  # exactly the decoder layer modules (the runner calls them)
        assert all(name.startswith(f"model/layers/{k}/") for name in block.nodes)
    assert blocks[-1].nodes[0].startswith("model/norm/")  # the final norm goes with the head


@pytest.mark.slow
def test_llama_layers_from_onnx_and_openvino(tmp_path):
    onnx = pytest.importorskip("onnx")
    ov = pytest.importorskip("openvino")
    from bench.llm import export_logits_onnx

    model = _llama(2)
    path = tmp_path / "llama.onnx"
    export_logits_onnx(model, path)
    _check_llama(_graph(onnx.load(path)), 2)
    _check_llama(_graph(ov.Core().read_model(path)), 2)


def test_bert_encoder_layers():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32)
    model = transformers.BertModel(config).eval()
    item = {"input_ids": torch.randint(0, 64, (1, 8)), "attention_mask": torch.ones(1, 8, dtype=torch.long)}
    graph = _graph(model, item)
    blocks = find_blocks(graph)
    layer = [(32, 32)] * 4 + [(32, 64), (32, 64)]
    assert [_shapes(graph, b) for b in blocks] == [layer] * 3 + [[(32, 32)]]  # 3 layers, then the pooler
    for k, block in enumerate(blocks[:-1]):  # post-norm layers keep their last LayerNorm: exactly one layer each
        assert all(name.startswith(f"encoder/layer/{k}/") for name in block.nodes), block.nodes
    # the embeddings' dropout (an identity in eval mode, absent from ONNX/OpenVINO graphs) stays outside
    assert blocks[0].input.node == "embeddings/dropout/dropout/0"
    assert blocks[-1].input == blocks[-2].outputs[0] and blocks[-1].outputs[0].node.startswith("pooler/")


def test_identity_segments_after_the_residual_cut_go_to_the_earlier_part():
    """A Linear-free gap ``norm -> identity -> identity`` before a residual layer: the block starts after the
    identities (where the layer module starts), not at the norm's output."""
    g = G()
    x = g.input("x")
    norm = g.op("norm", K.LAYER_NORM, [_linear(g, "embed", x)])
    drop = g.op("drop", K.IDENTITY, [g.op("clone", K.IDENTITY, [norm])])
    inner = g.op("relu", K.RELU, [_linear(g, "fc", drop)])
    out = g.op("add", K.ADD, [drop, inner])
    g.output(_linear(g, "head", out))
    blocks = find_blocks(_built(g))
    assert [b.linears for b in blocks] == [("embed",), ("fc",), ("head",)]
    assert blocks[0].nodes == ("embed", "norm", "clone", "drop")
    assert blocks[1].input.node == "drop" and blocks[1].nodes == ("fc", "relu", "add")


def test_gpt2_layers():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=3, n_head=4, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    graph = _graph(model, {"input_ids": torch.randint(0, 64, (1, 8))})
    blocks = find_blocks(graph)
    assert [_shapes(graph, b) for b in blocks] == [[(32, 96), (32, 32), (32, 128), (32, 128)]] * 3 + [[(32, 64)]]
    for k, block in enumerate(blocks[:-1]):  # each block is one layer module (after the embeddings' dropout)
        assert all(name.startswith(f"transformer/h/{k}/") for name in block.nodes), block.nodes
    assert blocks[0].input.node == "transformer/drop/dropout/0"


def _linear(g: G, name: str, x, shape=(4, 4)):
    tensor = g.op(name, K.LINEAR, [x])
    node = g.nodes[-1]
    node.inputs.append(None)
    node.const_ports[1] = shape
    node.weight = WeightInfo(1, shape, 0, 1)
    return tensor


def _built(g: G) -> Graph:
    return Graph(g.nodes)


def test_sequential_network_gets_one_block_per_layer():
    g = G()
    x = g.input("x")
    a = g.op("relu1", K.RELU, [_linear(g, "fc1", x)])
    b = g.op("relu2", K.RELU, [_linear(g, "fc2", a, (8, 4))])
    g.output(_linear(g, "fc3", b, (2, 8)))
    graph = _built(g)
    blocks = find_blocks(graph)
    assert [b.linears for b in blocks] == [("fc1",), ("fc2",), ("fc3",)]
    assert blocks[0].input == x and blocks[0].side == ()  # a float model input read by a layer: the stream
    assert blocks[1].input.node == "relu1"  # no residual Add: the activation ends the earlier block
    assert blocks[2].input.node == "relu2"


def test_branches_stay_in_one_block_and_side_inputs_are_listed():
    g = G()
    x = g.input("x")
    mask = g.input("mask")
    h = _linear(g, "fc0", x)
    left = _linear(g, "left", h)
    right = _linear(g, "right", h)
    joined = g.op("add", K.ADD, [left, right])
    masked = g.op("mul", K.MUL, [joined, mask])
    g.output(_linear(g, "fc_out", masked))
    graph = _built(g)
    blocks = find_blocks(graph)
    assert [b.linears for b in blocks] == [("fc0",), ("left", "right"), ("fc_out",)]
    assert blocks[1].input.node == "fc0" and blocks[1].side == (mask,)  # not from weights: a side input
    assert blocks[2].input.node == "mul" and blocks[2].side == ()
    assert np.all([len(b.outputs) == 1 for b in blocks])
