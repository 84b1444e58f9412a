"""``strip`` and ``export``: turn a compressed model into a plain one, or write it for a runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nncompress.backends.adapter import check_export, check_strip
from nncompress.backends.registry import get_adapter
from nncompress.errors import ValidationError, one_of
from nncompress.parameters import StripFormat, coerce_enum

EXPORT_FORMATS = ("onnx", "openvino")


def strip(
    model: Any,
    do_copy: bool = True,
    strip_format: StripFormat = StripFormat.NATIVE,
    example_input: Any = None,
    *,
    keep_activation_quantizers: bool = True,
) -> Any:
    """``model`` without nncompress' compression machinery (NNCF's signature).

    PyTorch, in a copy or, with ``do_copy=False``, in ``model`` itself (activation quantizers stay unless
    ``keep_activation_quantizers=False``):

    - ``NATIVE``: fake-quantized weights are written into the float parameters;
    - ``DQ``: quantized weights are stored as integer levels + scale + zero point, dequantized in forward
      (outputs equal NATIVE's up to float rounding); weights from ``compress_weights`` already are;
    - ``IN_PLACE``: every compressed weight becomes a float parameter holding its compressed value (weights
      stored compressed by ``compress_weights`` are decompressed; no compression module stays on weights).

    OpenVINO and ONNX models are already plain (QDQ or decompression subgraphs): returned as is for every
    format (they cannot drop their activation quantizers: ``keep_activation_quantizers=False`` raises
    UnsupportedBackendError). ``example_input`` is accepted for NNCF compatibility; no format needs it.
    """
    fmt = coerce_enum(strip_format, StripFormat, "strip_format")
    if not isinstance(do_copy, bool):
        raise ValidationError(f"do_copy must be True or False; got {do_copy!r}")
    adapter = get_adapter(model)
    if not check_strip(adapter.capabilities, keep_activation_quantizers):
        return model
    if fmt is StripFormat.NATIVE:
        return adapter.strip(model, keep_activation_quantizers, do_copy)
    return adapter.strip(model, keep_activation_quantizers, do_copy, strip_format=fmt.value)


def export(
    model: Any, path: str | Path, *, format: str = "onnx", example_input: Any = None, dynamic_axes: dict | None = None
) -> Path:
    """Write ``model`` to ``path`` as ONNX (QuantizeLinear/DequantizeLinear) or OpenVINO IR (.xml).

    PyTorch models need ``example_input`` (one model input item) to be traced; the batch axis is
    dynamic unless ``dynamic_axes`` (as for ``torch.onnx.export``) says otherwise. OpenVINO models
    export only as OpenVINO IR (UnsupportedBackendError otherwise).
    """
    if format not in EXPORT_FORMATS:
        raise one_of(format, EXPORT_FORMATS, "format")
    adapter = get_adapter(model)
    check_export(adapter.capabilities, format, example_input)
    return Path(adapter.export(model, Path(path), format, example_input, dynamic_axes))
