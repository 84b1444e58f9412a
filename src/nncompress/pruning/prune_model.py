"""NNCF's ``nncf.pruning.prune_model``: ``prune``, ``pruning_statistic`` and the statistic records (re-exports)."""

from nncompress.api.prune import ModelPruningStatistic, TensorPruningStatistic, prune, pruning_statistic
from nncompress.parameters import PruneMode

__all__ = ["ModelPruningStatistic", "PruneMode", "TensorPruningStatistic", "prune", "pruning_statistic"]
