"""Binarizer modules: values, straight-through and reference gradients, init, strip form, ONNX export."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from nncompress.backends.torch.binarization import (
    ActivationBinarizer,
    BinarizedWeight,
    WeightBinarizer,
)
from nncompress.errors import CalibrationError


def test_weight_binarizer_values_straight_through_gradient_and_disable():
    w = torch.tensor([[[[1.0, -3.0]]], [[[0.0, 2.0]]]], requires_grad=True)
    binarizer = WeightBinarizer("xnor")
    y = binarizer(w)
    assert y.reshape(2, 2).tolist() == [[2.0, -2.0], [-1.0, 1.0]]
    g = torch.tensor([[[[0.5, -1.0]]], [[[2.0, 3.0]]]])
    y.backward(g)
    assert torch.equal(w.grad, g)  # identity backward
    binarizer.disable()
    assert binarizer(w) is w and binarizer.state_dict()["enabled"].tolist() == [0]


def test_activation_binarizer_gradients_reach_the_stored_parameters_through_exp_and_sigmoid():
    module = ActivationBinarizer(channels=1)
    module.set_scale(2.0)
    with torch.no_grad():
        module.threshold.fill_(float(np.log(0.25 / 0.75)))  # T = 0.25: threshold 0.5
    x = torch.tensor([-1.0, 0.3, 0.5, 0.7, 2.5]).reshape(1, 1, 5, 1).requires_grad_(True)
    y = module(x)
    assert y.reshape(-1).tolist() == pytest.approx([0.0, 0.0, 0.0, 2.0, 2.0])
    y.sum().backward()
    assert x.grad.reshape(-1).tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    assert module.scale.grad.item() == pytest.approx(1.75 * 2.0, rel=1e-5)  # dS · S (log storage)
    assert module.threshold.grad.item() == pytest.approx(-3.0 * 0.25 * 0.75, rel=1e-5)  # dT · T(1-T)


def test_first_training_forward_initialises_the_scale_not_an_eval_forward():
    module = ActivationBinarizer(channels=2)
    x = torch.arange(4000, dtype=torch.float32).reshape(1, 2, 2000, 1)  # top 0.1 %: k = 4 -> 3996
    module.eval()
    module(x)
    assert not module.is_initialized and module.scale_value().item() == 1.0
    module.train()
    module(x)
    assert module.is_initialized and module.scale_value().item() == pytest.approx(3996.0, rel=1e-6)
    module(x * 2)
    assert module.scale_value().item() == pytest.approx(3996.0, rel=1e-6)  # only once


def test_collected_scale_is_the_mean_over_batches_and_non_positive_is_refused():
    module = ActivationBinarizer(channels=1)
    module.begin_init()
    for top in (2.0, 4.0):
        out = module(torch.tensor([[[[0.0, top]]]]))
        assert out.tolist() == [[[[0.0, top]]]]  # passes through while collecting
    assert module.end_init() == 2 and module.scale_value().item() == pytest.approx(3.0)
    with pytest.raises(CalibrationError, match="not positive"):
        module.set_scale(0.0)


def test_stripped_forms_compute_exactly_the_training_values():
    torch.manual_seed(0)
    act = ActivationBinarizer(channels=3)
    with torch.no_grad():
        act.threshold.normal_()
    act.set_scale(0.7)
    x = torch.randn(2, 3, 5, 5)
    assert torch.equal(act.stripped()(x), act(x))
    w = torch.randn(4, 3, 3, 3)
    assert torch.equal(BinarizedWeight("dorefa")(w), WeightBinarizer("dorefa")(w))


class _Binarized(nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3, 3, 3))
        self.act = ActivationBinarizer(channels=3)
        self.wb = WeightBinarizer(mode)
        with torch.no_grad():
            self.act.threshold.normal_()
        self.act.set_scale(0.8)

    def forward(self, x):
        return F.conv2d(self.act(x), self.wb(self.weight))


@pytest.mark.parametrize("mode", ["xnor", "dorefa"])
def test_onnx_export_shows_the_binary_structure_and_matches_in_onnx_runtime(tmp_path, mode):
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    torch.manual_seed(1)
    model = _Binarized(mode).eval()
    x = torch.randn(2, 3, 6, 6)
    path = tmp_path / "b.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=13, input_names=["x"])
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    assert {"Greater", "Cast", "Mul", "DequantizeLinear", "Conv"} <= set(ops)
    constants = [numpy_helper.to_array(a.t) for n in proto.graph.node if n.op_type == "Constant" for a in n.attribute]
    constants += [numpy_helper.to_array(i) for i in proto.graph.initializer]
    codes = [c for c in constants if c.dtype == np.int8 and c.shape == (4, 3, 3, 3)]
    assert len(codes) == 1 and set(np.unique(codes[0]).tolist()) == {-1, 1}
    scales = [c for c in constants if c.dtype == np.float32 and c.size == (4 if mode == "xnor" else 1)]
    assert scales, "the scale of the binarized weight is a separate constant"
    out = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(out, model(x).detach().numpy(), rtol=1e-5, atol=1e-5)
