"""The bad-input matrix: one file per entry point (quantize, compress_weights, quantize_with_accuracy_control),
each case run on OpenVINO, ONNX and PyTorch where it applies, asserting the error class and that the message
names the bad value. ``Dataset``'s own cases (indices, one-shot sources) are in tests/unit/test_dataset.py."""
