"""Model-input items (tensor, tuple/list of positional args, dict of kwargs) and run helpers."""

from __future__ import annotations

import contextlib
import copy
import threading
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree as pytree

from nncompress.errors import CalibrationError, UnsupportedModelError


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
    unreadable = [leaf for leaf in pytree.tree_leaves((args, kwargs)) if _unreadable(leaf)]
    if unreadable:
        raise CalibrationError(
            f"a model input tensor {tuple(unreadable[0].shape)} is on the {unreadable[0].device.type!r} device, which "
            "holds shapes but no values: nncompress runs the model on real data; give tensors on the model's device "
            "(e.g. 'cpu' or 'cuda')"
        )
    device = model_device(model)
    if device is not None:
        args, kwargs = pytree.tree_map_only(torch.Tensor, lambda t: t.to(device), (args, kwargs))
    return args, kwargs


def _unreadable(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_meta


def check_model_readable(model: nn.Module) -> None:
    """Raise UnsupportedModelError when a parameter or buffer of ``model`` has no values (``meta`` device)."""
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in named:
            if tensor.is_meta:
                raise UnsupportedModelError(
                    f"the model's {kind} {name!r} is on the 'meta' device (a shape without values), and nncompress "
                    "reads weights and runs the model: load the real weights first (e.g. model.to_empty(device="
                    "'cpu') then load_state_dict, or load the model without a meta/empty-weights context)"
                )


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's parameters when they share one, else None."""
    devices = {p.device for p in model.parameters()}
    return devices.pop() if len(devices) == 1 else None


_EVAL_LOCK = threading.Lock()
# model -> [runs in eval mode now, training flags the user set]: shared by the threads running one model
_EVAL_RUNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode, then restore every module's training flag exactly.

    Runs of one model in several threads overlap safely: the first one in switches to eval mode and
    the last one out restores the flags.
    """
    with _EVAL_LOCK:
        entry = _EVAL_RUNS.get(model)
        if entry is None:
            entry = _EVAL_RUNS[model] = [0, [(m, m.training) for m in model.modules()]]
            for module in model.modules():  # not model.eval(): torch.export's GraphModules refuse it
                module.training = False
        entry[0] += 1
    try:
        yield
    finally:
        with _EVAL_LOCK:
            entry[0] -= 1
            if entry[0] == 0:
                for module, flag in entry[1]:
                    module.training = flag
                _EVAL_RUNS.pop(model, None)


def training_flags(model: nn.Module) -> list[bool]:
    """The training flag of each module (``modules()`` order) as the user set it, also during ``eval_mode``."""
    with _EVAL_LOCK:
        entry = _EVAL_RUNS.get(model)
        if entry is not None:
            return [flag for _, flag in entry[1]]
        return [m.training for m in model.modules()]


def copy_model(model: nn.Module, memo: dict | None = None) -> nn.Module:
    """``copy.deepcopy(model)`` with the user's training flags even while another thread runs ``model``."""
    flags = training_flags(model)
    result = copy.deepcopy(model, memo)
    for module, flag in zip(result.modules(), flags):
        module.training = flag
    return result


def to_numpy(value: torch.Tensor) -> np.ndarray:
    """A detached CPU copy (floats as float32) that owns its memory.

    Never a view: the forward may go on to change the tensor in place (``out += identity``,
    ``relu(inplace=True)``), and a value taken for statistics must be the one the op produced.
    """
    source = value.detach()
    copy = source.float() if source.is_floating_point() else source
    try:
        copy = copy.cpu()
        if copy.data_ptr() == source.data_ptr():  # no conversion happened: .numpy() would share memory
            copy = copy.clone()
        return copy.numpy()
    except (NotImplementedError, RuntimeError) as exc:
        raise CalibrationError(
            f"cannot read a tensor {tuple(value.shape)} on the {value.device.type!r} device as data ({exc}); "
            "run the model on a device whose tensors can be copied to the CPU (e.g. 'cpu' or 'cuda')"
        ) from exc


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


def exported_example(model: nn.Module) -> tuple | None:
    """Zero tensors shaped like the inputs a ``torch.export`` GraphModule was exported with (its
    placeholders' recorded values), None for other models or inputs of unknown shape."""
    graph = getattr(model, "graph", None)
    if not isinstance(model, torch.fx.GraphModule) or graph is None:
        return None
    values = []
    for node in graph.nodes:
        if node.op != "placeholder":
            continue
        value = node.meta.get("val")
        if not isinstance(value, torch.Tensor):
            return None
        try:
            shape = [int(d) for d in value.shape]
        except (TypeError, ValueError):  # a symbolic size without a hint
            return None
        values.append(torch.zeros(shape, dtype=value.dtype, device=value.device))
    return tuple(values) if values else None
