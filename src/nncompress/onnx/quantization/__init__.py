"""NNCF's ``nncf.onnx.quantization`` namespace."""
