"""to_numpy: values taken out of a run are copies that later in-place ops cannot change."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nncompress.backends.torch.inputs import to_numpy  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.bool])
def test_to_numpy_copies_even_when_no_conversion_is_needed(dtype):
    tensor = torch.tensor([[-1, 2], [3, 0]]).to(dtype)
    value = to_numpy(tensor)
    expected = value.copy()
    tensor.zero_()
    np.testing.assert_array_equal(value, expected)
    assert not np.shares_memory(value, tensor.numpy())


def test_to_numpy_of_a_view_and_of_half_precision():
    base = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    view = to_numpy(base.t())
    base.relu_().mul_(0)
    np.testing.assert_array_equal(view, np.arange(6, dtype=np.float32).reshape(2, 3).T)
    half = to_numpy(torch.tensor([1.5, -2.0], dtype=torch.float16))
    assert half.dtype == np.float32 and half.tolist() == [1.5, -2.0]
