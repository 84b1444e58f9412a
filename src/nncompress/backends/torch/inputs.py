"""Model-input items (tensor, tuple/list of positional args, dict of kwargs) and run helpers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree as pytree

from nncompress.errors import CalibrationError


def split_item(model: nn.Module, item: Any) -> tuple[tuple, dict]:
    """(args, kwargs) of a model-input item, tensors moved to the model's device."""
    if isinstance(item, torch.Tensor):
        args, kwargs = (item,), {}
    elif isinstance(item, (tuple, list)):
        args, kwargs = tuple(item), {}
    elif isinstance(item, Mapping):
        args, kwargs = (), dict(item)
    else:
        hint = " (convert arrays with torch.from_numpy in transform_fn)" if isinstance(item, np.ndarray) else ""
        raise CalibrationError(
            f"a PyTorch model input must be a torch.Tensor, a tuple/list of positional arguments or a dict of "
            f"keyword arguments; got {type(item).__name__}{hint}"
        )
    device = model_device(model)
    if device is not None:
        args, kwargs = pytree.tree_map_only(torch.Tensor, lambda t: t.to(device), (args, kwargs))
    return args, kwargs


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's parameters when they share one, else None."""
    devices = {p.device for p in model.parameters()}
    return devices.pop() if len(devices) == 1 else None


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode, then restore every module's training flag exactly."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def to_numpy(value: torch.Tensor) -> np.ndarray:
    """A detached CPU copy (floats as float32) that owns its memory.

    Never a view: the forward may go on to change the tensor in place (``out += identity``,
    ``relu(inplace=True)``), and a value taken for statistics must be the one the op produced.
    """
    source = value.detach()
    copy = source.float() if source.is_floating_point() else source
    copy = copy.cpu()
    if copy.data_ptr() == source.data_ptr():  # no conversion happened: .numpy() would share memory
        copy = copy.clone()
    return copy.numpy()


def output_arrays(out: Any) -> list[np.ndarray]:
    """The tensors of a model result (tensor, tuple, dict, ModelOutput) in flattening order."""
    if isinstance(out, torch.Tensor):
        return [to_numpy(out)]
    leaves, _ = pytree.tree_flatten(out)
    return [to_numpy(leaf) for leaf in leaves if isinstance(leaf, torch.Tensor)]


def named_tensor(model: nn.Module, name: str) -> torch.Tensor:
    """The parameter or buffer called ``name`` (a dotted path) in ``model``."""
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    return getattr(module, attr)
