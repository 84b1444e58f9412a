"""Training-time sparsity: level schedules (``schedules``); masks live in ``backends.torch.sparsity`` and the
formulas in ``numerics.sparsity``."""
