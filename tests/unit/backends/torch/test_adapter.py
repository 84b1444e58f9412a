"""Statistics of a tensor that a later in-place op changes are those of the value the op produced."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from nncompress.backends.torch import TorchAdapter  # noqa: E402
from nncompress.graph.ir import TensorRef  # noqa: E402


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = x * 2.0 - 1.0
        out += x
        return self.relu(out)


def test_collect_sees_values_before_later_inplace_ops():
    model = Block().eval()
    x = torch.tensor([[-1.0, 0.25, 2.0]])
    adapter = TorchAdapter(example_input=x)
    graph = adapter.build_graph(model)
    assert [n.name for n in graph][1:5] == ["mul_0", "sub_0", "add__0", "relu/relu_0"]
    wanted = [TensorRef("sub_0", 0), TensorRef("add__0", 0), TensorRef("relu/relu_0", 0)]
    seen = []
    adapter.collect(model, wanted, [x], seen.append)
    values = seen[0]
    np.testing.assert_array_equal(values[wanted[0]], [[-3.0, -0.5, 3.0]])
    np.testing.assert_array_equal(values[wanted[1]], [[-4.0, -0.25, 5.0]])
    np.testing.assert_array_equal(values[wanted[2]], [[0.0, 0.0, 5.0]])
