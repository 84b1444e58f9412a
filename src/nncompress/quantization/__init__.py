"""NNCF's ``nncf.quantization``: the post-training entry points and their option modules."""

from nncompress.api.accuracy_control import quantize_with_accuracy_control
from nncompress.api.compress_weights import compress_weights
from nncompress.api.quantize import quantize

__all__ = ["compress_weights", "quantize", "quantize_with_accuracy_control"]
