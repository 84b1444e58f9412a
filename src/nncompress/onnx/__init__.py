"""NNCF's ``nncf.onnx`` namespace (``nncf.onnx.quantization.backend_parameters``); imports no onnx.

The ONNX backend itself is ``nncompress.backends.onnx``.
"""
