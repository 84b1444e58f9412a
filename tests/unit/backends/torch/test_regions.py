"""The PyTorch region runner on a Hugging Face Llama: one decoder layer run by calling the module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nncompress.backends.torch.adapter import TorchAdapter
from nncompress.backends.torch.regions import CONTEXT_PREFIX
from nncompress.errors import UnsupportedModelError
from nncompress.graph.ir import InputRef
from nncompress.graph.regions import region_from_nodes, scope_region
from tests.unit.backends.torch.tiny_transformers import tiny_llama


def _ids(seed: int, length: int = 7):
    return {"input_ids": torch.randint(0, 96, (1, length), generator=torch.Generator().manual_seed(seed))}


@pytest.fixture(scope="module")
def llama():
    model = tiny_llama(layers=3)
    adapter = TorchAdapter(example_input=_ids(0))
    return model, adapter, adapter.build_graph(model)


def test_decoder_layer_runs_alone_with_the_values_of_the_full_model(llama):
    model, adapter, graph = llama
    region = scope_region(graph, "model/layers/1")
    q_proj = graph.node("model/layers/1/self_attn/q_proj/linear/0")
    q_input = graph.producer(InputRef(q_proj.name, 0))
    runner = adapter.region_runner(model, region, fetch=[q_input])
    assert any(t.node.startswith(CONTEXT_PREFIX) for t in runner.context)  # rotary cos/sin: not graph tensors
    items = [_ids(1), _ids(2)]
    full = []
    adapter.collect(model, list(region.inputs) + list(region.outputs) + [q_input], items, full.append)
    seen = []
    adapter.region_inputs(model, runner, items, seen.append)
    for values, want in zip(seen, full):
        got = runner.run(values)
        for tensor in list(region.outputs) + [q_input]:
            np.testing.assert_allclose(got[tensor], want[tensor], atol=1e-5, rtol=1e-5)


def test_block_inputs_chain_from_block_to_block(llama):
    """Layer 2 run on layer 1's runner output (and layer 1's context) equals the full model."""
    model, adapter, graph = llama
    first, second = scope_region(graph, "model/layers/1"), scope_region(graph, "model/layers/2")
    run1, run2 = adapter.region_runner(model, first), adapter.region_runner(model, second)
    seen = []
    adapter.region_inputs(model, run1, [_ids(3)], seen.append)
    values = seen[0]
    out1 = run1.run(values)
    hidden = [t for t in second.inputs if t in set(first.outputs)]
    assert len(hidden) == 1
    shared = {t: v for t, v in values.items() if t not in set(first.inputs) - set(second.inputs)}
    got = run2.run(shared | {hidden[0]: out1[hidden[0]]})
    want = []
    adapter.collect(model, list(second.outputs), [_ids(3)], want.append)
    for tensor in second.outputs:
        np.testing.assert_allclose(got[tensor], want[0][tensor], atol=1e-5, rtol=1e-5)


def test_constant_override_replaces_a_projection_for_one_call(llama):
    model, adapter, graph = llama
    region = scope_region(graph, "model/layers/0")
    runner = adapter.region_runner(model, region)
    seen = []
    adapter.region_inputs(model, runner, [_ids(4)], seen.append)
    node = "model/layers/0/mlp/down_proj/linear/0"
    weight = adapter.get_constant(model, node, 1)
    base = runner.run(seen[0])
    zeroed = runner.run(seen[0], constants={(node, 1): np.zeros_like(weight)})
    out = region.outputs[0]
    # without down_proj the layer output is its residual stream before the MLP
    mid = graph.node("model/layers/0/add/1") if "model/layers/0/add/1" in graph.nodes else None
    assert not np.allclose(base[out], zeroed[out])
    if mid is not None:
        residual = graph.node(mid.name).inputs[0]
        full = []
        adapter.collect(model, [residual], [_ids(4)], full.append)
        np.testing.assert_allclose(zeroed[out], full[0][residual], atol=1e-5)
    np.testing.assert_allclose(runner.run(seen[0])[out], base[out])
    assert np.array_equal(model.get_submodule("model.layers.0.mlp.down_proj").weight.detach().numpy(), weight)


def test_a_region_that_is_no_module_scope_is_refused_by_name(llama):
    model, adapter, graph = llama
    region = region_from_nodes(
        graph, ["model/layers/0/self_attn/q_proj/linear/0", "model/layers/0/self_attn/k_proj/linear/0"]
    )
    with pytest.raises(UnsupportedModelError, match="scope of one module"):
        adapter.region_runner(model, region)


# --------------------------------------------------------------------------- BERT (post-norm, embeddings' dropout)


def _bert_items(count: int, seed: int = 5) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    items = []
    for k in range(count):
        length = 6 + k % 4  # lengths unlike the capture's example
        items.append({"input_ids": torch.randint(0, 100, (1, length), generator=generator),
                      "attention_mask": torch.ones(1, length, dtype=torch.long)})
    return items


def test_bert_blocks_are_encoder_layers_the_runner_calls():
    """``find_blocks`` on BERT gives regions that are each one encoder layer module (the embeddings' dropout,
    an identity in eval mode, stays before the first): the runner calls them and chains them to the model's
    own last hidden state."""
    from nncompress.backends.torch.regions import region_module
    from nncompress.graph.blocks import find_blocks
    from nncompress.graph.regions import region_between
    from tests.unit.backends.torch.tiny_transformers import tiny_bert

    model = tiny_bert()
    adapter = TorchAdapter(example_input=_bert_items(1, seed=0)[0])
    graph = adapter.build_graph(model)
    blocks = find_blocks(graph)[:2]
    regions = [region_between(graph, b.inputs, b.outputs, name=b.nodes[-1]) for b in blocks]
    assert [region_module(graph, r) for r in regions] == ["encoder.layer.0", "encoder.layer.1"]
    runners = [adapter.region_runner(model, r) for r in regions]
    items = _bert_items(3)
    seen = []
    adapter.region_inputs(model, runners[0], items, seen.append)
    assert len(seen) == 3
    for values, item in zip(seen, items):
        hidden = runners[0].run(values)[blocks[0].outputs[0]]
        shared = {t: v for t, v in values.items() if t != blocks[0].input}
        last = runners[1].run(shared | {blocks[1].input: hidden})[blocks[1].outputs[0]]
        with torch.no_grad():
            want = model(**item).last_hidden_state.numpy()
        np.testing.assert_allclose(last, want, atol=1e-5, rtol=1e-5)


def _export_bert(model, path) -> str:
    import warnings

    class LastHidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = model

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    names = ["input_ids", "attention_mask"]
    example = _bert_items(1, seed=0)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(LastHidden().eval(), (example["input_ids"], example["attention_mask"]), str(path),
                          dynamo=False, opset_version=17, input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]})
    return str(path)


def _last_hidden(model, items: list[dict]) -> np.ndarray:
    """The last hidden state of every item (torch, ONNX or OpenVINO model), tokens concatenated."""
    import onnx

    arrays = [{k: v.numpy() for k, v in item.items()} for item in items]
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            outputs = [model(**item).last_hidden_state.numpy() for item in items]
    elif isinstance(model, onnx.ModelProto):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # no on-the-fly int8 MatMul
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        outputs = [session.run(None, item)[0] for item in arrays]
    else:
        from nncompress.backends.openvino.runner import compile_model

        compiled = compile_model(model)  # f32, no dynamic activation quantization
        outputs = [compiled(item)[0] for item in arrays]
    return np.concatenate([o.reshape(-1, o.shape[-1]) for o in outputs])


@pytest.mark.slow
def test_bert_compresses_block_wise_alike_on_three_backends(tmp_path):
    """INT4_SYM + scale estimation on a tiny BERT runs block-wise on PyTorch, ONNX and OpenVINO, and the three
    compressed models agree far more closely than any of them agrees with the float model."""
    onnx = pytest.importorskip("onnx")
    ov = pytest.importorskip("openvino")
    import nncompress as nncf
    from tests.unit.backends.torch.tiny_transformers import tiny_bert

    model = tiny_bert()
    model.pooler = None  # as in the export (last hidden state only): the same last Linear (8-bit) everywhere
    path = _export_bert(model, tmp_path / "bert.onnx")
    models = {"torch": model, "onnx": onnx.load(path), "openvino": ov.Core().read_model(path)}
    calibration, evaluation = _bert_items(8), _bert_items(4, seed=9)
    reference = _last_hidden(model, evaluation)
    outputs = {}
    for backend, original in models.items():
        items = calibration if backend == "torch" else [{k: v.numpy() for k, v in i.items()} for i in calibration]
        compressed = nncf.compress_weights(original, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=32,
                                           scale_estimation=True, dataset=nncf.Dataset(items))
        report = nncf.last_report()
        assert any(note.startswith("block-wise: 2 blocks") for note in report.notes), (backend, report.notes)
        assert len(report.details) == 11 and all(d.algorithms == ("scale estimation",)
                                                  for d in report.details.values())
        outputs[backend] = _last_hidden(compressed, evaluation)
    error = float(np.sqrt(np.mean((outputs["torch"] - reference) ** 2)))
    assert error > 1e-3  # the 4-bit weights change the outputs
    for backend in ("onnx", "openvino"):
        gap = float(np.sqrt(np.mean((outputs[backend] - outputs["torch"]) ** 2)))
        assert gap < 0.05 * error, (backend, gap, error)


def test_gpt2_conv1d_input_rows_are_fetched_from_the_module_argument():
    """GPT-2's ``Conv1D`` flattens its input to rows inside the module: the runner fetches the module's
    argument instead, with the same token rows as the graph tensor."""
    from nncompress.graph.blocks import find_blocks
    from nncompress.graph.regions import region_between
    from tests.unit.backends.torch.tiny_transformers import tiny_gpt2

    model = tiny_gpt2()
    adapter = TorchAdapter(example_input=_ids(0))
    graph = adapter.build_graph(model)
    block = find_blocks(graph)[0]
    region = region_between(graph, block.inputs, block.outputs, name=block.nodes[-1])
    linear = next(n for n in block.linears if "c_attn" in n)
    rows = next(t for t in graph.node(linear).inputs if t is not None)  # addmm(bias, x, w): the rows x
    assert graph.node(rows.node).kind.value == "reshape"  # not an argument of any submodule
    runner = adapter.region_runner(model, region, fetch=[rows])
    seen, full = [], []
    adapter.region_inputs(model, runner, [_ids(6, length=9)], seen.append)
    adapter.collect(model, [rows], [_ids(6, length=9)], full.append)
    got = runner.run(seen[0])[rows]
    np.testing.assert_allclose(got.reshape(-1, got.shape[-1]), full[0][rows].reshape(-1, got.shape[-1]), atol=1e-6)
