"""NNCF's ``nncf.common.accuracy_aware_training`` path: the loops live in ``nncompress.training.accuracy_aware``."""

from nncompress.training.accuracy_aware import (
    AdaptiveCompressionTrainingLoop,
    EarlyExitCompressionTrainingLoop,
    TrainingLoopStatistics,
    create_accuracy_aware_training_loop,
)

__all__ = [
    "AdaptiveCompressionTrainingLoop",
    "EarlyExitCompressionTrainingLoop",
    "TrainingLoopStatistics",
    "create_accuracy_aware_training_loop",
]
