"""Accuracy-aware training (NNCF's ``nncf.common.accuracy_aware_training``): ``early_exit`` and
``adaptive_compression_level`` loops over the user's train/validate functions. Importing this package does
not import torch."""

from __future__ import annotations

from typing import Any

from nncompress.errors import ValidationError
from nncompress.training.accuracy_aware.log import EpochRecord, format_table
from nncompress.training.accuracy_aware.loops import (
    AdaptiveCompressionTrainingLoop,
    EarlyExitCompressionTrainingLoop,
    TrainingLoopStatistics,
)
from nncompress.training.accuracy_aware.params import AccuracyAwareParams, accuracy_aware_params


def create_accuracy_aware_training_loop(
    nncf_config: Any,
    compression_ctrl: Any,
    uncompressed_model_accuracy: float,
    lr_updates_needed: bool = True,
    verbose: bool = True,
    dump_checkpoints: bool = True,
) -> EarlyExitCompressionTrainingLoop | AdaptiveCompressionTrainingLoop:
    """The loop the config's ``accuracy_aware_training.mode`` names, for ``compression_ctrl``'s model.

    ``uncompressed_model_accuracy`` is the original model's metric (what ``validate_fn`` returns for it);
    the budget is measured from it. ``lr_updates_needed`` is accepted for NNCF compatibility (the loop always
    scales the learning rate of the optimizer ``configure_optimizers_fn`` returns).
    """
    if compression_ctrl is None or not hasattr(compression_ctrl, "scheduler"):
        raise ValidationError(
            "compression_ctrl must be the controller create_compressed_model returned; got "
            f"{type(compression_ctrl).__name__}"
        )
    params = accuracy_aware_params(nncf_config)
    cls = EarlyExitCompressionTrainingLoop if params.mode == "early_exit" else AdaptiveCompressionTrainingLoop
    return cls(compression_ctrl, params, uncompressed_model_accuracy, verbose=verbose,
               dump_checkpoints=dump_checkpoints)


__all__ = [
    "AccuracyAwareParams",
    "AdaptiveCompressionTrainingLoop",
    "EarlyExitCompressionTrainingLoop",
    "EpochRecord",
    "TrainingLoopStatistics",
    "accuracy_aware_params",
    "create_accuracy_aware_training_loop",
    "format_table",
]
