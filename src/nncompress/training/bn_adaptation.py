"""BatchNorm adaptation: re-estimate BatchNorm running statistics on the (compressed) model.

Only ``BatchNorm1d/2d/3d`` modules run in training mode; everything else keeps its mode, nothing gets
gradients, and every module's training flag is restored afterwards. The modules' own momentum is used.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from nncompress.errors import CalibrationError, ValidationError
from nncompress.log import logger

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def adaptation_steps(num_samples: int, batch_size: int | None) -> int:
    """ceil(num_samples / batch_size) (batch size unknown: one sample per batch)."""
    return math.ceil(num_samples / max(int(batch_size or 1), 1))


def run_bn_adaptation(model: nn.Module, batches: Iterable[tuple[tuple, dict]], steps: int) -> int:
    """Forward ``steps`` of ``batches`` ((args, kwargs) each) with only BatchNorm in train mode; returns
    the number of batches run."""
    if not any(isinstance(m, _BN) for m in model.modules()):
        logger.warning("BatchNorm adaptation: the model has no BatchNorm1d/2d/3d module; nothing to adapt")
        return 0
    flags = {m: m.training for m in model.modules()}
    done = 0
    try:
        for m in model.modules():
            m.training = isinstance(m, _BN)
        with torch.no_grad():
            for args, kwargs in batches:
                if done >= steps:
                    break
                model(*args, **kwargs)
                done += 1
    finally:
        for m, flag in flags.items():
            m.training = flag
    if done == 0:
        raise CalibrationError("BatchNorm adaptation got no batch from its data loader; give a non-empty loader")
    return done


def adapt_batchnorm(model: nn.Module, data_loader: Any, num_samples: int) -> int:
    """Re-estimate ``model``'s BatchNorm statistics on about ``num_samples`` samples of an init data loader
    (a torch DataLoader or an NNCF ``InitializingDataLoader``); returns the number of batches run."""
    from nncompress.training.config.init_args import wrap_dataloader_for_init

    loader = wrap_dataloader_for_init(data_loader)
    return run_bn_adaptation(model, loader_batches(loader, model), adaptation_steps(num_samples, loader.batch_size))


def bn_adaptation_loader(nncf_config: Any, num_samples: int | None, what: str = "") -> Any:
    """The registered BatchNorm-adaptation loader when ``num_samples`` asks for adaptation; None (with a
    warning naming ``what`` when no loader is registered) otherwise."""
    from nncompress.training.config.init_args import BNAdaptationInitArgs

    if not num_samples:
        return None
    if nncf_config.has_extra_struct(BNAdaptationInitArgs):
        return nncf_config.get_extra_struct(BNAdaptationInitArgs).data_loader
    hint = " (call register_default_init_args(config, train_loader))" if what else ""
    logger.warning("%sBatchNorm adaptation skipped: no BNAdaptationInitArgs loader is registered%s",
                   f"{what}: " if what else "", hint)
    return None


def loader_batches(loader: Any, model: nn.Module) -> Iterable[tuple[tuple, dict]]:
    """(args, kwargs) of each batch of an ``InitializingDataLoader``, on the model's device."""
    for batch in loader:
        args, kwargs = loader.get_inputs(batch)
        yield to_model_device(model, tuple(args), dict(kwargs))


def to_model_device(model: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``args``/``kwargs`` with their tensors moved to the model's device."""
    from torch.utils import _pytree as pytree

    from nncompress.backends.torch.inputs import model_device

    device = model_device(model)
    if device is None:
        return args, kwargs
    return pytree.tree_map_only(torch.Tensor, lambda t: t.to(device), (args, kwargs))


def batch_norm_adaptation(model: Any, calibration_dataset: Any, *, num_iterations: int | None = None) -> Any:
    """A copy of ``model`` whose BatchNorm statistics are re-estimated on ``calibration_dataset``.

    ``num_iterations`` items (or every item when None) of the ``nncompress.Dataset`` are run, each as one
    batch. Unlike NNCF, which updates ``model`` in place, the input model is left unchanged.
    """
    from nncompress.backends.torch.inputs import copy_model, split_item
    from nncompress.dataset import Dataset

    if not isinstance(model, nn.Module):
        raise ValidationError(f"batch_norm_adaptation needs a torch.nn.Module; got {type(model).__name__}")
    from nncompress.foreign import adopt

    calibration_dataset = adopt(calibration_dataset, Dataset, "calibration_dataset")
    if not isinstance(calibration_dataset, Dataset):
        raise ValidationError(
            f"calibration_dataset must be an nncompress.Dataset; got {type(calibration_dataset).__name__}"
        )
    if num_iterations is not None and (isinstance(num_iterations, bool) or not isinstance(num_iterations, int)
                                       or num_iterations < 1):
        raise ValidationError(f"num_iterations must be a positive integer or None; got {num_iterations!r}")
    result = copy_model(model)
    items = (split_item(result, item) for item in calibration_dataset.get_inference_data())
    run_bn_adaptation(result, items, num_iterations if num_iterations is not None else math.inf)
    return result
