"""NNCF's ``nncf.openvino.quantization`` namespace."""
