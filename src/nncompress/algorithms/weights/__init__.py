"""Weight compression: layer selection, mixed precision, AWQ, scale estimation, GPTQ, LoRA correction."""
