"""Initialisation data attached to a config ("extra structs") and NNCF 2.x ``register_default_init_args``.

Torch is not imported here: a loader is anything iterable more than once (a torch ``DataLoader``, a
list of batches, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from nncompress.errors import CalibrationError, OneShotDatasetError, ValidationError


class InitializingDataLoader:
    """Wraps a loader for initialisation; subclass and override ``get_inputs``/``get_target`` for other batches.

    Default contract (NNCF's): a batch ``(x, y, ...)`` gives model input ``x`` and target ``y``; a dict
    batch is passed as keyword arguments; a lone tensor is the single positional input.
    """

    def __init__(self, data_loader: Iterable):
        if isinstance(data_loader, InitializingDataLoader):
            data_loader = data_loader.data_loader
        _check_loader(data_loader)
        self._data_loader = data_loader

    @property
    def data_loader(self) -> Iterable:
        return self._data_loader

    def __iter__(self) -> Iterator:
        return iter(self._data_loader)

    def __len__(self) -> int:
        if not hasattr(self._data_loader, "__len__"):
            raise TypeError(f"the wrapped loader ({type(self._data_loader).__name__}) has no length")
        return len(self._data_loader)

    @property
    def batch_size(self) -> int:
        """The loader's ``batch_size``, else the first dimension of the first batch's first input."""
        size = getattr(self._data_loader, "batch_size", None)
        if isinstance(size, int):
            return size
        first = next(iter(self._data_loader), None)
        if first is None:
            raise CalibrationError("the initialisation data loader is empty: it gave no batch")
        args, kwargs = self.get_inputs(first)
        for value in (*args, *kwargs.values()):
            shape = getattr(value, "shape", None)
            if shape is not None and len(shape) > 0:
                return int(shape[0])
        raise CalibrationError(
            f"cannot tell the batch size of the initialisation loader: it has no batch_size attribute and its "
            f"first batch's inputs ({type(first).__name__}) have no shape; give a loader with batch_size"
        )

    def get_inputs(self, dataloader_output: Any) -> tuple[tuple, dict]:
        """(positional args, keyword args) for the model from one batch."""
        if isinstance(dataloader_output, dict):
            return (), dict(dataloader_output)
        if isinstance(dataloader_output, (tuple, list)):
            if not dataloader_output:
                raise CalibrationError("an initialisation batch is an empty sequence; expected (input, target)")
            return (dataloader_output[0],), {}
        return (dataloader_output,), {}

    def get_target(self, dataloader_output: Any) -> Any:
        """The target of one batch: its second item."""
        if isinstance(dataloader_output, (tuple, list)) and len(dataloader_output) > 1:
            return dataloader_output[1]
        if isinstance(dataloader_output, dict) and "labels" in dataloader_output:
            return dataloader_output["labels"]
        raise CalibrationError(
            f"cannot find the target in a batch of type {type(dataloader_output).__name__}: the default "
            "InitializingDataLoader expects (input, target, ...) or a dict with 'labels'; subclass it and "
            "override get_target"
        )


PTInitializingDataLoader = InitializingDataLoader


def _check_loader(loader: Any) -> None:
    try:
        iterator = iter(loader)
    except TypeError:
        raise ValidationError(
            f"an initialisation data loader must be iterable (e.g. a torch DataLoader); got {type(loader).__name__}"
        ) from None
    if iterator is loader:
        raise OneShotDatasetError(
            f"the initialisation data loader ({type(loader).__name__}) is an iterator that can be read only once; "
            "range initialisation and BatchNorm adaptation each read it, so pass a DataLoader or a list"
        )


def wrap_dataloader_for_init(data_loader: Iterable) -> InitializingDataLoader:
    """``data_loader`` as an ``InitializingDataLoader`` (returned as is when it already is one)."""
    if isinstance(data_loader, InitializingDataLoader):
        return data_loader
    return InitializingDataLoader(data_loader)


@dataclass
class QuantizationRangeInitArgs:
    """The loader quantizer ranges are initialised from."""

    data_loader: Any
    device: Any = None

    def __post_init__(self):
        self.data_loader = wrap_dataloader_for_init(self.data_loader)


@dataclass
class BNAdaptationInitArgs:
    """The loader BatchNorm statistics are adapted on."""

    data_loader: Any
    device: Any = None

    def __post_init__(self):
        self.data_loader = wrap_dataloader_for_init(self.data_loader)


@dataclass
class QuantizationPrecisionInitArgs:
    """Mixed-precision (HAWQ) initialisation: ``criterion_fn(outputs, target, criterion)`` gives the loss."""

    criterion_fn: Callable
    criterion: Any
    data_loader: Any
    device: Any = None

    def __post_init__(self):
        self.data_loader = wrap_dataloader_for_init(self.data_loader)


@dataclass
class AutoQPrecisionInitArgs:
    """AutoQ initialisation: ``eval_fn(model, data_loader)`` gives the metric."""

    data_loader: Any
    eval_fn: Callable
    nncf_config: Any = None


@dataclass
class LeGRInitArgs:
    """LeGR (learned ranking) pruning initialisation."""

    train_loader: Any
    train_fn: Callable
    val_loader: Any
    val_fn: Callable
    train_optimizer: Any = None
    nncf_config: Any = None
    execution_parameters: Any = None


@dataclass
class ModelEvaluationArgs:
    """``eval_fn(model)`` gives the metric (accuracy-aware training)."""

    eval_fn: Callable


@dataclass
class DistributedCallbacksArgs:
    """Wrap/unwrap a model for distributed training (used by initialisers that train)."""

    wrapping_callback: Callable
    unwrapping_callback: Callable


def default_criterion_fn(outputs: Any, target: Any, criterion: Callable) -> Any:
    """NNCF's default: ``criterion(outputs, target)``."""
    return criterion(outputs, target)


def register_default_init_args(
    nncf_config,
    train_loader,
    criterion=None,
    criterion_fn=None,
    train_steps_fn=None,
    validate_fn=None,
    val_loader=None,
    autoq_eval_fn=None,
    model_eval_fn=None,
    distributed_callbacks=None,
    execution_parameters=None,
    legr_train_optimizer=None,
    device=None,
):
    """Register the init-args structs on ``nncf_config`` and return it (NNCF 2.x signature)."""
    from nncompress.training.config import NNCFConfig

    if not isinstance(nncf_config, NNCFConfig):
        raise ValidationError(
            f"nncf_config must be an NNCFConfig (from NNCFConfig.from_json/from_dict); got {type(nncf_config).__name__}"
        )
    loader = wrap_dataloader_for_init(train_loader)
    structs: list = [QuantizationRangeInitArgs(loader, device), BNAdaptationInitArgs(loader, device)]
    if criterion is not None:
        structs.append(QuantizationPrecisionInitArgs(criterion_fn or default_criterion_fn, criterion, loader, device))
    elif criterion_fn is not None:
        raise ValidationError("criterion_fn was given without criterion; criterion_fn(outputs, target, criterion)")
    legr = {"train_steps_fn": train_steps_fn, "validate_fn": validate_fn, "val_loader": val_loader}
    if train_steps_fn is not None or validate_fn is not None:
        missing = [k for k, v in legr.items() if v is None]
        if missing:
            raise ValidationError(
                f"LeGR initialisation needs train_steps_fn, validate_fn and val_loader together; missing: "
                f"{', '.join(missing)}"
            )
        structs.append(
            LeGRInitArgs(
                train_loader, train_steps_fn, val_loader, validate_fn, legr_train_optimizer, nncf_config,
                execution_parameters,
            )
        )  # fmt: skip
    if autoq_eval_fn is not None:
        structs.append(AutoQPrecisionInitArgs(val_loader if val_loader is not None else train_loader, autoq_eval_fn,
                                              nncf_config))  # fmt: skip
    if model_eval_fn is not None:
        structs.append(ModelEvaluationArgs(model_eval_fn))
    if distributed_callbacks is not None:
        structs.append(DistributedCallbacksArgs(*_pair(distributed_callbacks)))
    nncf_config.register_extra_structs(structs)
    return nncf_config


def _pair(callbacks: Any) -> tuple[Callable, Callable]:
    if not (isinstance(callbacks, (tuple, list)) and len(callbacks) == 2 and all(map(callable, callbacks))):
        raise ValidationError(
            f"distributed_callbacks must be (wrapping_callback, unwrapping_callback), two callables; got {callbacks!r}"
        )
    return callbacks[0], callbacks[1]
