"""``strip`` and ``export``: turn a compressed model into a plain one, or write it for a runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nncompress.backends.registry import get_adapter
from nncompress.errors import ValidationError, one_of

EXPORT_FORMATS = ("onnx", "openvino")


def strip(model: Any, do_copy: bool = True, keep_activation_quantizers: bool = True) -> Any:
    """A copy of ``model`` without nncompress' training-time machinery.

    PyTorch: fake-quantized weights are written into the parameters (activation quantizers stay unless
    ``keep_activation_quantizers=False``). OpenVINO and ONNX models are already plain: returned as is.
    """
    if not do_copy:
        raise ValidationError("strip(do_copy=False) is not supported: nncompress never modifies a model in place")
    return get_adapter(model).strip(model, keep_activation_quantizers)


def export(
    model: Any, path: str | Path, *, format: str = "onnx", example_input: Any = None, dynamic_axes: dict | None = None
) -> Path:
    """Write ``model`` to ``path`` as ONNX (QuantizeLinear/DequantizeLinear) or OpenVINO IR (.xml).

    PyTorch models need ``example_input`` (one model input item) to be traced; the batch axis is
    dynamic unless ``dynamic_axes`` (as for ``torch.onnx.export``) says otherwise.
    """
    if format not in EXPORT_FORMATS:
        raise one_of(format, EXPORT_FORMATS, "format")
    return Path(get_adapter(model).export(model, Path(path), format, example_input, dynamic_axes))
