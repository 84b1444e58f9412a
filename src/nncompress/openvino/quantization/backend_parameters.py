"""NNCF's ``nncf.openvino.quantization.backend_parameters``: keys of ``backend_params`` for OpenVINO models."""

from __future__ import annotations

from nncompress.onnx.quantization.backend_parameters import is_weight_compression_needed

__all__ = ["BackendParameters", "is_weight_compression_needed"]


class BackendParameters:
    """Keys of ``AdvancedQuantizationParameters(backend_params={...})`` for OpenVINO models (NNCF's names;
    nncompress' ``quantize`` does not act on them yet and warns when they are given)."""

    COMPRESS_WEIGHTS = "compress_weights"
    STAT_REQUESTS_NUMBER = "stat_requests_number"
    EVAL_REQUESTS_NUMBER = "eval_requests_number"

