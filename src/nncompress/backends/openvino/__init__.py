"""OpenVINO backend: adapter for ``openvino.Model``."""

from .adapter import OpenVINOAdapter, model_size_bytes

__all__ = ["OpenVINOAdapter", "model_size_bytes"]
