"""``strip`` and ``export``: turn a compressed model into a plain one, or write it for a runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nncompress.backends.adapter import check_export, check_strip
from nncompress.backends.registry import get_adapter
from nncompress.errors import UnsupportedBackendError, ValidationError, one_of
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

    PyTorch: fake-quantized weights are written into the parameters (activation quantizers stay unless
    ``keep_activation_quantizers=False``), in a copy or, with ``do_copy=False``, in ``model`` itself.
    OpenVINO and ONNX models are already plain: returned as is (they cannot drop their activation
    quantizers: ``keep_activation_quantizers=False`` raises UnsupportedBackendError). Only
    ``StripFormat.NATIVE`` is implemented; ``example_input`` is accepted for NNCF compatibility and not
    needed by NATIVE.
    """
    fmt = coerce_enum(strip_format, StripFormat, "strip_format")
    if fmt is not StripFormat.NATIVE:
        raise UnsupportedBackendError(
            f"strip_format={fmt.value!r} is not implemented yet; use StripFormat.NATIVE ('native'), which bakes "
            "quantized weights into the parameters (weights from compress_weights are already stored compressed)"
        )
    if not isinstance(do_copy, bool):
        raise ValidationError(f"do_copy must be True or False; got {do_copy!r}")
    adapter = get_adapter(model)
    if not check_strip(adapter.capabilities, keep_activation_quantizers):
        return model
    return adapter.strip(model, keep_activation_quantizers, do_copy)


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
