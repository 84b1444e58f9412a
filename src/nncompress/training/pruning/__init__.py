"""Filter pruning in the training-time API (``"algorithm": "filter_pruning"``)."""
