"""The region runner contract (``Adapter.region_runner``), one template for every backend.

A stem Linear feeds a residual block (fc1 -> ReLU -> fc2, plus the block input) and a head. The region
is the block, found the same way on every backend (between the stem's output and the tensor the head's
ReLU reads): its outputs equal the full model's, a constant override gives the block computed by hand
with the replaced weight, fetch returns fc2's input, and the model is left as it was.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from nncompress.backends import registry
from nncompress.errors import UnsupportedModelError
from nncompress.graph.ir import InputRef, TensorRef
from nncompress.graph.regions import region_between
from tests.contract.backends import as_backend, items, run

ATOL = 2e-5


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.block, self.head = nn.Linear(16, 32), Block(32), nn.Linear(32, 8)

    def forward(self, x):
        return self.head(torch.relu(self.block(self.stem(x))))


SHAPE = (4, 16)


@pytest.fixture
def case(backend, tmp_path):
    module = Net().eval()
    example = torch.zeros(*SHAPE)
    model = as_backend(module, example, backend, tmp_path)
    adapter = registry.get_adapter(model, example_input=example if backend == "torch" else example.numpy())
    graph = adapter.build_graph(model)
    stem, fc1, fc2, head = [n for n in graph if n.weight is not None]
    relu = graph.producer(InputRef(head.name, head.activation_ports()[0]))
    block_out = graph.node(relu.node).inputs[0]
    region = region_between(graph, [stem.bias.output], [block_out], name="block")
    fc2_input = graph.producer(InputRef(fc2.name, fc2.activation_ports()[0]))
    try:
        runner = adapter.region_runner(model, region, fetch=[fc2_input])
    except (AttributeError, NotImplementedError):
        pytest.skip(f"{backend}: region runner not implemented yet")
    data = [x if backend != "torch" else torch.from_numpy(x) for x in items(SHAPE, count=3)]
    return module, model, adapter, graph, region, runner, data, (stem, fc1, fc2, fc2_input)


def _full_values(adapter, model, tensors, data) -> list[dict[TensorRef, np.ndarray]]:
    seen = []
    adapter.collect(model, list(dict.fromkeys(tensors)), data, seen.append)
    return seen


def test_outputs_and_fetch_equal_the_full_model(case):
    module, model, adapter, graph, region, runner, data, (_, _, _, fc2_input) = case
    wanted = list(region.inputs) + list(region.outputs) + [fc2_input]
    for full in _full_values(adapter, model, wanted, data):
        got = runner.run({t: full[t] for t in region.inputs})
        assert set(got) == set(region.outputs) | {fc2_input}
        for tensor in list(region.outputs) + [fc2_input]:
            np.testing.assert_allclose(got[tensor], full[tensor], atol=ATOL, rtol=1e-5)
        assert np.abs(got[fc2_input]).sum() > 0  # the ReLU output, not a zero placeholder


def test_constant_override_computes_the_block_by_hand_and_keeps_the_model(case, backend):
    module, model, adapter, graph, region, runner, data, (stem, fc1, fc2, _) = case
    before = run(model, items(SHAPE, count=1, seed=3)[0])
    state = {k: v.clone() for k, v in module.state_dict().items()}
    weight = adapter.get_constant(model, fc1.name, fc1.weight.port)
    x_full = _full_values(adapter, model, list(region.inputs), data[:1])[0]
    got = runner.run(x_full, constants={(fc1.name, fc1.weight.port): 0.5 * weight})
    h = x_full[region.inputs[0]].astype(np.float64)
    p = {k: v.double().numpy() for k, v in module.block.state_dict().items()}
    hidden = np.maximum(h @ (0.5 * p["fc1.weight"]).T + p["fc1.bias"], 0)
    want = h + hidden @ p["fc2.weight"].T + p["fc2.bias"]
    np.testing.assert_allclose(got[region.outputs[0]], want, atol=1e-4, rtol=1e-4)
    # the override held for that call only, and the model is unchanged
    plain = runner.run(x_full)
    hidden = np.maximum(h @ p["fc1.weight"].T + p["fc1.bias"], 0)
    np.testing.assert_allclose(plain[region.outputs[0]], h + hidden @ p["fc2.weight"].T + p["fc2.bias"], atol=1e-4)
    np.testing.assert_array_equal(run(model, items(SHAPE, count=1, seed=3)[0]), before)
    np.testing.assert_allclose(adapter.get_constant(model, fc1.name, fc1.weight.port), weight)
    if backend == "torch":
        assert all(torch.equal(state[k], v) for k, v in module.state_dict().items())
        assert not any(m._forward_pre_hooks or m._forward_hooks for m in module.modules())


def test_region_inputs_read_what_run_needs(case):
    module, model, adapter, graph, region, runner, data, _ = case
    seen = []
    adapter.region_inputs(model, runner, data, seen.append)
    full = _full_values(adapter, model, list(region.inputs) + list(region.outputs), data)
    assert len(seen) == len(data)
    for values, want in zip(seen, full):
        assert set(region.inputs) <= set(values)
        got = runner.run(values)
        np.testing.assert_allclose(got[region.outputs[0]], want[region.outputs[0]], atol=ATOL, rtol=1e-5)


def test_override_of_a_node_outside_the_region_is_refused(case):
    module, model, adapter, graph, region, runner, data, (stem, *_rest) = case
    x_full = _full_values(adapter, model, list(region.inputs), data[:1])[0]
    weight = adapter.get_constant(model, stem.name, stem.weight.port)
    with pytest.raises(UnsupportedModelError, match="not in region"):
        runner.run(x_full, constants={(stem.name, stem.weight.port): weight})


@pytest.fixture(scope="module")
def llama_onnx(tmp_path_factory):
    """A 3-layer tiny Llama (logits of input_ids, attention_mask) exported with dynamic batch and sequence."""
    from tests.unit.backends.torch.tiny_transformers import tiny_llama

    model = tiny_llama(layers=3)

    class Logits(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    path = tmp_path_factory.mktemp("llama") / "llama.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Logits(),
            (torch.zeros(1, 7, dtype=torch.int64), torch.ones(1, 7, dtype=torch.int64)),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input_ids", "attention_mask"],
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}},
        )
    return model, str(path)


def _second_layer(backend, llama_onnx, ids: list[np.ndarray]):
    """(runner of the tiny Llama's layer 1, its region, its inputs per item from ``region_inputs``, the full
    model's values of its outputs per item) for items of token ids ``ids``."""
    from nncompress.graph.regions import scope_region
    from tests.contract.backends import ov

    module, path = llama_onnx
    if backend == "torch":
        model, scope = module, "model/layers/1"
        data = [
            {"input_ids": torch.from_numpy(i), "attention_mask": torch.ones(i.shape, dtype=torch.int64)} for i in ids
        ]
        adapter = registry.get_adapter(model, example_input={"input_ids": torch.zeros(1, 7, dtype=torch.int64)})
    else:
        import onnx

        model = onnx.load(path) if backend == "onnx" else ov.convert_model(path)
        data = [{"input_ids": i, "attention_mask": np.ones(i.shape, dtype=np.int64)} for i in ids]
        adapter = registry.get_adapter(model)
    graph = adapter.build_graph(model)
    if backend != "torch":
        scope = next(n.name for n in graph if "layers.1/" in n.name).split("layers.1/")[0] + "layers.1"
    region = scope_region(graph, scope)
    runner = adapter.region_runner(model, region)
    seen, full = [], []
    adapter.region_inputs(model, runner, data, seen.append)
    adapter.collect(model, list(region.outputs), data, full.append)
    return runner, region, seen, full


def test_a_decoder_layer_runs_alone_on_items_of_any_length(backend, llama_onnx):
    """Block inputs (hidden states, mask) and context (rotary cos/sin or the shapes they come from) read by
    ``region_inputs`` drive the block to the full model's values for sequence lengths unlike the example's."""
    lengths = (9, 4)
    rng = np.random.default_rng(0)
    runner, region, seen, full = _second_layer(backend, llama_onnx, [rng.integers(0, 96, size=(1, n)) for n in lengths])
    for values, want, n in zip(seen, full, lengths):
        got = runner.run(values)
        for tensor in region.outputs:
            assert got[tensor].shape[1] == n
            np.testing.assert_allclose(got[tensor], want[tensor], atol=1e-5, rtol=1e-5)


def test_a_runner_made_with_constants_uses_them_on_every_run(case):
    module, model, adapter, graph, region, runner, data, (stem, fc1, fc2, fc2_input) = case
    weight = adapter.get_constant(model, fc1.name, fc1.weight.port)
    key = (fc1.name, fc1.weight.port)
    fixed = adapter.region_runner(model, region, fetch=[fc2_input], constants={key: 0.5 * weight})
    x_full = _full_values(adapter, model, list(region.inputs), data[:1])[0]
    want = runner.run(x_full, constants={key: 0.5 * weight})
    for _ in range(2):
        got = fixed.run(x_full)
        for tensor in list(region.outputs) + [fc2_input]:
            np.testing.assert_allclose(got[tensor], want[tensor], atol=ATOL, rtol=1e-5)
    with pytest.raises(UnsupportedModelError, match="fixed constants"):
        fixed.run(x_full, constants={key: weight})
    with pytest.raises(UnsupportedModelError, match="not in region"):
        adapter.region_runner(model, region, constants={(stem.name, stem.weight.port): weight})


def _linears_built(backend: str, monkeypatch, module: nn.Module, make, run) -> int:
    """How many Linear layers (MatMul/Gemm) the runner that ``make()`` builds computes in ``run(runner)``: the
    sub-model's on ONNX/OpenVINO, the calls of the block's Linear modules on PyTorch."""
    if backend == "torch":
        calls = []
        handles = [m.register_forward_hook(lambda *_: calls.append(1)) for m in (module.block.fc1, module.block.fc2)]
        try:
            run(make())
        finally:
            for handle in handles:
                handle.remove()
        return len(calls)
    built = []
    if backend == "onnx":
        from nncompress.backends.onnx import regions

        session = regions._session
        monkeypatch.setattr(regions, "_session", lambda data, *a: built.append(onnx.load_from_string(data)) or
                            session(data, *a))
        run(make())
        return sum(node.op_type in ("MatMul", "Gemm") for node in built[0].graph.node)
    from nncompress.backends.openvino import regions

    compile_model = regions.compile_model
    monkeypatch.setattr(regions, "compile_model", lambda model: built.append(model) or compile_model(model))
    run(make())
    return sum(op.get_type_name() == "MatMul" for op in built[0].get_ops())


def test_a_runner_without_outputs_returns_the_fetched_tensors_and_skips_the_rest(case, backend, monkeypatch):
    module, model, adapter, graph, region, runner, data, (_, _, _, fc2_input) = case
    lean = adapter.region_runner(model, region, fetch=[fc2_input], outputs=False)
    for full in _full_values(adapter, model, list(region.inputs) + [fc2_input], data):
        got = lean.run({t: full[t] for t in region.inputs})
        assert set(got) == {fc2_input}
        np.testing.assert_allclose(got[fc2_input], full[fc2_input], atol=ATOL, rtol=1e-5)
    x = _full_values(adapter, model, list(region.inputs), data[:1])[0]
    counts = [
        _linears_built(backend, monkeypatch, module, lambda o=o: adapter.region_runner(model, region, [fc2_input],
                                                                                         outputs=o), lambda r: r.run(x))
        for o in (True, False)
    ]
    assert counts == [2, 1]  # fc2 reads the fetched tensor: only the outputs need it


def test_a_decoder_layer_runs_same_length_items_in_one_batched_call(backend, llama_onnx):
    """``statistics.batches`` joins three items into one run (shape context scaled on ONNX/OpenVINO) and the
    split results equal the full model's: the batch check passes, so no item is run alone twice."""
    from nncompress.statistics import batches

    rng = np.random.default_rng(1)
    ids = [rng.integers(0, 96, size=(1, 6)) for _ in range(3)]
    runner, region, seen, full = _second_layer(backend, llama_onnx, ids)
    stream = next(t for t in region.inputs if np.ndim(seen[0][t]) == 3)
    batching = batches.Batching()
    got = list(batches.results(runner, seen.__getitem__, stream, [0, 1, 2], None, batching))
    assert batching.allowed and batching.checked, batching.why
    assert [index for index, _ in got] == [0, 1, 2]
    for (_, result), want in zip(got, full):
        for tensor in region.outputs:
            np.testing.assert_allclose(result[tensor], want[tensor], atol=1e-5, rtol=1e-5)
