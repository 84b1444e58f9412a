"""Training-time compression (PyTorch)."""
