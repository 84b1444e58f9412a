"""Carrying out neutral edits on an ONNX model (QDQ pairs, int8 weights, constants, multiplies)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnx.version_converter

from nncompress.backends.onnx import fp8, weight_storage
from nncompress.backends.onnx.editor import Editor, name_nodes
from nncompress.errors import UnsupportedBackendError, UnsupportedModelError, ValidationError
from nncompress.graph.edits import (
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
from nncompress.graph.ir import InputRef
from nncompress.numerics.qparams import quantize_to_int, scale_zero_point

MIN_OPSET = 13  # per-channel DequantizeLinear

Build = Callable[[str, "str | None"], str]


def default_opset(model: onnx.ModelProto) -> int | None:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return opset.version
    return None


def ensure_opset(model: onnx.ModelProto, minimum: int = MIN_OPSET) -> onnx.ModelProto:
    """``model`` with an ai.onnx opset of at least ``minimum`` (13; 19 for FP8; converted when lower)."""
    version = default_opset(model)
    if version is None:
        model.opset_import.add(domain="", version=minimum)
        return model
    if version < 10:
        raise UnsupportedModelError(f"ONNX opset {version} is too old; opset 10 or newer is needed")
    if version >= minimum:
        return model
    try:
        converted = onnx.version_converter.convert_version(model, minimum)
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedModelError(f"could not upgrade the model from opset {version} to {minimum}: {exc}") from exc
    converted.ir_version = max(converted.ir_version, 9 if minimum >= fp8.FP8_OPSET else 7)
    return converted


def apply_edits(model: onnx.ModelProto, edits: Sequence[Edit]) -> onnx.ModelProto:
    """A copy of ``model`` with ``edits`` carried out in stage order (``graph.edits.ordered``)."""
    edits = ordered(edits)
    if weight_storage.has_weight_edits(edits):
        return weight_storage.apply_weight_edits(model, edits)
    work = onnx.ModelProto()
    work.CopyFrom(model)
    name_nodes(work)
    editor = Editor(ensure_opset(work, fp8.FP8_OPSET if fp8.has_fp8(edits) else MIN_OPSET))
    handlers = {
        SetConstant: _set_constant,
        MaskWeight: _mask_weight,
        InsertMultiply: _insert_multiply,
        QuantizeWeight: _quantize_weight,
        QuantizeActivation: _quantize_activation,
    }
    unknown = [e for e in edits if type(e) not in handlers]
    if unknown:
        raise ValidationError(f"the ONNX backend cannot carry out edit {unknown[0]!r}")
    for edit in edits:
        handlers[type(edit)](editor, edit)
    return editor.finish()


def _np_dtype(elem_type: int) -> np.dtype:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


def _constant_port(editor: Editor, node_name: str, port: int) -> tuple[onnx.NodeProto, str]:
    node = editor.node(node_name)
    if not 0 <= port < len(node.input) or not node.input[port]:
        raise ValidationError(f"operation {node_name!r} has no constant on input port {port}")
    return node, node.input[port]


def _set_constant(editor: Editor, edit: SetConstant) -> None:
    node, old = _constant_port(editor, edit.node, edit.port)
    value = np.asarray(edit.value).astype(_np_dtype(editor.elem_type(old)))
    shape = editor.shape(old)
    if shape is not None and -1 not in shape and value.size == int(np.prod(shape)):
        value = value.reshape(shape)
    editor.set_input(node, edit.port, editor.add_initializer(f"{edit.node}/const{edit.port}", value))


def _mask_weight(editor: Editor, edit: MaskWeight) -> None:
    """The constant read on the port, multiplied by the mask, stored in its own dtype (nothing else changes)."""
    if edit.trainable:
        raise ValidationError(f"MaskWeight on {edit.node!r}: an ONNX model does not train (trainable masks: PyTorch)")
    node, source = _constant_port(editor, edit.node, edit.port)
    values = editor.constant(source)
    mask = np.asarray(edit.mask)
    if mask.size != values.size:
        raise ValidationError(f"MaskWeight on {edit.node!r}:{edit.port}: mask {mask.shape} does not fit {values.shape}")
    masked = np.where(mask.reshape(values.shape) != 0, values, np.zeros((), values.dtype))
    editor.set_input(node, edit.port, editor.add_initializer(f"{edit.node}/masked{edit.port}", masked))


def _multiply_builder(editor: Editor, edit: InsertMultiply) -> Build:
    def build(src: str, out: str | None) -> str:
        scale = np.asarray(edit.scale).astype(_np_dtype(editor.elem_type(src)))
        const = editor.add_initializer(f"{edit.name}/scale", scale)
        target = out or editor.fresh(f"{edit.name}/output")
        return editor.add_node("Mul", [src, const], target, f"{edit.name}/Mul")

    return build


def _insert_multiply(editor: Editor, edit: InsertMultiply) -> None:
    _route(editor, edit.consumers, _multiply_builder(editor, edit))


def _quantize_weight(editor: Editor, edit: QuantizeWeight) -> None:
    node, source = _constant_port(editor, edit.node, edit.port)
    if isinstance(edit.params, FakeConvertParams):
        out = fp8.quantize_weight(editor, edit, node, source)
        elem = editor.elem_type(source)
        if elem != onnx.TensorProto.FLOAT:
            out = _cast(editor, out, elem, None, f"{edit.name}/Cast")
        editor.set_input(node, edit.port, out)
        return
    values = editor.constant(source).astype(np.float32)
    q, scale, zero_point = quantize_to_int(values, edit.params)
    scale, zero_point, attrs = _qparams_layout(scale, zero_point, edit.params)
    base = f"{edit.node}/weight{edit.port}"
    inputs = [
        editor.add_initializer(f"{base}/quantized", q),
        editor.add_initializer(f"{base}/scale", scale),
        editor.add_initializer(f"{base}/zero_point", zero_point),
    ]
    out = editor.add_node(
        "DequantizeLinear", inputs, editor.fresh(f"{base}/dequantized"), f"{edit.name}/DequantizeLinear", **attrs
    )
    elem = editor.elem_type(source)
    if elem != onnx.TensorProto.FLOAT:
        out = _cast(editor, out, elem, None, f"{edit.name}/Cast")
    editor.set_input(node, edit.port, out)


def _qparams_layout(scale: np.ndarray, zero_point: np.ndarray, params: FakeQuantParams):
    """(scale, zero_point, attrs) shaped for QuantizeLinear/DequantizeLinear."""
    dtype = np.int8 if params.signed else np.uint8
    scale = np.asarray(scale, dtype=np.float32)
    zero_point = np.asarray(zero_point).astype(dtype)
    if params.axis is None:
        if scale.size != 1:
            raise ValidationError(f"a per-tensor quantizer needs scalar low/high; got shape {scale.shape}")
        return scale.reshape(()), zero_point.reshape(()), {}
    return scale.reshape(-1), zero_point.reshape(-1), {"axis": int(params.axis)}


def _qdq_builder(editor: Editor, edit: QuantizeActivation) -> Build:
    params = edit.params
    if isinstance(params, FakeConvertParams):
        return fp8.activation_builder(editor, params, edit.name)
    bits = int(np.ceil(np.log2(params.levels)))
    if bits != 8:
        raise UnsupportedBackendError(
            f"ONNX activation quantizers are 8-bit (255 or 256 levels); {edit.name!r} has {params.levels}"
        )
    scale, zero_point, _, _ = scale_zero_point(params)
    if params.signed:
        # ONNX Runtime fuses QLinearConv/QLinearAdd only when input and output share one integer type, so
        # every activation is stored as uint8: a signed grid shifted by 128 is the same quantizer.
        zero_point = np.asarray(zero_point) + 128
        params = dataclasses.replace(params, signed=False)
    scale, zero_point, attrs = _qparams_layout(scale, zero_point, params)

    def make_qparams() -> tuple[list[str], dict]:
        return [editor.add_initializer(f"{edit.name}/scale", scale),
                editor.add_initializer(f"{edit.name}/zero_point", zero_point)], attrs

    return _qdq_pair(editor, edit.name, make_qparams)


def _qdq_pair(editor: Editor, name: str, make_qparams: Callable[[], tuple[list[str], dict]]) -> Build:
    """A builder of QuantizeLinear -> DequantizeLinear on a tensor (float32 inside, cast around)."""

    def build(src: str, out: str | None) -> str:
        elem = editor.elem_type(src)
        is_float = elem == onnx.TensorProto.FLOAT
        x = src if is_float else _cast(editor, src, onnx.TensorProto.FLOAT, None, f"{name}/to_float")
        qparams, attrs = make_qparams()
        q = editor.fresh(f"{name}/quantized")
        editor.add_node("QuantizeLinear", [x, *qparams], q, f"{name}/QuantizeLinear", **attrs)
        dq = (out if is_float else None) or editor.fresh(f"{name}/dequantized")
        editor.add_node("DequantizeLinear", [q, *qparams], dq, f"{name}/DequantizeLinear", **attrs)
        return dq if is_float else _cast(editor, dq, elem, out, f"{name}/from_float")

    return build


def _cast(editor: Editor, src: str, to: int, out: str | None, name: str) -> str:
    return editor.add_node("Cast", [src], out or editor.fresh(f"{name}/output"), name, to=to)


def _quantize_activation(editor: Editor, edit: QuantizeActivation) -> None:
    build = _qdq_builder(editor, edit)
    if edit.consumers is not None:
        _route(editor, edit.consumers, build)
        return
    src = editor.tensor_name(edit.tensor)
    if src in editor.producers:
        build(editor.rename_output(src), src)  # every reader of ``src``, model outputs too
        return
    start = len(editor.new_nodes)
    out = build(src, None)
    editor.rewire(src, out, skip={id(n) for n in editor.new_nodes[start:]})


def _route(editor: Editor, consumers: Sequence[InputRef], build: Build) -> None:
    """Insert ``build``'s nodes on the tensors read by ``consumers`` and make those inputs read the result."""
    groups: dict[str, list[InputRef]] = {}
    for ref in consumers:
        groups.setdefault(editor.input_name(ref), []).append(ref)
    for src, refs in groups.items():
        node_refs = [r for r in refs if r.node not in editor.outputs]
        if len(node_refs) < len(refs) and src in editor.producers:
            raw = editor.rename_output(src)
            editor.rewire(src, raw, keep=node_refs)
            build(raw, src)  # the model output keeps its name and now carries the result
            continue
        out = build(src, None)
        for ref in node_refs:
            editor.nodes[ref.node].input[ref.port] = out
