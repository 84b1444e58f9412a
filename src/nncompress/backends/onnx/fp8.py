"""FP8 quantizers in ONNX (``quantize(mode=FP8_E4M3 | FP8_E5M2)``), run by ONNX Runtime's CPU provider.

Weights: the FP8 codes stored as a float8e4m3fn / float8e5m2 initializer (one byte per weight) and a
per-channel ``DequantizeLinear`` (``y_scale = 1 / scale``, float8 zero point 0).
Activations: ``Mul(scale) -> Cast(float8, saturate=1) -> Cast(float) -> Div(scale)``, OpenVINO's
FakeConvert written with standard ops. The FP8 ``QuantizeLinear -> DequantizeLinear`` pair would be the
natural form and ONNX Runtime 1.32 runs it, but its graph optimizations (level EXTENDED and above, the
default) then compute wrong results for a pair between Conv/Relu/Gemm (relative output error 0.79
instead of 0.08 on a small CNN; right with optimizations off), so activations use the Cast form.
Float8 types need opset 19: ``edits.apply_edits`` converts older models first.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from nncompress.backends.onnx.editor import Editor
from nncompress.errors import ValidationError
from nncompress.graph.edits import FakeConvertParams, QuantizeWeight
from nncompress.numerics.fp8 import fp8_codes

FP8_OPSET = 19
ELEM = {"f8e4m3": TensorProto.FLOAT8E4M3FN, "f8e5m2": TensorProto.FLOAT8E5M2}


def _fp8_initializer(editor: Editor, base: str, codes: np.ndarray, destination: str) -> str:
    name = editor.fresh(base)
    tensor = helper.make_tensor(name, ELEM[destination], list(codes.shape), np.ascontiguousarray(codes).tobytes(),
                                raw=True)
    editor.model.graph.initializer.append(tensor)
    editor.inits[name] = editor.model.graph.initializer[-1]
    return name


def qparams(editor: Editor, params: FakeConvertParams, base: str) -> tuple[list[str], dict]:
    """([y_scale, zero point] initializer names, attributes) of a Q/DQ pair for ``params``."""
    y_scale = (np.float32(1.0) / np.asarray(params.scale, np.float32)).astype(np.float32)
    if np.any(np.asarray(params.shift) != 0):
        raise ValidationError(f"{base}: ONNX FP8 quantizers take shift 0 only")
    if params.axis is None:
        if y_scale.size != 1:
            raise ValidationError(f"a per-tensor FP8 quantizer needs a scalar scale; got shape {y_scale.shape}")
        y_scale, attrs = y_scale.reshape(()), {}
    else:
        y_scale, attrs = y_scale.reshape(-1), {"axis": int(params.axis)}
    zero = _fp8_initializer(editor, f"{base}/zero_point", np.zeros(y_scale.shape, np.uint8), params.destination)
    return [editor.add_initializer(f"{base}/scale", y_scale), zero], attrs


def quantize_weight(editor: Editor, edit: QuantizeWeight, node: onnx.NodeProto, source: str) -> str:
    """The float8 weight initializer and its DequantizeLinear; returns the dequantized tensor name."""
    params = edit.params
    values = editor.constant(source).astype(np.float32)
    scale = np.asarray(params.scale, np.float32)
    if params.axis is not None:
        shape = [1] * values.ndim
        shape[params.axis % values.ndim] = -1
        scale = scale.reshape(shape)
    base = f"{edit.node}/weight{edit.port}"
    codes = fp8_codes(values * scale, params.destination)
    inputs, attrs = qparams(editor, params, base)
    stored = _fp8_initializer(editor, f"{base}/fp8", codes, params.destination)
    return editor.add_node("DequantizeLinear", [stored, *inputs], editor.fresh(f"{base}/dequantized"),
                           f"{edit.name}/DequantizeLinear", **attrs)


def has_fp8(edits) -> bool:
    return any(isinstance(getattr(e, "params", None), FakeConvertParams) for e in edits)


def activation_builder(editor: Editor, params: FakeConvertParams, name: str):
    """A builder of ``Div(Cast(Cast(Mul(x, scale), float8, saturate), float), scale)`` on a tensor."""
    if params.axis is not None or np.any(np.asarray(params.shift) != 0):
        raise ValidationError(f"{name}: ONNX FP8 activation quantizers are per-tensor with shift 0")

    def build(src: str, out: str | None) -> str:
        elem = editor.elem_type(src)
        scale = editor.add_initializer(f"{name}/scale", np.asarray(params.scale, np.float32).reshape(()))
        x = src if elem == TensorProto.FLOAT else editor.add_node(
            "Cast", [src], editor.fresh(f"{name}/to_float"), f"{name}/to_float", to=TensorProto.FLOAT)
        scaled = editor.add_node("Mul", [x, scale], editor.fresh(f"{name}/scaled"), f"{name}/Mul")
        fp8 = editor.add_node("Cast", [scaled], editor.fresh(f"{name}/fp8"), f"{name}/to_fp8",
                              to=ELEM[params.destination], saturate=1)
        back = editor.add_node("Cast", [fp8], editor.fresh(f"{name}/float"), f"{name}/from_fp8", to=TensorProto.FLOAT)
        is_float = elem == TensorProto.FLOAT
        value = editor.add_node("Div", [back, scale], (out if is_float else None) or editor.fresh(f"{name}/out"),
                                f"{name}/Div")
        if is_float:
            return value
        return editor.add_node("Cast", [value], out or editor.fresh(f"{name}/cast"), f"{name}/from_float", to=elem)

    return build
