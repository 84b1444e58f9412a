"""NNCF's ``nncf.onnx.quantization.backend_parameters``: keys of ``backend_params`` for ONNX models."""

from __future__ import annotations

from nncompress.parameters import AdvancedQuantizationParameters
from nncompress.weight_parameters import AdvancedCompressionParameters

__all__ = [
    "AdvancedCompressionParameters",
    "AdvancedQuantizationParameters",
    "BackendParameters",
    "get_external_data_dir",
    "is_weight_compression_needed",
]


class BackendParameters:
    """Keys of ``Advanced*Parameters(backend_params={...})`` for ONNX models.

    ``COMPRESS_WEIGHTS`` and ``EXTERNAL_DATA_DIR`` are NNCF's keys; nncompress' ``quantize`` does not act on
    them yet (it warns). ``ACCURACY_LEVEL`` (nncompress') sets MatMulNBits' ``accuracy_level`` in
    ``compress_weights``.
    """

    COMPRESS_WEIGHTS = "compress_weights"
    EXTERNAL_DATA_DIR = "external_data_dir"
    ACCURACY_LEVEL = "onnx_accuracy_level"


def get_external_data_dir(
    advanced_parameters: AdvancedQuantizationParameters | AdvancedCompressionParameters | None,
) -> str | None:
    """The ``external_data_dir`` backend parameter, or None."""
    if advanced_parameters is None:
        return None
    return advanced_parameters.backend_params.get(BackendParameters.EXTERNAL_DATA_DIR)


def is_weight_compression_needed(advanced_parameters: AdvancedQuantizationParameters | None) -> bool:
    """The ``compress_weights`` backend parameter (True when not given)."""
    if advanced_parameters is None:
        return True
    return bool(advanced_parameters.backend_params.get(BackendParameters.COMPRESS_WEIGHTS, True))
