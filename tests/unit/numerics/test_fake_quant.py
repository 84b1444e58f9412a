"""numerics.fake_quant: the FakeQuantize grid formula, numpy vs torch (bit-exact), gradients, devices."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.graph.edits import FakeQuantParams
from nncompress.numerics.fake_quant import fake_quantize, quantize_levels
from nncompress.numerics.qparams import fake_quantize as params_fake_quantize

torch = pytest.importorskip("torch")

X = np.array([-1.0, -0.26, 0.0, 0.24, 0.25, 0.9, 3.0], np.float32)


def _weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(6, 5, 3)).astype(np.float32) * 3
    scale = rng.uniform(0.01, 0.2, size=(6, 1, 1)).astype(np.float32)
    zero_point = rng.integers(0, 256, size=(6, 1, 1)).astype(np.float32)
    return x, scale, zero_point


def test_hand_computed_values():
    # x / 0.5 = [-2, -0.52, 0, 0.48, 0.5, 1.8, 6] -> round (half to even) + 1 -> clip to [0, 3]
    q = quantize_levels(X, np.float32(0.5), np.float32(1.0), 0, 3)
    assert q.tolist() == [0, 0, 1, 1, 1, 3, 3]
    y = fake_quantize(X, np.float32(0.5), np.float32(1.0), 0, 3)
    assert y.tolist() == [-0.5, -0.5, 0.0, 0.0, 0.0, 1.0, 1.0]
    symmetric = fake_quantize(X, np.float32(0.25), None, -4, 3)  # levels -4..3: -1.0 .. 0.75
    assert symmetric.tolist() == [-1.0, -0.25, 0.0, 0.25, 0.25, 0.75, 0.75]


@pytest.mark.parametrize("asymmetric", [True, False])
@pytest.mark.parametrize("ste", [False, True])
def test_numpy_and_torch_agree_bit_for_bit(asymmetric: bool, ste: bool):
    x, scale, zero_point = _weights()
    zp = zero_point if asymmetric else None
    low, high = (0, 255) if asymmetric else (-128, 127)
    want = fake_quantize(x, scale, zp, low, high)
    tx = torch.from_numpy(x).requires_grad_(ste)
    got = fake_quantize(tx, torch.from_numpy(scale), None if zp is None else torch.from_numpy(zp), low, high, ste=ste)
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.detach().numpy(), want)
    assert np.abs(want - x).max() > 0  # the grid is coarse enough to change values


def test_params_form_matches_the_torch_quantizer_module():
    from nncompress.backends.torch.fake_quantize import quantizer_from_params

    x, _, _ = _weights(1)
    params = FakeQuantParams(np.full(6, -2.0, np.float32), np.full(6, 3.0, np.float32), 256, 0, False, False)
    module = quantizer_from_params(params)
    want = params_fake_quantize(x, params)
    with torch.no_grad():
        np.testing.assert_array_equal(module(torch.from_numpy(x)).numpy(), want)
    module.scale.requires_grad_(True)  # the autograd (QAT) path computes the same values
    np.testing.assert_array_equal(module(torch.from_numpy(x)).detach().numpy(), want)


def test_input_is_not_modified():
    x, scale, zero_point = _weights()
    before = x.copy()
    fake_quantize(x, scale, zero_point, 0, 255)
    tx = torch.from_numpy(x.copy())
    fake_quantize(tx, torch.from_numpy(scale), torch.from_numpy(zero_point), 0, 255)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(tx.numpy(), before)


def test_straight_through_gradients():
    # grid [-4, 3] * 0.5 = [-2, 1.5]: inside -> dx 1, outside -> 0; d/ds (LSQ): round(x/s) - x/s inside,
    # the clamped level outside
    x = torch.tensor([-3.0, -1.2, 0.3, 0.8, 1.4, 2.5], requires_grad=True)
    scale = torch.tensor(0.5, requires_grad=True)
    y = fake_quantize(x, scale, None, -4, 3, ste=True)
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    v = np.array([-6.0, -2.4, 0.6, 1.6, 2.8, 5.0])
    inside = (v >= -4) & (v <= 3)
    want = np.where(inside, np.round(v) - v, np.clip(v, -4, 3)).sum()
    assert scale.grad.item() == pytest.approx(want, abs=1e-5)


def test_zero_point_gets_a_straight_through_gradient():
    from nncompress.backends.torch.fake_quantize import AsymmetricQuantizer

    quantizer = AsymmetricQuantizer(0.5, 3.0, 256, 0, 255)
    quantizer.zero_point.requires_grad_(True)
    x = torch.tensor([-1.0, 0.0, 200.0])  # the last one clamps at level 255: no gradient to x there
    quantizer(x).sum().backward()
    # y = (clamp(round(x/s) + zp) - zp) * s: inside d/dzp = 0, clamped d/dzp = -s
    assert quantizer.zero_point.grad.item() == pytest.approx(-0.5)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_torch_path_keeps_device_and_dtype(device: str):
    x, scale, zero_point = _weights()
    tx = torch.from_numpy(x).double().to(device)
    ts, tz = (torch.from_numpy(a).double().to(device) for a in (scale, zero_point))
    for ste in (False, True):
        y = fake_quantize(tx, ts, tz, 0, 255, ste=ste)
        assert (y.device.type, y.dtype, tuple(y.shape)) == (device, torch.float64, x.shape)
    if device == "cpu":  # float64 in, float64 arithmetic: the numpy float64 result
        want = fake_quantize(x.astype(np.float64), scale.astype(np.float64), zero_point.astype(np.float64), 0, 255)
        np.testing.assert_array_equal(fake_quantize(tx, ts, tz, 0, 255).numpy(), want)
