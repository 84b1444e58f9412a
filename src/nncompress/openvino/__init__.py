"""NNCF's ``nncf.openvino`` namespace (``nncf.openvino.quantization.backend_parameters``); imports no openvino.

The OpenVINO backend itself is ``nncompress.backends.openvino``.
"""
