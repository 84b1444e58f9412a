"""The hook mode: per-thread scope tracking without touching the user's modules; hooks on in-place ops
(every later read of the changed tensor sees the hooked value; autograd still works)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn.modules import module as module_globals  # noqa: E402

from nncompress.backends.torch import TorchAdapter  # noqa: E402
from nncompress.backends.torch.capture import capture_graph  # noqa: E402
from nncompress.backends.torch.op_map import func_info, mutates_first  # noqa: E402
from nncompress.graph.edits import FakeQuantParams, QuantizeActivation  # noqa: E402
from nncompress.graph.ir import InputRef, TensorRef  # noqa: E402


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
    assert "blocks/5/0/linear/0" in expected and "head/linear/0" in expected
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


STEP = 0.5  # grid [-64, 63.5] in steps of 0.5 (256 levels, signed)


def _quantizer(name: str, tensor: TensorRef, consumers=None) -> QuantizeActivation:
    params = FakeQuantParams(np.float32(-64.0), np.float32(63.5), 256, None, signed=True)
    return QuantizeActivation(tensor, consumers, params, name)


def _snap(t: torch.Tensor) -> torch.Tensor:
    return torch.round(t / STEP) * STEP


class AddThenRead(nn.Module):
    """``y.add_(x)`` with the return value ignored; later ops read ``y``."""

    def forward(self, x):
        y = x * 3.0
        y.add_(x)
        return y * 1.0, y.sum()


def _hooked(model, edits, example):
    adapter = TorchAdapter(example_input=example)
    adapter.build_graph(model)
    return adapter.apply(model, edits)


def test_post_hook_on_an_inplace_op_reaches_every_later_read():
    x = torch.tensor([[0.1, 0.3, -0.7]])
    hooked = _hooked(AddThenRead(), [_quantizer("q", TensorRef("add_/0", 0))], x)
    scaled, total = hooked(x)
    expected = _snap(4 * x)
    torch.testing.assert_close(scaled, expected, rtol=0, atol=0)
    torch.testing.assert_close(total, expected.sum(), rtol=0, atol=0)
    assert not torch.equal(expected, 4 * x)  # the quantizer changes the values


def test_pre_hook_on_the_changed_input_of_an_inplace_op():
    x = torch.tensor([[0.1, 0.3, -0.7]])
    edit = _quantizer("q", TensorRef("mul/0", 0), consumers=(InputRef("add_/0", 0),))
    hooked = _hooked(AddThenRead(), [edit], x)
    scaled, total = hooked(x)
    expected = _snap(3 * x) + x  # add_ runs on the quantized value; later reads see its result
    torch.testing.assert_close(scaled, expected, rtol=0, atol=0)
    torch.testing.assert_close(total, expected.sum(), rtol=0, atol=0)


class SetItem(nn.Module):
    def forward(self, x):
        y = x * 1.0
        y[:, 0] = 0.3
        return y + 0.0


def test_post_hook_on_setitem_applies_to_the_written_tensor():
    x = torch.tensor([[0.1, 0.7, -0.7]])
    hooked = _hooked(SetItem(), [_quantizer("q", TensorRef("setitem/0", 0))], x)
    torch.testing.assert_close(hooked(x), _snap(torch.tensor([[0.3, 0.7, -0.7]])), rtol=0, atol=0)


class InplaceReluBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.conv(x)
        out += x
        return self.relu(out).mean()


def test_training_through_hooked_inplace_ops_keeps_gradients():
    torch.manual_seed(0)
    model = InplaceReluBlock()
    x = torch.randn(2, 2, 3, 3)
    edits = [_quantizer("q", TensorRef("relu/relu/0", 0)), _quantizer("p", TensorRef("conv/conv2d/0", 0))]
    hooked = _hooked(model, edits, x)
    for quantizer in hooked._nncompress_hooks.hooks.values():
        for p in quantizer.parameters():
            p.requires_grad_(True)  # trainable ranges: the quantizers save their inputs for backward
    loss = hooked(x.requires_grad_(True))
    loss.backward()
    assert hooked.conv.weight.grad is not None and torch.isfinite(hooked.conv.weight.grad).all()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_mutates_first_knows_the_inplace_spellings():
    f = torch.nn.functional
    x = torch.zeros(1)

    def mutates(func, *args, **kwargs):
        return mutates_first(func, func_info(func), args, kwargs)

    assert mutates(torch.Tensor.add_, x, x) and mutates(torch.relu_, x)
    assert mutates(torch.Tensor.__setitem__, x, 0, 1.0)
    assert mutates(f.relu, x, inplace=True) and mutates(f.relu, x, True) and mutates(f.hardtanh, x, -1.0, 1.0, True)
    assert not mutates(f.relu, x) and not mutates(f.relu, x, False) and not mutates(torch.add, x, x)
    assert not mutates(f.dropout, x, 0.5, True)  # ``training``, not ``inplace``


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv1(x)) + x


class _Named(nn.Module):
    """Ops in nested modules, a module called twice and ops of the root's own forward."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.layer1 = nn.Sequential(_Block(), _Block())
        self.lm_head = nn.Linear(4, 5)

    def forward(self, x):
        x = self.layer1(torch.relu(self.stem(x)))
        x = self.layer1[1](x)
        return self.lm_head(torch.relu(x).mean((2, 3)))


def test_op_names_follow_nncf_scheme_module_path_op_call_index():
    graph = capture_graph(_Named().eval(), torch.randn(1, 3, 8, 8)).graph
    names = [n.name for n in graph if n.kind.name not in ("INPUT", "OUTPUT")]
    assert names == [
        "stem/conv2d/0", "relu/0",
        "layer1/0/conv1/conv2d/0", "layer1/0/relu/0", "layer1/0/add/0",
        "layer1/1/conv1/conv2d/0", "layer1/1/relu/0", "layer1/1/add/0",
        "layer1/1/conv1/conv2d/1", "layer1/1/relu/1", "layer1/1/add/1",  # the second call of layer1[1]
        "relu/1", "mean/0", "lm_head/linear/0",
    ]


def test_nncf_style_ignored_scope_names_and_patterns_match_and_the_report_uses_them():
    import nncompress as nncf
    from nncompress.errors import ValidationError

    torch.manual_seed(0)
    model = _Named().eval()
    data = nncf.Dataset([torch.randn(1, 3, 8, 8) for _ in range(2)])
    scope = nncf.IgnoredScope(names=["layer1/0/conv1/conv2d/0", "lm_head/linear/0"], patterns=[r"stem/.*"])
    nncf.quantize(model, data, subset_size=2, ignored_scope=scope, fast_bias_correction=False)
    report = nncf.last_report()
    assert {"layer1/0/conv1/conv2d/0", "lm_head/linear/0", "stem/conv2d/0"} <= set(report.skipped)
    quantized = [name for name, _ in report.quantized]
    assert "layer1/1/conv1/conv2d/0/fq_weights_1" in quantized
    assert not any(name.startswith(("layer1/0/conv1/conv2d/0/", "lm_head/", "stem/")) for name in quantized)
    old_style = nncf.IgnoredScope(names=["layer1.0.conv1/conv2d_0"])
    hint = r"'layer1\.0\.conv1/conv2d_0' \(closest names: 'layer1/0/conv1/conv2d/0'"
    with pytest.raises(ValidationError, match=hint):
        nncf.quantize(model, data, subset_size=2, ignored_scope=old_style)
