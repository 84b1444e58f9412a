"""Compressed weights in OpenVINO: low-bit constants and their decompression subgraph.

``Constant(u8/i8/u4/i4/u3/u2/nf4/f4e2m1/f8e4m3) -> Convert -> [Subtract(Convert(zero point))] ->
Multiply(Convert(scale: f16, f8e8m0 for MX formats, f8e4m3 times the tensor scale for NVFP4)) ->
[Reshape to the original shape] -> [Convert to the original type]``; CB4 stores u4 indices and
gathers them from its 16-value codebook. INT3_SYM / INT2_SYM store ``q + 4`` / ``q + 2`` as u3 / u2
(OpenVINO has no i3/i2) and subtract that shift as one scalar constant of the decompression type (a
u2 or u8 zero-point constant makes the CPU plugin's dynamically quantized MatMul fail to compile).
The CPU plugin recognises the pattern and keeps the weights compressed inside MatMul and Gather
kernels (u2 too; u3 weights it decompresses when it compiles).
Decompression runs in float32 for float32 models (so compiled results equal
``CompressedWeight.decompress()``) and in float16 for float16 models.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from nncompress.errors import ValidationError
from nncompress.graph.edits import AddLowRankCorrection, CompressWeight
from nncompress.graph.ir import InputRef, TensorRef
from nncompress.numerics.encoding import CompressedWeight
from nncompress.numerics.grids import nearest_e4m3
from nncompress.numerics.lowbit import MX_MODES, NARROW_BITS, pack_4bit
from nncompress.parameters import CompressWeightsMode as Mode

ELEMENT_TYPES = {
    Mode.INT8_ASYM: ov.Type.u8,
    Mode.INT8_SYM: ov.Type.i8,
    Mode.INT4_ASYM: ov.Type.u4,
    Mode.INT4_SYM: ov.Type.i4,
    Mode.INT3_SYM: ov.Type.u3,
    Mode.INT2_SYM: ov.Type.u2,
    Mode.NF4: ov.Type.nf4,
    Mode.MXFP4: ov.Type.f4e2m1,
    Mode.FP4: ov.Type.f4e2m1,
    Mode.NVFP4: ov.Type.f4e2m1,
    Mode.FP8_E4M3: ov.Type.f8e4m3,
    Mode.MXFP8_E4M3: ov.Type.f8e4m3,
    Mode.CB4_F8E4M3: ov.Type.u4,  # indices into the codebook (a Gather after the Convert)
    Mode.CODEBOOK: ov.Type.u4,
}


def _named(node: ov.Node, name: str) -> ov.Node:
    node.set_friendly_name(name)
    return node


def low_bit_constant(values: np.ndarray, element_type: ov.Type, shape: tuple[int, ...], name: str) -> ov.Node:
    """A constant of ``element_type``; 2/3/4-bit types take ``pack_codes`` bytes, others plain values."""
    tensor = ov.Tensor(element_type, ov.Shape(list(shape)))
    target = tensor.data
    target[...] = np.asarray(values).reshape(target.shape).view(target.dtype)
    return _named(ops.constant(tensor), name)


def _scale_node(weight: CompressedWeight, decode_type: ov.Type, name: str) -> ov.Node:
    if weight.mode in MX_MODES:  # E8M0: the biased exponent of a power of two
        exponent = np.round(np.log2(weight.scale)).astype(np.int32) + 127
        const = low_bit_constant(exponent.astype(np.uint8), ov.Type.f8e8m0, weight.scale.shape, name)
    elif weight.mode is Mode.NVFP4:  # E4M3 group scales (exact: they were rounded to E4M3)
        const = low_bit_constant(nearest_e4m3(weight.scale), ov.Type.f8e4m3, weight.scale.shape, name)
    else:
        # ``ops.constant`` reads a numpy array's buffer as if it were C-ordered: estimated scales come transposed
        const = _named(ops.constant(np.ascontiguousarray(weight.scale, dtype=weight.scale_dtype)), name)
    if decode_type == const.get_element_type():
        return const
    return _named(ops.convert(const, decode_type), f"{name}/convert")


def decompression(weight: CompressedWeight, target_type: ov.Type, name: str) -> ov.Output:
    """The subgraph computing ``weight.decompress()`` as ``target_type`` from low-bit constants."""
    element_type = ELEMENT_TYPES.get(weight.mode)
    if element_type is None:
        raise ValidationError(f"OpenVINO cannot store mode {weight.mode.value!r}")
    decode_type = ov.Type.f16 if target_type == ov.Type.f16 else ov.Type.f32
    stored = low_bit_constant(weight.data, element_type, weight.stored_shape, f"{name}/compressed")
    if weight.mode in (Mode.CB4_F8E4M3, Mode.CODEBOOK):
        indices = _named(ops.convert(stored, ov.Type.i32), f"{name}/indices")
        values = weight.codebook
        exact = np.array_equal(values.astype(np.float16).astype(np.float32), values)
        book = np.ascontiguousarray(values, dtype=np.float16 if exact else np.float32)
        book = _named(ops.constant(book), f"{name}/codebook")
        value = _named(ops.gather(ops.convert(book, decode_type), indices, 0), f"{name}/lookup")
    else:
        value = _named(ops.convert(stored, decode_type), f"{name}/convert")
    if weight.zero_point is not None:
        zp = low_bit_constant(_zero_point_data(weight), element_type, weight.zero_point.shape, f"{name}/zero_point")
        zp = _named(ops.convert(zp, decode_type), f"{name}/zero_point/convert")
        value = _named(ops.subtract(value, zp), f"{name}/subtract")
    elif weight.mode in NARROW_BITS:
        shift = ops.constant(np.array(2 ** (weight.bits - 1), dtype=decode_type.to_dtype()))
        value = _named(ops.subtract(value, _named(shift, f"{name}/zero_point")), f"{name}/subtract")
    scale = _scale_node(weight, decode_type, f"{name}/scale")
    if weight.global_scale is not None:  # E4M3 group scales x the tensor scale: folded into one constant
        tensor_scale = ops.constant(np.array(weight.global_scale, dtype=decode_type.to_dtype()))
        scale = _named(ops.multiply(scale, tensor_scale), f"{name}/scale/multiply_tensor_scale")
    value = _named(ops.multiply(value, scale), f"{name}/multiply")
    if weight.stored_shape != weight.shape:
        shape = ops.constant(np.array(weight.shape, dtype=np.int64))
        value = _named(ops.reshape(value, shape, special_zero=False), f"{name}/reshape")
    if decode_type != target_type:
        value = _named(ops.convert(value, target_type), f"{name}/to_{target_type.get_type_name()}")
    return value.output(0)


def _zero_point_data(weight: CompressedWeight) -> np.ndarray:
    return pack_4bit(weight.zero_point) if weight.bits == 4 else weight.zero_point


def compress_weight(editor, edit: CompressWeight) -> None:
    """Replace the weight on ``edit.node``:``edit.port`` by its decompression subgraph."""
    target = editor._input(InputRef(edit.node, edit.port))
    shape = target.get_partial_shape()
    if shape.is_static and tuple(shape.to_shape()) != tuple(edit.weight.shape):
        raise ValidationError(
            f"CompressWeight on {edit.node!r}:{edit.port}: weight shape {list(edit.weight.shape)} does not "
            f"match the input's shape {list(shape.to_shape())}"
        )
    target.replace_source_output(decompression(edit.weight, target.get_element_type(), edit.name))


def _adapter_weight(value, target_type: ov.Type, name: str) -> ov.Output:
    if isinstance(value, CompressedWeight):
        return decompression(value, target_type, name)
    return ops.constant(np.ascontiguousarray(value, dtype=target_type.to_dtype())).output(0)


def add_low_rank(editor, edit: AddLowRankCorrection) -> None:
    """``y + (x @ a.T) @ b.T`` for every consumer of the weighted node's output."""
    op = editor.index.op(edit.node)
    source = op.input_value(edit.input_port)
    output = editor._output(TensorRef(edit.node, 0))
    consumers = list(output.get_target_inputs())
    element_type = output.get_element_type()
    a = _adapter_weight(edit.a, element_type, f"{edit.name}/lora_A")
    b = _adapter_weight(edit.b, element_type, f"{edit.name}/lora_B")
    hidden = _named(ops.matmul(source, a, False, True), f"{edit.name}/lora_A/matmul")
    delta = _named(ops.matmul(hidden, b, False, True), f"{edit.name}/lora_B/matmul")
    added = _named(ops.add(output, delta), f"{edit.name}/lora_add")
    for consumer in consumers:
        consumer.replace_source_output(added.output(0))


def apply(editor, edit) -> None:
    """Carry out a weight-compression edit with the OpenVINO ``_Editor`` of ``edits.py``."""
    if isinstance(edit, CompressWeight):
        compress_weight(editor, edit)
    else:
        add_low_rank(editor, edit)
