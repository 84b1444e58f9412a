"""Carrying out neutral edits on a clone of an OpenVINO model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from nncompress.errors import ValidationError
from nncompress.graph.edits import (
    AddLowRankCorrection,
    CompressWeight,
    Edit,
    FakeConvertParams,
    FakeQuantParams,
    InsertMultiply,
    MaskWeight,
    QuantizeActivation,
    QuantizeWeight,
    SetConstant,
    ordered,
)
from nncompress.graph.ir import InputRef, TensorRef
from nncompress.numerics.qparams import quantize_to_int

from . import weight_storage
from .folding import ConstantEvaluator
from .naming import NameIndex


def apply_edits(model: ov.Model, edits: Sequence[Edit]) -> ov.Model:
    """A clone of ``model`` with ``edits`` carried out in stage order (``graph.edits.ordered``); ``model``
    is untouched. An ``EditStream`` is consumed one edit at a time."""
    clone = model.clone()
    editor = _Editor(clone)
    for edit in ordered(edits):
        editor.apply(edit)
    clone.validate_nodes_and_infer_types()
    return clone


def _channel_shape(rank: int, axis: int | None, size: int) -> list[int]:
    """Shape that puts ``size`` values on ``axis`` of a rank-``rank`` tensor ([] when per-tensor)."""
    if axis is None:
        return []
    shape = [1] * rank
    shape[axis % rank] = size
    return shape


def _const(values: np.ndarray, element_type: ov.Type, name: str) -> ov.Node:
    # C order: ``ops.constant`` reads a transposed array's buffer as if it were C-ordered
    node = ops.constant(np.ascontiguousarray(values, dtype=element_type.to_dtype()), element_type)
    node.set_friendly_name(name)
    return node


class _Editor:
    """Resolves names on the clone once, then performs edits on it."""

    def __init__(self, model: ov.Model):
        self.model = model
        self.index = NameIndex(model)

    def apply(self, edit: Edit) -> None:
        if isinstance(edit, QuantizeActivation):
            self.quantize_activation(edit)
        elif isinstance(edit, QuantizeWeight):
            self.quantize_weight(edit)
        elif isinstance(edit, SetConstant):
            self.set_constant(edit)
        elif isinstance(edit, InsertMultiply):
            self.insert_multiply(edit)
        elif isinstance(edit, MaskWeight):
            self.mask_weight(edit)
        elif isinstance(edit, (CompressWeight, AddLowRankCorrection)):
            weight_storage.apply(self, edit)
        else:
            raise ValidationError(f"unknown edit {edit!r}")

    def _output(self, ref: TensorRef) -> ov.Output:
        op = self.index.op(ref.node)
        if op.get_type_name() == "Result":
            return op.input_value(0)
        if ref.port >= op.get_output_size():
            raise ValidationError(f"{ref.node!r} has no output {ref.port}")
        return op.output(ref.port)

    def _input(self, ref: InputRef) -> ov.Input:
        op = self.index.op(ref.node)
        if ref.port >= op.get_input_size():
            raise ValidationError(f"{ref.node!r} has no input {ref.port}")
        return op.input(ref.port)

    def quantize_activation(self, edit: QuantizeActivation) -> None:
        source = self._output(edit.tensor)
        if edit.consumers is None:
            targets = list(source.get_target_inputs())
            fq = _fake_quantize(source, edit.params, f"{edit.tensor.node}/fq_output_{edit.tensor.port}")
            for target in targets:
                target.replace_source_output(fq.output(0))
            return
        for ref in edit.consumers:
            target = self._input(ref)
            fq = _fake_quantize(target.get_source_output(), edit.params, f"{ref.node}/fq_input_{ref.port}")
            target.replace_source_output(fq.output(0))

    def quantize_weight(self, edit: QuantizeWeight) -> None:
        target = self._input(InputRef(edit.node, edit.port))
        if isinstance(edit.params, FakeConvertParams):  # FP8: FakeConvert on the float weight, as the reference
            converted = _fake_quantize(target.get_source_output(), edit.params, f"{edit.node}/fc_weight_{edit.port}")
            target.replace_source_output(converted.output(0))
            return
        weight = ConstantEvaluator().array(target.get_source_output())
        dequantized = _int_weight(weight, edit.params, target.get_element_type(), f"{edit.node}/{edit.port}")
        target.replace_source_output(dequantized)

    def set_constant(self, edit: SetConstant) -> None:
        target = self._input(InputRef(edit.node, edit.port))
        value = np.asarray(edit.value)
        shape = target.get_partial_shape()
        if shape.is_static and list(value.shape) != list(shape.to_shape()):
            if value.size != int(np.prod(list(shape.to_shape()), dtype=np.int64)):
                raise ValidationError(
                    f"SetConstant on {edit.node!r}:{edit.port}: value shape {list(value.shape)} does not "
                    f"fit the constant's shape {list(shape.to_shape())}"
                )
            value = value.reshape(list(shape.to_shape()))
        name = f"{edit.node}/const_{edit.port}"
        target.replace_source_output(_const(value, target.get_element_type(), name).output(0))

    def mask_weight(self, edit: MaskWeight) -> None:
        """The weight multiplied by the mask, stored as before: a Constant, or a Constant in its own element
        type (e.g. f16) followed by Convert."""
        if edit.trainable:
            raise ValidationError(
                f"MaskWeight on {edit.node!r}: an OpenVINO model does not train (trainable masks: PyTorch)"
            )
        target = self._input(InputRef(edit.node, edit.port))
        source = target.get_source_output()
        producer = source.get_node()
        stored = producer.input_value(0) if producer.get_type_name() == "Convert" else source
        weight = ConstantEvaluator().array(stored)
        mask = np.asarray(edit.mask)
        if mask.size != weight.size:
            raise ValidationError(
                f"MaskWeight on {edit.node!r}:{edit.port}: mask {mask.shape} does not fit {weight.shape}"
            )
        masked = np.where(mask.reshape(weight.shape) != 0, weight, np.zeros((), weight.dtype))
        value = _const(masked, stored.get_element_type(), f"{edit.node}/masked_{edit.port}").output(0)
        if stored is not source:
            value = ops.convert(value, source.get_element_type()).output(0)
        target.replace_source_output(value)

    def insert_multiply(self, edit: InsertMultiply) -> None:
        groups: dict[ov.Output, list[ov.Input]] = {}
        for ref in edit.consumers:
            target = self._input(ref)
            groups.setdefault(target.get_source_output(), []).append(target)
        for k, (source, targets) in enumerate(groups.items()):
            name = edit.name if k == 0 else f"{edit.name}#{k}"
            scale = _const(edit.scale, source.get_element_type(), f"{name}/scale")
            mul = ops.multiply(source, scale)
            mul.set_friendly_name(name)
            for target in targets:
                target.replace_source_output(mul.output(0))


def _per_channel_shape(source: ov.Output, axis: int, size: int, name: str) -> list[int]:
    rank = source.get_partial_shape().rank
    if rank.is_dynamic:
        raise ValidationError(f"per-channel quantizer {name!r} on a tensor of dynamic rank")
    return _channel_shape(rank.get_length(), axis, size)


def _fake_convert(source: ov.Output, params: FakeConvertParams, name: str) -> ov.Node:
    """FakeConvert (opset13) of ``source`` to ``params.destination`` (per channel on ``params.axis``)."""
    element_type = source.get_element_type()
    scale, shift = np.asarray(params.scale, np.float32), np.asarray(params.shift, np.float32)
    shape = [] if params.axis is None else _per_channel_shape(source, params.axis, scale.size, name)
    scale_node = _const(scale.reshape(shape), element_type, f"{name}/scale")
    shift_node = _const(shift.reshape(shape), element_type, f"{name}/shift")
    node = ops.fake_convert(source, scale_node, shift_node, params.destination)
    node.set_friendly_name(name)
    return node


def _fake_quantize(source: ov.Output, params: FakeQuantParams | FakeConvertParams, name: str) -> ov.Node:
    """FakeQuantize of ``source`` with output range = input range (per channel on ``params.axis``);
    FakeConvert for FP8 parameters."""
    if isinstance(params, FakeConvertParams):
        return _fake_convert(source, params, name.replace("/fq_", "/fc_"))
    element_type = source.get_element_type()
    low = np.asarray(params.low, dtype=np.float32)
    high = np.asarray(params.high, dtype=np.float32)
    if params.axis is not None:
        rank = source.get_partial_shape().rank
        if rank.is_dynamic:
            raise ValidationError(f"per-channel quantizer {name!r} on a tensor of dynamic rank")
        shape = _channel_shape(rank.get_length(), params.axis, low.size)
        low, high = low.reshape(shape), high.reshape(shape)
    else:
        low, high = low.reshape([]), high.reshape([])
    low_node = _const(low, element_type, f"{name}/low")
    high_node = _const(high, element_type, f"{name}/high")
    fq = ops.fake_quantize(source, low_node, high_node, low_node, high_node, params.levels)
    fq.set_friendly_name(name)
    return fq


def _int_weight(weight: np.ndarray, params: FakeQuantParams, element_type: ov.Type, name: str) -> ov.Output:
    """Constant(i8/u8) -> Convert -> [Subtract(zero point)] -> Multiply(scale), the int8 weight form."""
    q, scale, zero_point = quantize_to_int(weight, params)
    shape = _channel_shape(weight.ndim, params.axis, scale.size)
    int_type = ov.Type.i8 if q.dtype == np.int8 else ov.Type.u8
    stored = _const(q, int_type, f"{name}/int8_weight")
    value = ops.convert(stored, element_type)
    value.set_friendly_name(f"{name}/int8_weight/convert")
    if np.any(zero_point != 0):
        zp = ops.convert(_const(zero_point.reshape(shape), int_type, f"{name}/zero_point"), element_type)
        zp.set_friendly_name(f"{name}/zero_point/convert")
        value = ops.subtract(value, zp)
        value.set_friendly_name(f"{name}/int8_weight/subtract")
    value = ops.multiply(value, _const(scale.reshape(shape), element_type, f"{name}/scale"))
    value.set_friendly_name(f"{name}/int8_weight/multiply")
    return value.output(0)
