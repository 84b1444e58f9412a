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
    assert [n.name for n in graph][1:5] == ["mul/0", "sub/0", "add_/0", "relu/relu/0"]
    wanted = [TensorRef("sub/0", 0), TensorRef("add_/0", 0), TensorRef("relu/relu/0", 0)]
    seen = []
    adapter.collect(model, wanted, [x], seen.append)
    values = seen[0]
    np.testing.assert_array_equal(values[wanted[0]], [[-3.0, -0.5, 3.0]])
    np.testing.assert_array_equal(values[wanted[1]], [[-4.0, -0.25, 5.0]])
    np.testing.assert_array_equal(values[wanted[2]], [[0.0, 0.0, 5.0]])


class ComputedBias(torch.nn.Module):
    """A bias-free conv whose bias is added in forward from a reshaped parameter."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, bias=False)
        self.b = torch.nn.Parameter(torch.randn(8))

    def forward(self, x):
        return self.conv(x) + self.b.view(1, -1, 1, 1)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "full"])
def test_a_bias_added_in_forward_is_read_and_corrected(fast):
    import nncompress as nncf
    from nncompress.backends.registry import get_adapter

    torch.manual_seed(0)
    model = ComputedBias().eval()
    data = [torch.randn(1, 3, 8, 8) + 0.5 for _ in range(8)]
    example = data[0]
    adapter = get_adapter(model, example_input=example)
    conv = next(n for n in adapter.build_graph(model) if n.op_type == "conv2d")
    np.testing.assert_array_equal(adapter.get_constant(model, conv.bias.node, conv.bias.port).ravel(),
                                  model.b.detach().numpy())
    plain = nncf.quantize(model, nncf.Dataset(data), subset_size=8,
                          advanced_parameters=nncf.AdvancedQuantizationParameters(disable_bias_correction=True))
    corrected = nncf.quantize(model, nncf.Dataset(data), subset_size=8, fast_bias_correction=fast)
    assert "updated 1 biases" in " ".join(nncf.last_report().notes)
    new_bias = get_adapter(corrected, example_input=example).get_constant(corrected, conv.bias.node, conv.bias.port)
    assert not np.allclose(new_bias.ravel(), model.b.detach().numpy())
    with torch.no_grad():
        batch = torch.cat(data)
        reference = model(batch)
        shift = [(q(batch) - reference).mean((0, 2, 3)).abs().max().item() for q in (plain, corrected)]
    assert shift[1] < 0.7 * shift[0]  # per channel, the mean output moves toward the float one (ONNX: same figures)
