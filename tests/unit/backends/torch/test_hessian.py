"""The Hutchinson estimate of the average Hessian trace against the exact trace by autograd."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nncompress.backends.torch.hessian import exact_hessian_traces, hutchinson_traces, rademacher_like
from nncompress.errors import CalibrationError


def _setup():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(256, 6), torch.randn(256, 3)
    params = [net[0].weight, net[2].weight]
    batches = [(x[i:i + 128], y[i:i + 128]) for i in range(0, 256, 128)]

    def closure(index):
        xb, yb = batches[index]
        return nn.functional.mse_loss(net(xb), yb), params, len(xb)

    return net, x, y, params, closure


@pytest.mark.slow
def test_hutchinson_matches_exact_trace_within_5_percent():
    net, x, y, params, closure = _setup()
    exact = exact_hessian_traces(lambda: nn.functional.mse_loss(net(x), y), params)
    estimate, iterations = hutchinson_traces(closure, 2, iter_number=600, tolerance=0.0, seed=1)
    assert iterations == 600
    for e, h in zip(exact, estimate):
        assert e > 0
        assert abs(h - e) / e < 0.05, (exact, estimate)


def test_exact_trace_of_a_quadratic():
    # loss = 0.5 * sum(a * w^2): Hessian diag(a), average trace mean(a)
    w = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    a = torch.tensor([2.0, 4.0, 6.0])
    assert exact_hessian_traces(lambda: 0.5 * (a * w * w).sum(), [w]) == pytest.approx([4.0])
    # diagonal Hessian: every Rademacher sample gives the trace exactly
    traces, _ = hutchinson_traces(lambda i: (0.5 * (a * w * w).sum(), [w], 1), 1, iter_number=3, tolerance=0.0)
    assert traces == pytest.approx([4.0])


def test_tolerance_stops_early_on_a_constant_estimate():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    traces, iterations = hutchinson_traces(lambda i: ((w * w).sum(), [w], 4), 2, iter_number=50, tolerance=1e-4)
    assert traces == pytest.approx([2.0])
    assert iterations == 2  # the second iteration changes nothing


def test_rademacher_entries_are_plus_minus_one():
    g = torch.Generator()
    g.manual_seed(0)
    v = rademacher_like(torch.zeros(1000), g)
    assert set(v.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(v.mean())) < 0.1


def test_no_iterations_is_refused():
    w = torch.ones(2, requires_grad=True)
    with pytest.raises(CalibrationError, match="iter_number=0"):
        hutchinson_traces(lambda i: ((w * w).sum(), [w], 1), 1, iter_number=0)
