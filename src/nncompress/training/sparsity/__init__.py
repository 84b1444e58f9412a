"""Training-time sparsity: builders (``builder``), controllers (``controller``: magnitude, const; ``rb``), the
scheduler (``scheduler``) and level schedules (``schedules``); masks live in ``backends.torch.sparsity`` and
the formulas in ``numerics.sparsity``."""
