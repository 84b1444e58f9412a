"""Op names and kinds of the callables the hook mode intercepts, aten OpOverloads included."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from nncompress.backends.torch.op_map import func_info, op_spec  # noqa: E402
from nncompress.graph.ops import OpKind  # noqa: E402


def test_aten_overloads_are_named_like_their_functional_forms():
    aten = torch.ops.aten
    assert func_info(aten.conv2d.default).name == "conv2d" == func_info(torch.nn.functional.conv2d).name
    assert func_info(aten.add.Tensor).name == "add" and not func_info(aten.add.Tensor).inplace
    assert func_info(aten.add_.Tensor).inplace and func_info(aten.add_.Tensor).base == "add"
    assert func_info(aten.linear.default).qualified == "torch.ops.aten.linear.default"


def test_aten_embedding_takes_its_weight_first():
    weight, ids = torch.zeros(10, 4), torch.zeros(2, 3, dtype=torch.long)
    spec = op_spec(func_info(torch.ops.aten.embedding.default), [weight, ids], [False, True], (weight, ids), {})
    assert spec.kind is OpKind.EMBEDDING and spec.weight.port == 0 and spec.weight.shape == (10, 4)
    functional = op_spec(func_info(torch.nn.functional.embedding), [ids, weight], [True, False], (ids, weight), {})
    assert functional.kind is OpKind.EMBEDDING and functional.weight.port == 1
