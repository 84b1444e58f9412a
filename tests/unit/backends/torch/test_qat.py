"""backends/torch/qat.py: trainable QAT quantizers (gradients, per-channel, state, range init, ONNX export)."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.errors import CalibrationError, UnsupportedBackendError, ValidationError
from nncompress.numerics import qat as qat_math
from nncompress.statistics.range_init import make_range_collector

torch = pytest.importorskip("torch")
nn = torch.nn

from nncompress.backends.torch.qat import (  # noqa: E402
    AsymmetricQATQuantizer,
    SymmetricQATQuantizer,
    make_qat_quantizer,
)


def _make(mode="symmetric", *, per_channel=False, axis=None, channels=None, ndim=4, is_weights=False, bits=8,
          signed=None, narrow_range=False, half_range=False, logarithm_scale=False):
    return make_qat_quantizer(mode=mode, num_bits=bits, signed=signed, per_channel=per_channel, axis=axis,
                              channels=channels, ndim=ndim, is_weights=is_weights, narrow_range=narrow_range,
                              half_range=half_range, logarithm_scale=logarithm_scale)


def _sym(scale: float, signed: bool = True, **kwargs) -> SymmetricQATQuantizer:
    q = _make(signed=signed, **kwargs)
    with torch.no_grad():
        q.scale.fill_(scale)
    return q


def _grads(q, x, g):
    x = x.clone().requires_grad_(True)
    q.zero_grad()
    (q(x) * g).sum().backward()
    return x.grad, {name: p.grad.clone() for name, p in q.named_parameters()}


# --- gradients --------------------------------------------------------------------------------------


def _sym_surrogate(x, scale, level_low, level_high, residual):
    """The straight-through surrogate of the symmetric forward: rounding residual frozen at ``residual``."""
    return (torch.clamp(x * level_high / scale, level_low, level_high) + residual) * scale / level_high


def _finite_difference(f, value: float, h: float = 1e-6) -> float:
    return (f(value + h) - f(value - h)) / (2 * h)


@pytest.mark.parametrize("signed", [True, False])
def test_symmetric_scale_gradient_vs_finite_differences(signed: bool):
    torch.manual_seed(0)
    x = torch.randn(4000, dtype=torch.float64) * 0.6
    g = torch.randn(4000, dtype=torch.float64)
    scale = 0.9
    q = _sym(scale, signed)
    level_low, level_high = q.levels
    z0 = torch.clamp(x * level_high / scale, level_low, level_high)
    residual = torch.round(z0) - z0
    inside = (x >= scale * level_low / level_high) & (x <= scale)
    alpha = level_low / level_high
    for mask, factor in ((inside, 1 / (1 - alpha)), (~inside, 1.0)):
        gm = g * mask
        fd = _finite_difference(
            lambda s, gm=gm: float((_sym_surrogate(x, s, level_low, level_high, residual) * gm).sum()), scale
        )
        _, grads = _grads(q, x.float(), gm.float())
        # NNCF's in-range term (y - x)/R is 1/(1 - alpha) of the exact derivative (half for signed grids)
        assert grads["scale"].item() == pytest.approx(fd * factor, rel=2e-3, abs=2e-3)


def test_symmetric_out_of_range_gradient_vs_finite_differences_of_the_true_forward():
    x = torch.tensor([-5.0, -3.0, 2.0, 4.0])  # all outside [-1.0079, 1.0]
    g = torch.tensor([1.0, -2.0, 0.5, 3.0])
    q = _sym(1.0, True)

    def loss(s: float) -> float:
        with torch.no_grad():
            q.scale.fill_(s)
            return float((q(x) * g).sum())

    fd = _finite_difference(loss, 1.0, 1e-2)  # float32 forward, smooth outside the range
    q.scale.data.fill_(1.0)
    _, grads = _grads(q, x, g)
    assert grads["scale"].item() == pytest.approx(fd, rel=1e-3)
    assert grads["scale"].item() == pytest.approx(3.5 + (-1.0) * (-128 / 127))  # above: 1, below: L/H


def test_asymmetric_gradients_vs_finite_differences():
    torch.manual_seed(1)
    x = torch.randn(3000, dtype=torch.float64) * 0.5
    g = torch.randn(3000, dtype=torch.float64)
    low, span = -0.2, 1.0  # 0.2 * 255 = 51: already aligned, so the alignment is the identity here
    q = _make("asymmetric")
    with torch.no_grad():
        q.input_low.fill_(low)
        q.input_range.fill_(span)
    s0 = 255 / span
    zero_point = round(-low * s0)
    z0 = (torch.clamp(x, low, low + span) - low) * s0 - zero_point
    residual = torch.round(z0) - z0
    zp_residual = zero_point - (-low * s0)

    def surrogate(lo: float, r: float) -> float:  # rounding and zero point straight-through
        s = 255 / r
        y = ((torch.clamp(x, lo, lo + r) - lo) * s - (-lo * s + zp_residual) + residual) / s
        return float((y * g).sum())

    _, grads = _grads(q, x.float(), g.float())
    fd_low = _finite_difference(lambda v: surrogate(v, span), low)
    fd_range = _finite_difference(lambda v: surrogate(low, v), span)
    assert grads["input_low"].item() == pytest.approx(fd_low, rel=2e-3, abs=2e-3)
    assert grads["input_range"].item() == pytest.approx(fd_range, rel=2e-3, abs=2e-3)


def test_gradients_match_the_numerics_formulas():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 4, 4)).astype(np.float32) * 2
    g = rng.normal(size=x.shape).astype(np.float32)
    q = _make("asymmetric", per_channel=True, axis=1, channels=3)
    q.apply_range(np.array([-1.0, -0.5, 0.2]), np.array([1.0, 2.0, 3.0]))
    dx, grads = _grads(q, torch.from_numpy(x), torch.from_numpy(g))
    step, zero_point, low, span = (t.numpy() for t in q.grid())
    y = qat_math.fake_quantize(x, step, zero_point, 0, 255)
    want_dx, want_low, want_range = qat_math.range_gradients(x, y, g, low, span, 0.0, (1, 3, 1, 1))
    np.testing.assert_allclose(dx.numpy(), want_dx)
    np.testing.assert_allclose(grads["input_low"].numpy(), want_low, rtol=1e-5)
    np.testing.assert_allclose(grads["input_range"].numpy(), want_range, rtol=1e-5, atol=1e-6)


def test_input_gradient_is_straight_through_inside_the_range_only():
    q = _sym(1.0, True)
    dx, _ = _grads(q, torch.tensor([-2.0, -0.5, 0.3, 0.99, 1.5]), torch.ones(5))
    assert dx.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_log_scale_and_negative_scale_chain_rules():
    torch.manual_seed(2)
    x, g = torch.randn(500) * 0.7, torch.randn(500)
    plain = _sym(0.8)
    _, base = _grads(plain, x, g)
    logged = _make(signed=True, logarithm_scale=True)
    logged.apply_range(-0.8, 0.8)
    assert logged.scale.item() == pytest.approx(np.log(0.8))
    _, log_grads = _grads(logged, x, g)
    assert log_grads["scale"].item() == pytest.approx(base["scale"].item() * 0.8, rel=1e-5)  # d exp = exp
    negative = _sym(-0.8)
    y_neg, y_pos = negative(x), plain(x)
    torch.testing.assert_close(y_neg, y_pos)  # |scale| is the range
    _, neg_grads = _grads(negative, x, g)
    assert neg_grads["scale"].item() == pytest.approx(-base["scale"].item(), rel=1e-6)


# --- shapes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("axis", "ndim", "shape"), [(0, 4, (3, 1, 1, 1)), (1, 4, (1, 3, 1, 1)), (2, 3, (1, 1, 3))])
def test_per_channel_shapes_and_values(axis: int, ndim: int, shape: tuple):
    q = _make(per_channel=True, axis=axis, channels=3, ndim=ndim, signed=True)
    assert tuple(q.scale.shape) == shape
    scales = [0.5, 1.0, 2.0]
    q.apply_range(-np.array(scales), np.array(scales))
    torch.manual_seed(0)
    full = [2, 5, 4, 3][:ndim]
    full[axis] = 3
    x, g = torch.randn(full) * 1.5, torch.randn(full)
    dx, grads = _grads(q, x, g)
    assert tuple(grads["scale"].shape) == shape
    for c, scale in enumerate(scales):  # each channel behaves as a per-tensor quantizer with its scale
        single = _sym(scale, True)
        xc, gc = x.select(axis, c), g.select(axis, c)
        torch.testing.assert_close(q(x).select(axis, c), single(xc))
        _, single_grads = _grads(single, xc, gc)
        assert grads["scale"].flatten()[c].item() == pytest.approx(single_grads["scale"].item(), rel=1e-4, abs=1e-5)


def test_factory_rejects_bad_arguments():
    with pytest.raises(ValidationError, match="mode"):
        _make("affine")
    with pytest.raises(ValidationError, match="axis"):
        _make(per_channel=True, axis=None, channels=4)
    with pytest.raises(ValidationError, match="num_bits"):
        _make(bits=1)


def test_float16_and_bfloat16_inputs_quantize_in_float32():
    torch.manual_seed(0)
    x = torch.randn(64) * 2
    q = _sym(1.5, True)
    reference = q(x)
    for dtype in (torch.float16, torch.bfloat16):
        xd = x.to(dtype).requires_grad_(True)
        y = q(xd)
        assert y.dtype is dtype
        torch.testing.assert_close(y, q(xd.float()).to(dtype))
        torch.testing.assert_close(y.float(), reference, atol=0.02, rtol=0.01)
        y.float().sum().backward()
        assert xd.grad.dtype is dtype and q.scale.grad.dtype is torch.float32
    half = _sym(1.5, True).half()  # a model converted with .half(): parameters and inputs in float16
    xh = x.half().requires_grad_(True)
    half(xh).float().sum().backward()
    assert half.scale.grad.dtype is torch.float16 and xh.grad.dtype is torch.float16


# --- enable / disable, range init, state ----------------------------------------------------------------


def test_enable_disable():
    q = _sym(1.0, True)
    x = torch.tensor([0.123, 3.0])
    q.disable()
    assert not q.is_enabled and q.enabled.item() == 0
    assert q(x) is x
    q.enable()
    assert q.is_enabled and q.enabled.item() == 1
    assert q(x).tolist() == pytest.approx([16 / 127, 1.0])


def test_range_init_symmetric_and_asymmetric():
    x = torch.tensor([[-0.5, 0.2], [0.3, 2.5]])
    sym = _make(signed=None)
    sym.begin_range_init(make_range_collector("min_max", per_channel_axis=None, is_weights=False))
    assert sym(x) is x  # collecting: identity
    sym.end_range_init()
    assert sym.initialized and sym.signed and sym.signed_tensor.item() == 1
    assert sym.scale.item() == pytest.approx(2.5)
    unsigned = _make(signed=None)
    unsigned.apply_range(0.0, 0.05)
    assert not unsigned.signed and unsigned.scale.item() == pytest.approx(0.1)  # floored at 0.1
    forced = _make(signed=True)
    forced.apply_range(0.0, 1.0)
    assert forced.signed
    asym = _make("asymmetric")
    asym.begin_range_init(make_range_collector("min_max", per_channel_axis=None, is_weights=False))
    asym(x)
    asym.end_range_init()
    assert asym.input_low.item() == pytest.approx(-0.5) and asym.input_range.item() == pytest.approx(3.0)


def test_range_init_errors():
    q = _make()
    with pytest.raises(CalibrationError):
        q.end_range_init()
    with pytest.raises(CalibrationError, match="finite"):
        q.apply_range(float("nan"), 1.0)
    with pytest.raises(ValidationError, match="shape"):
        q.apply_range(np.zeros(3), np.ones(3))


def test_state_dict_names_and_initialized_after_load():
    sym = _make(per_channel=True, axis=0, channels=2, is_weights=True)
    assert set(sym.state_dict()) == {"scale", "signed_tensor", "_num_bits", "enabled"}
    asym = _make("asymmetric")
    assert set(asym.state_dict()) == {"input_low", "input_range", "_num_bits", "enabled"}
    source = _make()
    source.apply_range(-2.0, 3.0)
    source.disable()
    target = _make(signed=None)
    assert not target.initialized and not target.signed
    target.load_state_dict(source.state_dict())
    assert target.initialized and target.signed and not target.is_enabled
    assert target.scale.item() == pytest.approx(3.0)


def test_load_accepts_scalar_shapes_and_other_bit_widths():
    target = _make()
    target.load_state_dict({"scale": torch.tensor(0.7), "signed_tensor": torch.tensor(1),
                            "_num_bits": torch.tensor(4, dtype=torch.int32), "enabled": torch.tensor(1)})
    assert target.num_bits == 4 and target.levels == (-8, 7) and target.scale.shape == (1,)
    assert target.initialized


# --- export ---------------------------------------------------------------------------------------------


class _QuantizedConvNet(nn.Module):
    def __init__(self, weight_mode="symmetric", act_mode="symmetric", half_range=False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.input_q = _make(act_mode)
        self.weight_q = _make(weight_mode, per_channel=True, axis=0, channels=4, is_weights=True,
                              narrow_range=not half_range, half_range=half_range)
        self.output_q = _make("asymmetric")

    def forward(self, x):
        y = nn.functional.conv2d(self.input_q(x), self.weight_q(self.conv.weight), self.conv.bias)
        return self.output_q(torch.relu(y))


def _init(model: _QuantizedConvNet, x: torch.Tensor) -> None:
    quantizers = [model.input_q, model.weight_q, model.output_q]
    for q in quantizers:
        axis = q.axis if q.axis is not None else None
        q.begin_range_init(make_range_collector("min_max", per_channel_axis=axis, is_weights=q.is_weights))
    with torch.no_grad():
        model(x)
    for q in quantizers:
        q.end_range_init()


def _export_and_run(model: nn.Module, x: torch.Tensor, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "qat.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=13, input_names=["x"])
    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.numpy()})[0], ops, graph


@pytest.mark.parametrize(("weight_mode", "act_mode"), [("symmetric", "symmetric"), ("asymmetric", "asymmetric")])
def test_onnx_export_runs_in_onnxruntime_and_matches(tmp_path, weight_mode, act_mode):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 8, 8)
    model = _QuantizedConvNet(weight_mode, act_mode)
    _init(model, x)
    got, ops, _ = _export_and_run(model, x, tmp_path)
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    with torch.no_grad():
        want = model(x).numpy()
    step = float(model.output_q.grid()[0])
    assert np.abs(got - want).max() <= step * 1.001


def test_half_range_weights_export_on_the_full_int8_grid(tmp_path):
    torch.manual_seed(2)
    x = torch.randn(2, 3, 8, 8)
    model = _QuantizedConvNet(half_range=True)
    _init(model, x)
    wq = model.weight_q
    assert wq.levels == (-64, 63)
    params = wq.to_fake_quant_params()
    step = wq.grid()[0].flatten().numpy()
    assert params.levels == 256 and params.signed and not params.narrow
    np.testing.assert_allclose(params.low, -128 * step, rtol=1e-6)
    np.testing.assert_allclose(params.high, 127 * step, rtol=1e-6)
    training = wq.to_fake_quant_params(exported=False)
    assert training.levels == 128 and training.signed
    np.testing.assert_allclose(training.low, -64 * step, rtol=1e-6)
    from nncompress.numerics.qparams import fake_quantize as params_fake_quantize

    weight = model.conv.weight.detach()
    np.testing.assert_allclose(params_fake_quantize(weight.numpy(), training), wq(weight).detach().numpy(), atol=1e-7)
    got, _, graph = _export_and_run(model, x, tmp_path)
    from onnx import numpy_helper

    tensors = list(graph.initializer) + [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute]
    int8 = [numpy_helper.to_array(t) for t in tensors if t.data_type == 3]  # INT8 constants
    weights = [a for a in int8 if a.shape == (4, 3, 3, 3)]
    assert weights and weights[0].min() >= -64 and weights[0].max() <= 63 and weights[0].max() > 32
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(got - want).max() <= float(model.output_q.grid()[0]) * 1.001


def test_non_8_bit_export_is_refused(tmp_path):
    model = _QuantizedConvNet()
    model.input_q = _make(bits=4)
    with pytest.raises(UnsupportedBackendError, match="8-bit"):
        _export_and_run(model, torch.randn(1, 3, 8, 8), tmp_path)


def test_to_fake_quant_params_of_per_tensor_quantizers():
    sym = _make(signed=True)
    sym.apply_range(-1.0, 1.27)
    params = sym.to_fake_quant_params()
    assert params.levels == 256 and params.signed and params.axis is None
    assert float(params.low) == pytest.approx(-1.28) and float(params.high) == pytest.approx(1.27)
    narrow = _make(signed=True, is_weights=True, narrow_range=True, per_channel=True, axis=0, channels=2)
    narrow.apply_range(np.array([-1.0, -2.0]), np.array([1.0, 2.0]))
    params = narrow.to_fake_quant_params()
    assert params.levels == 255 and params.narrow and params.axis == 0
    np.testing.assert_allclose(params.low, [-1.0, -2.0], rtol=1e-6)
    asym = AsymmetricQATQuantizer()
    asym.apply_range(-0.25, 0.75)
    params = asym.to_fake_quant_params()
    assert not params.signed and float(params.low) == pytest.approx(-64 / 191 * 0.75)


@pytest.mark.parametrize("mode", ["symmetric", "asymmetric"])
def test_training_the_range_reduces_the_quantization_error(mode):
    torch.manual_seed(0)
    x = torch.randn(4096)
    q = _make(mode, signed=True) if mode == "symmetric" else _make(mode)
    q.apply_range(-0.3, 0.3)  # far too narrow: most values clip
    optimizer = torch.optim.Adam(q.parameters(), lr=0.05)
    errors = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = ((q(x) - x) ** 2).mean()
        loss.backward()
        optimizer.step()
        errors.append(loss.item())
    assert errors[-1] < 0.15 * errors[0]  # the range widens to cover the data
