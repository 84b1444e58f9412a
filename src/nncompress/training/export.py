"""``controller.export_model``: the stripped model as standard ONNX QDQ or OpenVINO IR."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from nncompress.errors import UnsupportedBackendError, ValidationError

_FORMAT = re.compile(r"^onnx(?:_(\d+))?$|^openvino$")


def parse_format(save_format: str) -> tuple[str, int | None]:
    """("onnx", opset or None) or ("openvino", None); ValidationError names the valid forms."""
    match = _FORMAT.match(save_format) if isinstance(save_format, str) else None
    if match is None:
        raise ValidationError(
            f"save_format={save_format!r} is not supported; valid: 'onnx', 'onnx_<opset>' (opset >= 13) or 'openvino'"
        )
    if save_format == "openvino":
        return "openvino", None
    opset = int(match.group(1)) if match.group(1) else None
    if opset is not None and opset < 13:
        raise ValidationError(
            f"save_format={save_format!r}: standard QDQ export with per-channel quantizers needs opset >= 13; "
            "use 'onnx' or 'onnx_13' and above"
        )
    return "onnx", opset


def export_stripped(model: Any, save_path: str | Path, save_format: str, example_input: Any,
                    input_names: Any = None, output_names: Any = None) -> Path:
    """Write ``model`` (already stripped: PTQ fake-quantizer form) to ``save_path``."""
    fmt, opset = parse_format(save_format)
    if input_names is not None or output_names is not None:
        raise UnsupportedBackendError(
            "export_model(input_names=..., output_names=...) is not supported: inputs are named after the forward's "
            "parameters and outputs after the result's fields"
        )
    if example_input is None:
        raise ValidationError("export_model needs an example input: give model_args=(tensor, ...)")
    path = Path(save_path)
    if fmt == "openvino":
        from nncompress.api.export import export

        return export(model, path, format="openvino", example_input=example_input)
    from nncompress.backends.torch.export import export_onnx

    return export_onnx(model, path, example_input, opset_version=opset or 17)
