"""Per-call state lives in the call: two threads compressing one model get the single-threaded result,
and nothing keeps the user's model or data alive after a call returns (every backend)."""

from __future__ import annotations

import gc
import sys
import threading
import weakref

import numpy as np
import pytest

import nncompress as nncf
from nncompress.backends.registry import get_adapter
from tests.weights import models

BACKENDS = ["torch", "onnx", "openvino"]
CALLS = {
    "quantize": lambda model, data: nncf.quantize(model, data, subset_size=6),
    "compress_weights": lambda model, data: nncf.compress_weights(
        model, mode="int4_asym", group_size=16, ratio=0.6, dataset=data, awq=True, scale_estimation=True
    ),
}


def _model(backend: str):
    pytest.importorskip({"torch": "torch", "onnx": "onnxruntime", "openvino": "openvino"}[backend])
    return {"torch": models.torch_model, "onnx": models.onnx_model, "openvino": models.openvino_model}[backend]()


def _item(backend: str, seed: int):
    item = models.inputs(seed)
    if backend == "torch":
        import torch

        return {k: torch.from_numpy(v) for k, v in item.items()}
    return item


def _outputs(model, items) -> list[np.ndarray]:
    adapter = get_adapter(model)
    return [out for item in items for out in adapter.infer(model, item)]


def _in_threads(work, count: int = 2) -> list:
    start = threading.Barrier(count, timeout=60)
    results: list = [None] * count

    def run(index: int) -> None:
        try:
            start.wait()
            results[index] = work()
        except Exception as exc:  # the assertion below shows it
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_two_threads_on_one_model_give_the_single_threaded_result(backend, call):
    model = _model(backend)
    data = nncf.Dataset([_item(backend, seed) for seed in range(6)])
    tests = [_item(backend, 100 + seed) for seed in range(2)]
    before = _outputs(model, tests)
    expected = _outputs(CALLS[call](model, data), tests)
    for result in _in_threads(lambda: CALLS[call](model, data)):
        assert not isinstance(result, Exception), repr(result)
        for got, want in zip(_outputs(result, tests), expected):
            np.testing.assert_array_equal(got, want)
    for got, want in zip(_outputs(model, tests), before):  # the input model is untouched
        np.testing.assert_array_equal(got, want)
    assert any(not np.array_equal(a, b) for a, b in zip(expected, before))  # it was compressed


def test_two_threads_quantize_a_pytorch_model_in_training_mode():
    """Dropout and BatchNorm: the threads' eval-mode runs overlap; the flags come back as the user set them."""
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                          nn.Linear(8 * 6 * 6, 4)).train()
    data = nncf.Dataset([torch.randn(2, 3, 8, 8) for _ in range(8)])
    x = torch.randn(3, 3, 8, 8)
    expected = nncf.quantize(model, data, subset_size=8).eval()(x)
    for result in _in_threads(lambda: nncf.quantize(model, data, subset_size=8), count=3):
        assert not isinstance(result, Exception), repr(result)
        assert result.training  # a copy of a model in training mode
        torch.testing.assert_close(result.eval()(x), expected, rtol=0, atol=0)
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("call", list(CALLS) + ["compress_weights_data_free"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_nothing_keeps_the_model_or_the_example_input_alive(backend, call):
    model = _model(backend)
    items = [_item(backend, seed) for seed in range(6)]
    item_refs = [weakref.ref(value) for item in items for value in item.values()]
    data = nncf.Dataset(items)
    refcount = sys.getrefcount(model)
    run = CALLS.get(call) or (lambda m, d: nncf.compress_weights(m, mode="int4_sym", group_size=16))
    result = run(model, data)
    assert result is not model
    gc.collect()
    assert sys.getrefcount(model) == refcount  # (a ModelProto cannot be weakly referenced)
    if backend != "onnx":
        model_ref = weakref.ref(model)
        del model
        gc.collect()
        assert model_ref() is None
    del items, data
    gc.collect()
    assert all(ref() is None for ref in item_refs)  # the example input (first item) included
    assert get_adapter(result) is not get_adapter(result)  # one adapter per call


@pytest.mark.parametrize("call", list(CALLS))
def test_three_threads_run_one_compressed_pytorch_model(call):
    """Hooked forwards name ops per thread and compressed weights stay decompressed while any thread
    runs the layer: concurrent forwards give the single-threaded outputs."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class Late(nn.Module):
        """A layer reading its own weight after some work (a wide window for another thread's forward)."""

        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(16, 16) / 4)

        def forward(self, x):
            for _ in range(10):
                x = torch.tanh(x) * 1.5
            return nn.functional.linear(x, self.weight)

    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Sequential(Late(), nn.Linear(16, 16), nn.GELU()) for _ in range(4)],
                          nn.Linear(16, 4)).eval()
    quantized = CALLS[call](model, nncf.Dataset([torch.randn(2, 16) for _ in range(4)]))
    x = torch.randn(2, 16)
    with torch.no_grad():
        expected = quantized(x)

    def work():
        with torch.no_grad():
            return [quantized(x) for _ in range(20)]

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: forwards interleave op by op
    try:
        results = _in_threads(work, count=3)
    finally:
        sys.setswitchinterval(interval)
    for outputs in results:
        assert not isinstance(outputs, Exception), repr(outputs)
        for out in outputs:
            torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_each_thread_reads_the_report_of_its_own_call():
    model = _model("onnx")
    data = nncf.Dataset([_item("onnx", seed) for seed in range(6)])
    start = threading.Barrier(2, timeout=60)

    done = threading.Barrier(2, timeout=60)

    def work(call):
        start.wait()
        CALLS[call](model, data)
        done.wait()  # both calls have set a report by now
        return nncf.last_report().algorithm

    seen = {}
    threads = [threading.Thread(target=lambda c=c: seen.__setitem__(c, work(c))) for c in CALLS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {"quantize": "PostTrainingQuantization", "compress_weights": "WeightCompression"}
    assert nncf.last_report().algorithm in seen.values()  # this thread made no call: the latest one
