"""graph.edits: every edit kind has a stage; ordered() sorts lists stably and checks streams lazily."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.errors import ValidationError
from nncompress.graph.edits import (
    AddLowRankCorrection,
    CompressWeight,
    EditStream,
    FakeQuantParams,
    InsertMultiply,
    QuantizeActivation,
    QuantizeWeight,
    SetConstant,
    Stage,
    ordered,
    stage_of,
)
from nncompress.graph.ir import InputRef, TensorRef

PARAMS = FakeQuantParams(np.float32(-1), np.float32(1), 256)
T = TensorRef("relu", 0)


def quantize_act(name: str = "q") -> QuantizeActivation:
    return QuantizeActivation(T, None, PARAMS, name)


def quantize_weight(node: str = "conv") -> QuantizeWeight:
    return QuantizeWeight(node, 1, PARAMS, f"{node}/w")


def set_constant(node: str = "conv", port: int = 2) -> SetConstant:
    return SetConstant(node, port, np.zeros(3, np.float32))


def multiply(name: str = "m") -> InsertMultiply:
    return InsertMultiply(T, (InputRef("conv", 0),), np.float32(2), name)


def compress(node: str = "fc") -> CompressWeight:
    return CompressWeight(node, 1, None, f"{node}/weight")  # the weight object is not read by ordered()


def lora(node: str = "fc") -> AddLowRankCorrection:
    return AddLowRankCorrection(node, 0, np.zeros((2, 4)), np.zeros((4, 2)), f"{node}/lora")


def test_every_edit_kind_has_its_stage_and_masks_sit_between_transforms_and_quantizers():
    edits = (set_constant(), multiply(), quantize_weight(), compress(), lora(), quantize_act())
    assert [stage_of(e) for e in edits] == [
        Stage.SET_CONSTANT, Stage.TRANSFORM, Stage.WEIGHT_QUANTIZER, Stage.WEIGHT_QUANTIZER, Stage.CORRECTION,
        Stage.ACTIVATION_QUANTIZER,
    ]
    assert Stage.TRANSFORM < Stage.PRUNING_MASK < Stage.SPARSITY_MASK < Stage.WEIGHT_QUANTIZER
    assert Stage.SPARSITY_MASK < Stage.ACTIVATION_QUANTIZER
    with pytest.raises(ValidationError, match="is not an edit"):
        stage_of("SetConstant")


def test_ordered_sorts_a_list_by_stage_and_keeps_the_given_order_within_a_stage():
    q1, q2, w, c1, c2, m = quantize_act("q1"), quantize_act("q2"), quantize_weight(), set_constant("a"), \
        set_constant("b"), multiply()
    given = [q1, w, c1, q2, m, c2]
    result = ordered(given)
    assert [id(e) for e in result] == [id(e) for e in (c1, c2, m, w, q1, q2)]
    assert [id(e) for e in given] == [id(e) for e in (q1, w, c1, q2, m, c2)]  # the input list is not sorted in place
    with pytest.raises(ValidationError, match="is not an edit"):
        ordered([q1, object()])


def test_ordered_stream_stays_lazy_and_passes_items_in_arrival_order():
    pulled = []

    def produce():
        for edit in (compress("a"), lora("a"), set_constant("b", 1), compress("c")):
            pulled.append(edit.node)
            yield edit

    stream = EditStream(produce(), options={"onnx_accuracy_level": 4})
    result = ordered(stream)
    assert isinstance(result, EditStream) and result.options == {"onnx_accuracy_level": 4}
    assert pulled == []  # nothing produced until the backend asks
    iterator = iter(result)
    first = next(iterator)
    assert (type(first), first.node, pulled) == (CompressWeight, "a", ["a"])  # one item at a time
    rest = list(iterator)
    # a SetConstant after a CompressWeight of another place is fine: the stream is not re-sorted
    assert [type(e).__name__ for e in rest] == ["AddLowRankCorrection", "SetConstant", "CompressWeight"]


def test_ordered_stream_raises_when_a_place_gets_an_earlier_stage_after_a_later_one():
    stream = ordered(EditStream(iter([compress("a"), set_constant("b", 1), set_constant("a", 1)])))
    seen = []
    with pytest.raises(ValidationError, match="out of stage order: SetConstant"):
        for edit in stream:
            seen.append(edit)
    assert len(seen) == 2  # the first two were carried out before the third was checked
