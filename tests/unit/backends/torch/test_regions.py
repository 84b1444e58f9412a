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
