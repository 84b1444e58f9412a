"""Quantization-aware training: the builder (placement -> edits -> trainable quantizers) and controller."""
