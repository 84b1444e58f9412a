"""numerics.xp: the array shim dispatches on the argument's type and needs no torch for numpy."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from nncompress.numerics import xp

NO_TORCH = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import numpy as np
from nncompress.numerics.decode import decode
from nncompress.numerics.fake_quant import fake_quantize
from nncompress.numerics import lowbit, qat, qparams
from nncompress.parameters import CompressWeightsMode as Mode
y = fake_quantize(np.float32([0.3, -2.0]), np.float32(0.5), None, -2, 1)
w = decode(np.array([0xF0], np.uint8), Mode.INT4_ASYM, (2,), (2,), np.float32([1.0]), np.uint8([8]))
print(y.tolist(), w.tolist())
print(float(qat.asymmetric_grid(np.float64(-0.2), np.float64(1.0), 0, 255)[1]))
"""


def test_numerics_imports_and_runs_without_torch():
    done = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[0.5,", "-1.0]", "[-8.0,", "7.0]", "51.0"]


def test_numpy_operations():
    x = np.array([0.5, 1.5, -2.5, 3.2], np.float32)
    assert not xp.is_torch(x)
    assert xp.round_(x.copy()).tolist() == [0.0, 2.0, -2.0, 3.0]  # half to even
    assert xp.clip(x, -1, 1).tolist() == [0.5, 1.0, -1.0, 1.0]
    table = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert xp.take_rows(table, np.array([[2, 0]])).tolist() == [[[4.0, 5.0], [0.0, 1.0]]]
    small = np.ones(2, np.float32)
    assert xp.imul(small, np.float32([[1], [2]])).shape == (2, 2)  # a broadcast result is a new array
    assert small.tolist() == [1.0, 1.0]


def test_torch_operations_match_numpy():
    torch = pytest.importorskip("torch")
    x = np.array([0.5, 1.5, -2.5, 3.2], np.float32)
    t = torch.from_numpy(x.copy())
    assert xp.is_torch(t)
    assert xp.round_(t.clone()).tolist() == xp.round_(x.copy()).tolist()
    assert xp.round_ste(t).tolist() == np.rint(x).tolist()
    table = np.arange(6, dtype=np.float32).reshape(3, 2)
    index = np.array([[2, 0]], np.uint8)
    got = xp.take_rows(torch.from_numpy(table), torch.from_numpy(index))
    assert got.tolist() == xp.take_rows(table, index).tolist()
    constant = xp.constant(lambda key: np.full(2, key, np.float32), 3.0, torch.empty(0, device="meta"))
    assert (constant.device.type, tuple(constant.shape)) == ("meta", (2,))


def test_sum_to_where_and_rint_agree_across_numpy_and_torch():
    torch = pytest.importorskip("torch")
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 11.5
    for shape, want in (((1,), [x.sum()]), ((1, 3, 1), x.sum(axis=(0, 2)).reshape(1, 3, 1)), ((3, 1), None)):
        want = x.sum(axis=(0, 2), keepdims=True).reshape(3, 1) if want is None else np.asarray(want)
        np.testing.assert_allclose(xp.sum_to(x, shape), want)
        np.testing.assert_allclose(xp.sum_to(torch.from_numpy(x), shape).numpy(), want)
    assert xp.rint(np.array([0.5, 1.5, -2.5])).tolist() == [0.0, 2.0, -2.0]
    assert xp.rint(torch.tensor([0.5, 1.5, -2.5])).tolist() == [0.0, 2.0, -2.0]
    assert xp.where(torch.tensor([True, False]), torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])).tolist() == [1, 4]
