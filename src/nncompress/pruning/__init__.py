"""NNCF's ``nncf.pruning`` module path (``nncf.pruning.prune_model``); the implementation is ``nncompress.api.prune``."""
