"""nncompress.pruning.prune_model (NNCF's nncf.pruning.prune_model) re-exports the one implementation."""

import nncompress
from nncompress.api import prune as implementation
from nncompress.pruning import prune_model


def test_names_are_the_implementation_objects():
    assert prune_model.prune is nncompress.prune is implementation.prune
    assert prune_model.pruning_statistic is nncompress.pruning_statistic
    assert prune_model.ModelPruningStatistic is implementation.ModelPruningStatistic
    assert prune_model.PruneMode is nncompress.PruneMode
