"""Scope tracking of the hook mode: per thread, without touching the user's modules."""

from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn.modules import module as module_globals  # noqa: E402

from nncompress.backends.torch.capture import capture_graph  # noqa: E402


class Blocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(16, 16), nn.GELU()) for _ in range(6)])
        self.head = nn.Linear(16, 4)
        self.hooks_seen: list[int] = []

    def forward(self, x):
        self.hooks_seen.append(sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in self.modules()))
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


def test_two_threads_capture_one_model_with_the_single_threaded_names():
    torch.manual_seed(0)
    model = Blocks().eval()
    expected = capture_graph(model, torch.randn(2, 16)).graph.dump()
    assert "blocks.5.0/linear_0" in expected and "head/linear_0" in expected
    start = threading.Barrier(2, timeout=30)
    dumps: list[list[str]] = [[], []]
    errors = []

    def run(index: int) -> None:
        try:
            start.wait()
            for _ in range(15):
                dumps[index].append(capture_graph(model, torch.randn(2, 16)).graph.dump())
        except Exception as exc:  # reported below with the thread's result
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert all(dump == expected for dump in dumps[0] + dumps[1])


def test_scope_hooks_leave_the_users_modules_alone_and_go_away_after_the_run():
    model = Blocks().eval()
    capture_graph(model, torch.randn(2, 16))
    assert model.hooks_seen == [0]  # no hook on the user's modules, even while the model ran
    assert not module_globals._global_forward_pre_hooks and not module_globals._global_forward_hooks
