"""NNCF's ``nncf.pruning`` module path (``nncf.pruning.prune_model``); implemented in ``nncompress.api.prune``."""
