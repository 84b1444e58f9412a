"""ONNX backend (onnx + onnxruntime)."""

from nncompress.backends.onnx.adapter import OnnxAdapter, as_model, model_size_bytes

__all__ = ["OnnxAdapter", "as_model", "model_size_bytes"]
