"""numerics.sparsity: importance, thresholds (the bounded-memory global one against the sort), RB formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nncompress.errors import ValidationError
from nncompress.numerics import sparsity as sp


def test_importance_abs_and_normed_abs_by_hand():
    w = np.array([[3.0, -4.0], [0.0, 0.0]], dtype=np.float32)  # ‖W‖₂ = 5
    np.testing.assert_array_equal(sp.importance(w, "abs"), [[3, 4], [0, 0]])
    np.testing.assert_allclose(sp.importance(w, "normed_abs"), [[0.6, 0.8], [0, 0]], rtol=1e-7)
    t = sp.importance(torch.from_numpy(w), "normed_abs")
    np.testing.assert_allclose(t.numpy(), [[0.6, 0.8], [0, 0]], rtol=1e-7)
    np.testing.assert_array_equal(sp.importance(np.zeros(3, np.float32)), [0, 0, 0])  # zero norm: finite
    with pytest.raises(ValidationError, match="importance must be one of 'abs', 'normed_abs'; got 'l2'"):
        sp.importance(w, "l2")


def test_importance_chunks_equal_the_whole_importance():
    w = torch.randn(37, 11, generator=torch.Generator().manual_seed(0))
    whole = sp.importance(w.numpy(), "normed_abs")
    chunks = list(sp.importance_chunks(w, "normed_abs", chunk=50))
    assert [c.size for c in chunks] == [50] * 8 + [7]
    np.testing.assert_array_equal(np.concatenate(chunks), whole.ravel())


def test_numpy_and_torch_importances_are_bitwise_equal(monkeypatch):
    monkeypatch.setattr(sp, "CHUNK_ELEMENTS", 100)  # the norm is accumulated over several chunks
    w = torch.randn(300, 7, generator=torch.Generator().manual_seed(3)) * 10
    assert sp.weight_norm(w) == sp.weight_norm(w.numpy()) == pytest.approx(float(torch.linalg.norm(w)), rel=1e-6)
    np.testing.assert_array_equal(sp.importance(w).numpy(), sp.importance(w.numpy()))
    chunks = np.concatenate(list(sp.importance_chunks(w, chunk=64)))
    np.testing.assert_array_equal(chunks, sp.importance(w.numpy()).ravel())


def test_thresholds_by_hand():
    values = np.array([0.5, 0.1, 0.4, 0.2, 0.3], dtype=np.float32)  # sorted: .1 .2 .3 .4 .5
    assert sp.threshold_by_sort([values], 0.5) == pytest.approx(0.3)  # index int(4 * .5) = 2
    assert sp.local_threshold(values, 0.7) == pytest.approx(0.3)  # int(2.8) = 2
    assert sp.local_threshold(values, 0.75) == pytest.approx(0.4)
    assert sp.local_threshold(values, 0.0) == -math.inf  # level 0 masks nothing
    mask = sp.binary_mask(values, sp.local_threshold(values, 0.5))
    np.testing.assert_array_equal(mask, [True, False, True, False, False])
    assert sp.sparsity_of(mask) == pytest.approx(0.6)  # ties at the threshold are masked


@pytest.mark.parametrize("level", [0.0, 0.1, 0.5, 0.73, 0.999])
@pytest.mark.parametrize("case", ["normal", "ties", "zeros", "constant", "tiny_cap"])
def test_global_threshold_equals_the_sort(case, level):
    rng = np.random.default_rng(len(case) * 31 + int(level * 1000))
    sizes = [1000, 1, 7, 5000, 333]
    if case == "ties":  # few distinct values: every bin is one value
        layers = [rng.integers(0, 5, size=s).astype(np.float32) / 7 for s in sizes]
    elif case == "zeros":  # most values equal (previously masked weights)
        layers = [np.where(rng.random(s) < 0.8, 0, np.abs(rng.normal(size=s))).astype(np.float32) for s in sizes]
    elif case == "constant":
        layers = [np.full(s, 0.25, np.float32) for s in sizes]
    else:
        layers = [np.abs(rng.normal(scale=rng.uniform(0.01, 3), size=s)).astype(np.float32) for s in sizes]
    cap = 3 if case == "tiny_cap" else None  # forces several narrowing passes

    def chunks():
        for layer in layers:
            yield from (layer[i : i + 256] for i in range(0, layer.size, 256))

    got = sp.global_threshold(chunks, level, bins=16 if case == "tiny_cap" else sp.BINS, cap=cap)
    assert got == sp.threshold_by_sort(layers, level)


def test_global_threshold_never_holds_more_than_cap_values(monkeypatch):
    rng = np.random.default_rng(1)
    layers = [np.abs(rng.normal(size=20_000)).astype(np.float32) for _ in range(5)]
    sizes = []
    original = np.concatenate

    def spy(arrays, *args, **kwargs):
        out = original(arrays, *args, **kwargs)
        sizes.append(out.size)
        return out

    monkeypatch.setattr(sp.np, "concatenate", spy)
    got = sp.global_threshold(lambda: iter(layers), 0.6, bins=64, cap=500)
    monkeypatch.undo()
    assert got == sp.threshold_by_sort(layers, 0.6)
    assert sizes and max(sizes) <= 500


@pytest.mark.parametrize("level", [-0.1, 1.0, 1.5, "x", None])
def test_levels_outside_zero_one_are_refused(level):
    with pytest.raises(ValidationError, match=r"in \[0, 1\)"):
        sp.local_threshold(np.ones(3), level)
    with pytest.raises(ValidationError, match=r"in \[0, 1\)"):
        sp.global_threshold(lambda: iter([np.ones(3)]), level)


def test_no_weights_is_an_error():
    with pytest.raises(ValidationError, match="no weights"):
        sp.global_threshold(lambda: iter([]), 0.5)


def test_rb_constants():
    assert sp.RB_INIT_LOGIT == pytest.approx(4.59512, abs=1e-5)
    assert 1 / (1 + math.exp(-sp.RB_INIT_LOGIT)) == pytest.approx(0.99)


def test_rb_masks_stochastic_and_deterministic_by_hand():
    m = np.array([2.0, -2.0, 0.1], dtype=np.float64)
    np.testing.assert_array_equal(sp.rb_mask(m), [1, 0, 1])
    # sigmoid(m + logit(u)) > 0.5  <=>  m + logit(u) > 0  <=>  u > sigmoid(-m)
    u = np.array([0.5, 0.95, 0.3])  # logit: 0, 2.94, -0.85
    np.testing.assert_array_equal(sp.rb_mask(m, u), [1, 1, 0])
    # u clipped to [eps, 1-eps]: logit(0) would be -inf and would drop even a huge logit
    np.testing.assert_array_equal(sp.rb_mask(np.array([20.0]), np.array([0.0])), [1])
    assert float(sp.rb_noise_logit(np.array(0.0))) == pytest.approx(math.log(1e-6 / (1 - 1e-6)))


def test_ste_threshold_is_exact_and_passes_gradients():
    p = torch.tensor([0.3, 0.5, 0.51, 0.99, 0.999999], requires_grad=True)
    hard = sp.ste_threshold(p)
    assert hard.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    hard.backward(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert p.grad.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    bf = sp.ste_threshold(torch.tensor([0.7, 0.2], dtype=torch.bfloat16))
    assert bf.dtype is torch.bfloat16 and bf.tolist() == [1.0, 0.0]


def test_rb_losses_by_hand():
    # K/N = 0.6, target level 0.5 -> density 0.5: ((0.6 - 0.5) / 0.05)^2 = 4
    assert sp.rb_loss(60.0, 100, 0.5) == pytest.approx(4.0)
    assert sp.rb_loss(50.0, 100, 0.5) == pytest.approx(0.0)
    assert sp.rb_loss(60.0, 100, 0.5, p=0.1) == pytest.approx(1.0)
    # layers 0.6 vs 0.5 and 0.3 vs 0.5: (-(0.1 + 0.2) / 0.05)^2 = 36
    assert sp.rb_local_loss([6.0, 3.0], [10, 10], [0.5, 0.5]) == pytest.approx(36.0)
    logits = torch.tensor([3.0, -1.0, 0.5, -4.0], requires_grad=True)
    kept = sp.rb_kept(logits)
    assert kept.item() == 2.0
    loss = sp.rb_loss(kept, 4, 0.75)  # ((0.5 - 0.25) / 0.05)^2 = 25
    assert loss.item() == pytest.approx(25.0)
    loss.backward()
    assert logits.grad.abs().sum() > 0  # STE: the loss reaches the logits
