"""One template per edit kind (``graph/edits.py``): each edit goes through ``adapter.apply`` of every backend
on the same tiny MLP, and the edited model's output equals the torch MLP edited by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nncompress.errors import ValidationError
from nncompress.graph.edits import (
    AddLowRankCorrection,
    CompressWeight,
    FakeQuantParams,
    InsertMultiply,
    MaskWeight,
    QuantizeActivation,
    QuantizeWeight,
    SetConstant,
)
from nncompress.graph.ir import InputRef
from nncompress.numerics.encoding import encode
from nncompress.parameters import CompressWeightsMode as M
from tests.contract.backends import MLP_INPUT, items, run, tiny

ATOL = 2e-5


@pytest.fixture
def mlp(backend, tmp_path):
    return tiny(backend, tmp_path)


def fake_quant(x: np.ndarray, low, high, levels: int) -> np.ndarray:
    """Clamp to [low, high] and snap to ``levels`` even steps (the FakeQuantize definition)."""
    step = (high - low) / (levels - 1)
    return np.round((np.clip(x, low, high) - low) / step) * step + low


def expected(mlp, weights: dict | None = None, biases: dict | None = None, on_fc2_input=None) -> np.ndarray:
    """The torch MLP's output with replaced weights/biases and ``on_fc2_input`` applied to fc2's input."""
    module = type(mlp.module)().eval()
    module.load_state_dict(mlp.module.state_dict())
    with torch.no_grad():
        for name, value in (weights or {}).items():
            getattr(module, name).weight.copy_(torch.from_numpy(value))
        for name, value in (biases or {}).items():
            getattr(module, name).bias.copy_(torch.from_numpy(value))
    if on_fc2_input is not None:
        module.fc2.register_forward_pre_hook(lambda _, args: (on_fc2_input(args[0]),))
    return run(module, X, exact=True)


X = items(MLP_INPUT, count=1, seed=7)[0]


def check(mlp, edits: list, want: np.ndarray) -> None:
    before = run(mlp.model, X, exact=True)
    got = run(mlp.adapter.apply(mlp.model, edits), X, exact=True)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-5)
    np.testing.assert_array_equal(run(mlp.model, X, exact=True), before)  # the input model is untouched
    assert np.abs(want - before).max() > 10 * ATOL  # the edit changes the output: the check can fail


def test_quantize_activation_equals_fake_quant(mlp):
    relu = torch.relu(mlp.module.fc1(torch.from_numpy(X))).detach().numpy()
    params = FakeQuantParams(np.float32(0.0), np.float32(relu.max() / 2), 256, signed=False)  # clips the top half
    edit = QuantizeActivation(mlp.input_of("fc2"), None, params, "relu/fq")
    want = expected(mlp, on_fc2_input=lambda t: torch.from_numpy(fake_quant(t.numpy(), 0.0, params.high, 256)))
    check(mlp, [edit], want)


def test_quantize_weight_equals_per_channel_fake_quant(mlp):
    weight = mlp.weight("fc2")
    high = np.abs(weight).max(axis=1).astype(np.float32)
    node = mlp.layers["fc2"]
    params = FakeQuantParams(-high, high, 255, axis=node.weight.out_axis, signed=True, narrow=True)
    edit = QuantizeWeight(node.name, node.weight.port, params, "fc2/wfq")
    want = expected(mlp, weights={"fc2": fake_quant(weight, -high[:, None], high[:, None], 255).astype(np.float32)})
    check(mlp, [edit], want)


def test_set_constant_replaces_weight_and_bias(mlp):
    node = mlp.layers["fc2"]
    weight = 2 * mlp.weight("fc2")
    stored = weight if node.weight.out_axis == 0 else weight.T
    bias = np.linspace(-1, 1, 128, dtype=np.float32)
    edits = [SetConstant(node.name, node.weight.port, np.ascontiguousarray(stored)),
             SetConstant(node.bias.node, node.bias.port, bias.reshape(node.bias.shape))]
    check(mlp, edits, expected(mlp, weights={"fc2": weight}, biases={"fc2": bias}))


def test_insert_multiply_scales_the_consumer_input(mlp):
    scale = np.linspace(0.5, 2.0, 128, dtype=np.float32)
    edit = InsertMultiply(mlp.input_of("fc2"), (InputRef(mlp.layers["fc2"].name, 0),), scale, "fc2/smooth")
    check(mlp, [edit], expected(mlp, on_fc2_input=lambda t: t * torch.from_numpy(scale)))


@pytest.mark.parametrize("mode", [M.INT4_ASYM, M.INT8_SYM])
def test_compress_weight_decompresses_to_the_numerics_decode(mlp, mode):
    node = mlp.layers["fc2"]
    stored = mlp.adapter.get_constant(mlp.model, node.name, node.weight.port)
    group = 16 if mode is M.INT4_ASYM else -1
    compressed = encode(stored, mode, node.weight.in_axis, group, node.weight.out_axis)
    decoded = compressed.decompress()
    decoded = decoded if node.weight.out_axis == 0 else decoded.T
    edit = CompressWeight(node.name, node.weight.port, compressed, "fc2/weight")
    check(mlp, [edit], expected(mlp, weights={"fc2": np.ascontiguousarray(decoded)}))


@pytest.mark.parametrize("compressed", [False, True], ids=["float", "int8-factors"])
def test_add_low_rank_correction_adds_b_at_a(mlp, compressed):
    rng = np.random.default_rng(3)
    a = rng.normal(scale=0.1, size=(4, 128)).astype(np.float32)
    b = rng.normal(scale=0.1, size=(128, 4)).astype(np.float32)
    if compressed:  # factors stored low-bit and decompressed at run time: the decode is what gets added
        a, b = encode(a, M.INT8_ASYM, 1, -1, 0), encode(b, M.INT8_ASYM, 1, -1, 0)
    node = mlp.layers["fc2"]
    edit = AddLowRankCorrection(node.name, 0, a, b, "fc2/lora")
    a_value, b_value = (a.decompress(), b.decompress()) if compressed else (a, b)
    check(mlp, [edit], expected(mlp, weights={"fc2": mlp.weight("fc2") + b_value @ a_value}))


def _half_mask(stored: np.ndarray) -> np.ndarray:
    """A 0/1 mask of the stored layout that drops the smaller half of the weights by magnitude."""
    return (np.abs(stored) > np.median(np.abs(stored))).astype(np.float32)


def test_mask_weight_equals_weights_zeroed_by_hand(mlp):
    node = mlp.layers["fc2"]
    stored = mlp.adapter.get_constant(mlp.model, node.name, node.weight.port)
    mask = _half_mask(stored)
    masked = stored * mask
    by_hand = masked if node.weight.out_axis == 0 else masked.T
    edit = MaskWeight(node.name, node.weight.port, mask, "fc2.weight")
    check(mlp, [edit], expected(mlp, weights={"fc2": np.ascontiguousarray(by_hand)}))


def test_trainable_mask_weight_where_models_train_and_refused_elsewhere(mlp):
    node = mlp.layers["fc2"]
    stored = mlp.adapter.get_constant(mlp.model, node.name, node.weight.port)
    mask = _half_mask(stored)
    edit = MaskWeight(node.name, node.weight.port, mask, "fc2.weight", trainable=True)
    if not mlp.adapter.capabilities.trainable:
        with pytest.raises(ValidationError, match="does not train"):
            mlp.adapter.apply(mlp.model, [edit])
        return
    by_hand = stored * mask if node.weight.out_axis == 0 else (stored * mask).T
    check(mlp, [edit], expected(mlp, weights={"fc2": np.ascontiguousarray(by_hand)}))  # eval: deterministic mask


def test_mask_weight_acts_before_the_weight_quantizer_whatever_the_order(mlp):
    """Stage order: the mask zeroes weights first, the quantizer then quantizes the masked weight."""
    node = mlp.layers["fc2"]
    stored = mlp.adapter.get_constant(mlp.model, node.name, node.weight.port)
    weight = stored if node.weight.out_axis == 0 else stored.T
    high = (np.abs(weight).max(axis=1) / 2).astype(np.float32)  # clips: quantizing before masking would differ
    params = FakeQuantParams(-high, high, 255, axis=node.weight.out_axis, signed=True, narrow=True)
    mask = _half_mask(stored)
    keep = mask if node.weight.out_axis == 0 else mask.T
    quantized = fake_quant(weight * keep, -high[:, None], high[:, None], 255).astype(np.float32)
    want = expected(mlp, weights={"fc2": quantized})
    edits = [QuantizeWeight(node.name, node.weight.port, params, "fc2/wfq"),
             MaskWeight(node.name, node.weight.port, mask, "fc2.weight")]
    for order in (edits, edits[::-1]):
        check(mlp, order, want)
        assert _weight_stays_quantized(mlp, mlp.adapter.apply(mlp.model, order))


def _weight_stays_quantized(mlp, model) -> bool:
    """The quantizer still acts last on the weight: a torch chain [mask, quantizer], an ONNX DequantizeLinear,
    an OpenVINO int8 constant (a mask applied after the quantizer would have folded it to floats)."""
    if mlp.backend == "torch":
        from nncompress.backends.torch.hooks import storage_of

        return list(storage_of(model).chains.values()) == [["fc2.weight", "fc2/wfq"]]
    if mlp.backend == "onnx":
        return [n.op_type for n in model.graph.node].count("DequantizeLinear") == 1
    return any(op.get_type_name() == "Constant" and op.get_element_type().get_type_name() in ("i8", "u8")
               for op in model.get_ops())
