"""Capture of in-place ops and reused modules: the same graph, placement and signedness as out-of-place code."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

import nncompress as nncf  # noqa: E402
from nncompress.backends.torch import TorchAdapter  # noqa: E402
from nncompress.backends.torch.hooks import storage_of  # noqa: E402
from nncompress.graph.ir import TensorRef  # noqa: E402
from nncompress.graph.ops import OpKind  # noqa: E402

FORMS = ["out_of_place", "iadd_module", "methods", "torch_functions", "functional_kw", "functional_positional"]


class Residual(nn.Module):
    """conv-bn, residual add, ReLU, scaling, conv: the same function written in several (in-place) forms."""

    def __init__(self, form: str):
        super().__init__()
        self.form = form
        self.stem = nn.Conv2d(3, 4, 1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=form != "out_of_place")
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        x = self.stem(x)
        out = self.bn(self.conv(x))
        if self.form == "out_of_place":
            out = self.relu(out + x) * 0.5
        elif self.form == "iadd_module":
            out += x
            out = self.relu(out)
            out *= 0.5
        elif self.form == "methods":  # return values ignored: the code relies on the mutation
            out.add_(x)
            out.relu_()
            out.mul_(0.5)
        elif self.form == "torch_functions":
            torch.relu_(torch.add(out, x))  # an extra add and relu_ whose result nobody reads
            out = torch.add(out, x)
            torch.relu_(out)
            out.mul_(0.5)
        elif self.form == "functional_kw":
            out.add_(x)
            F.relu(out, inplace=True)
            out.mul_(0.5)
        else:
            out.add_(x)
            F.relu(out, True)
            out.mul_(0.5)
        return self.head(out)


def _model(form: str, reference: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(0)
    model = Residual(form)
    if reference is None:
        with torch.no_grad():
            model.bn.running_mean.uniform_(-1, 1)
            model.bn.running_var.uniform_(0.5, 2)
            model.bn.weight.uniform_(0.5, 2)
            model.bn.bias.uniform_(-1, 1)
    else:
        model.load_state_dict(reference.state_dict())
    return model.eval()


def _data(n: int = 6) -> list:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(2, 3, 5, 5, generator=gen) for _ in range(n)]


def _structure(graph) -> list[tuple]:
    """Kinds and producer positions, independent of op names (``add/0`` vs ``add_/0``)."""
    order = {node.name: i for i, node in enumerate(graph)}
    return [(node.kind, tuple(order[r.node] if r else None for r in node.inputs)) for node in graph]


def _placement(model) -> list[tuple]:
    """Each hook as (position of its op in the graph, pre/post, port, level_low, level_high)."""
    graph = TorchAdapter(example_input=_data(1)[0]).build_graph(model)
    order = {node.name: i for i, node in enumerate(graph)}
    storage = storage_of(model)
    rows = []
    for (where, op, port), names in storage.chains.items():
        for name in names:
            module = storage.module(name)
            rows.append((order.get(op, op), where, port, module.level_low, module.level_high))
    return sorted(rows, key=str)


@pytest.fixture(scope="module")
def quantized():
    reference = _model("out_of_place")
    dataset = nncf.Dataset(_data())
    return {form: (model := _model(form, reference), nncf.quantize(model, dataset)) for form in FORMS}


def test_inplace_forms_capture_the_out_of_place_graph():
    reference = _model("out_of_place")
    expected = _structure(TorchAdapter(example_input=_data(1)[0]).build_graph(reference))
    kinds = [kind for kind, _ in expected]
    assert kinds.count(OpKind.ADD) == 1 and kinds.count(OpKind.RELU) == 1 and kinds.count(OpKind.MUL) == 1
    for form in FORMS[1:]:
        graph = TorchAdapter(example_input=_data(1)[0]).build_graph(_model(form, reference))
        if form == "torch_functions":  # one extra add + relu_ whose result nobody reads
            continue
        assert _structure(graph) == expected, form


def test_inplace_forms_get_the_out_of_place_quantizers_and_outputs(quantized):
    float_model, int8 = quantized["out_of_place"]
    expected = _placement(int8)
    assert any(row[3] < 0 for row in expected) and any(row[3] == 0 for row in expected)
    x = _data(8)[7]
    with torch.no_grad():
        reference = int8(x)
        assert not torch.allclose(reference, float_model(x), atol=1e-4)  # the quantizers act
        for form in FORMS[1:]:
            if form != "torch_functions":
                assert _placement(quantized[form][1]) == expected, form
            torch.testing.assert_close(quantized[form][1](x), reference, rtol=0, atol=0, msg=form)


def test_signed_tensor_feeding_an_inplace_add_gets_a_signed_quantizer(quantized):
    model, int8 = quantized["iadd_module"]
    outputs = []
    hook = model.bn.register_forward_hook(lambda m, i, o: outputs.append(o.detach().clone()))
    with torch.no_grad():
        for x in _data():
            model(x)
    hook.remove()
    # the default activation range: means over calibration items of the per-item min and max
    low = np.mean([float(o.min()) for o in outputs])
    high = np.mean([float(o.max()) for o in outputs])
    assert low < -0.5  # the bn output really is negative before `out += x` and relu_ change it
    absmax = max(-low, high)
    storage = storage_of(int8)
    (name,) = storage.chain("post", "bn/batch_norm/0", 0)
    quantizer = storage.module(name)
    assert quantizer.signed and quantizer.level_low == -128 and quantizer.level_high == 127
    scale, zero_point = (float(t) for t in quantizer.grid())
    assert zero_point == 0
    np.testing.assert_allclose(scale * 127, absmax, rtol=1e-5)
    assert scale * quantizer.level_low <= low  # the grid reaches down to the negative values


def test_a_module_called_twice_gets_two_op_names():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            out = self.relu(self.conv1(x))
            out = self.conv2(out)
            out += x
            return self.relu(out)

    graph = TorchAdapter(example_input=torch.randn(1, 2, 3, 3)).build_graph(Block().eval())
    relus = [node for node in graph if node.kind is OpKind.RELU]
    assert [node.name for node in relus] == ["relu/relu/0", "relu/relu/1"]
    assert relus[0].inputs == [TensorRef("conv1/conv2d/0", 0)]
    assert relus[1].inputs == [TensorRef("add_/0", 0)]
    assert graph.node("conv2/conv2d/0").inputs[0] == TensorRef("relu/relu/0", 0)
    assert graph.node("add_/0").inputs == [TensorRef("conv2/conv2d/0", 0), TensorRef("x", 0)]
