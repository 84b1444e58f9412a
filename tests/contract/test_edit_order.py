"""One edit order on every backend: the same edits given in any interleaving of their stages give the same model.

``graph.edits.ordered`` sorts by stage and keeps the given order within a stage, so every interleaving
that keeps each stage's own order must give identical ONNX bytes, OpenVINO outputs and PyTorch outputs.
The edits are chosen so that their order matters: a weight is replaced and then quantized at one input,
and an activation is scaled and then quantized at one consumer input.
"""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ov = pytest.importorskip("openvino")
from torch import nn  # noqa: E402

from nncompress.graph.edits import (  # noqa: E402
    AddLowRankCorrection,
    CompressWeight,
    FakeQuantParams,
    InsertMultiply,
    MaskWeight,
    QuantizeActivation,
    QuantizeWeight,
    SetConstant,
    stage_of,
)
from nncompress.graph.ir import InputRef  # noqa: E402
from nncompress.graph.ops import OpKind  # noqa: E402
from nncompress.numerics.encoding import encode  # noqa: E402
from nncompress.parameters import CompressWeightsMode  # noqa: E402

BACKENDS = ("onnx", "openvino", "torch")


class TwoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    model = TwoLinear().eval()
    x = torch.randn(1, 5, 6, generator=torch.Generator().manual_seed(1))  # 3-D: MatMul + Add, not Gemm
    path = tmp_path_factory.mktemp("edit_order") / "two_linear.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"])
    return {
        "torch": (model, x),
        "onnx": (onnx.load(str(path)), {"x": x.numpy()}),
        "openvino": (ov.Core().read_model(str(path)), x.numpy()),
    }


def _adapter(backend: str, item):
    if backend == "torch":
        from nncompress.backends.torch.adapter import TorchAdapter

        return TorchAdapter(example_input=item)
    if backend == "onnx":
        from nncompress.backends.onnx.adapter import OnnxAdapter

        return OnnxAdapter()
    from nncompress.backends.openvino.adapter import OpenVINOAdapter

    return OpenVINOAdapter()


def _linears(graph) -> list:
    nodes = [n for n in graph.nodes.values() if n.kind is OpKind.LINEAR]
    assert len(nodes) == 2, [n.name for n in nodes]
    return nodes


def _weight_params(weight: np.ndarray, axis: int) -> FakeQuantParams:
    reduce = tuple(i for i in range(weight.ndim) if i != axis)
    high = np.abs(weight).max(axis=reduce).astype(np.float32)
    return FakeQuantParams(-high, high, 255, axis=axis, narrow=True)


def _quantizer_edits(adapter, model) -> list:
    """Edits at shared places: SetConstant + QuantizeWeight on fc1's weight, InsertMultiply + QuantizeActivation
    on fc1's input, SetConstant on fc1's bias, QuantizeActivation on fc2's input, QuantizeWeight + MaskWeight on fc2."""
    graph = adapter.build_graph(model)
    fc1, fc2 = _linears(graph)
    w1 = adapter.get_constant(model, fc1.name, fc1.weight.port)
    bias = adapter.get_constant(model, fc1.bias.node, fc1.bias.port)
    w2 = adapter.get_constant(model, fc2.name, fc2.weight.port)
    first_input = InputRef(fc1.name, 0)
    tensor = graph.producer(first_input)
    scale = np.linspace(0.5, 1.5, 6).astype(np.float32)
    act = FakeQuantParams(np.float32(-2.0), np.float32(2.0 * 127 / 128), 256)  # zero on the grid (step 1/64)
    return [
        QuantizeActivation(tensor, (first_input,), act, "fc1_input_q"),
        QuantizeWeight(fc1.name, fc1.weight.port, _weight_params(w1, fc1.weight.out_axis), "fc1_w"),
        InsertMultiply(tensor, (first_input,), scale, "fc1_input_scale"),
        SetConstant(fc1.name, fc1.weight.port, w1 * 1.5),  # quantized with the ranges of the old weight: clips
        QuantizeActivation(graph.producer(InputRef(fc2.name, 0)), None, act, "fc2_input_q"),
        SetConstant(fc1.bias.node, fc1.bias.port, bias + 0.25),
        QuantizeWeight(fc2.name, fc2.weight.port, _weight_params(w2, fc2.weight.out_axis), "fc2_w"),
        MaskWeight(fc2.name, fc2.weight.port, (np.abs(w2) > np.median(np.abs(w2))).astype(np.float32), "fc2_mask"),
    ]


def _weight_edits(adapter, model) -> list:
    """Weight compression edits in a list: fc1 compressed with a LoRA correction and its bias replaced."""
    graph = adapter.build_graph(model)
    fc1, _ = _linears(graph)
    w1 = adapter.get_constant(model, fc1.name, fc1.weight.port)
    bias = adapter.get_constant(model, fc1.bias.node, fc1.bias.port)
    info = fc1.weight
    compressed = encode(w1, CompressWeightsMode.INT8_ASYM, info.in_axis, -1, info.out_axis)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 6)).astype(np.float32) * 0.1
    b = rng.normal(size=(8, 2)).astype(np.float32) * 0.1
    return [
        AddLowRankCorrection(fc1.name, 0, a, b, "fc1_lora"),
        SetConstant(fc1.bias.node, fc1.bias.port, bias - 0.5),
        CompressWeight(fc1.name, fc1.weight.port, compressed, "fc1_weight"),
    ]


def _interleavings(edits: list, count: int) -> list[list]:
    """``count`` random interleavings of ``edits`` that keep the given order within each stage."""
    rng = random.Random(7)
    orders = []
    for _ in range(count):
        slots = [stage_of(e) for e in edits]
        rng.shuffle(slots)
        queues = {s: [e for e in edits if stage_of(e) == s] for s in set(slots)}
        orders.append([queues[s].pop(0) for s in slots])
    return orders


def _fingerprint(backend: str, adapter, model, item):
    if backend == "onnx":
        return model.SerializeToString()
    return adapter.infer(model, item)[0]


def _same(backend: str, first, second) -> bool:
    if backend == "onnx":
        return first == second
    return np.array_equal(np.asarray(first), np.asarray(second))


@pytest.mark.parametrize("make", [_quantizer_edits, _weight_edits], ids=["quantizers", "weights"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_shuffled_edits_give_the_same_model(models, backend, make):
    model, item = models[backend]
    adapter = _adapter(backend, item)
    edits = make(adapter, model)
    reference = adapter.apply(model, sorted(edits, key=stage_of))
    expected = _fingerprint(backend, adapter, reference, item)
    float_out = adapter.infer(model, item)[0]
    out = adapter.infer(reference, item)[0]
    assert not np.allclose(out, float_out, atol=1e-3)  # the edits really change the model
    for order in [edits, *_interleavings(edits, 6)]:
        result = adapter.apply(model, order)
        assert _same(backend, _fingerprint(backend, adapter, result, item), expected), [type(e).__name__ for e in order]


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_agree_on_what_the_ordered_quantizer_edits_compute(models, backend):
    """The stage order has one meaning: all three backends compute the same (up to float rounding)."""
    outputs = {}
    for name in BACKENDS:
        model, item = models[name]
        adapter = _adapter(name, item)
        outputs[name] = np.asarray(adapter.infer(adapter.apply(model, _quantizer_edits(adapter, model)), item)[0])
    np.testing.assert_allclose(outputs[backend], outputs["torch"], rtol=0, atol=2e-3 * np.abs(outputs["torch"]).max())
