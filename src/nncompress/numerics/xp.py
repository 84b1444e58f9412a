"""The few array operations the shared formulas need, for numpy arrays and torch tensors alike.

A torch tensor is recognised by the module of its type, so this file (and ``numerics``) imports without
torch installed. Torch tensors stay on their own device and dtype: nothing is copied to the CPU or to
numpy. Operations named with a trailing underscore write into their argument, which must be a fresh
array the caller owns.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable
from functools import lru_cache
from typing import Any

import numpy as np

Array = Any  # np.ndarray or torch.Tensor


def is_torch(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (without importing torch)."""
    return type(x).__module__.startswith("torch")


def _torch():
    return sys.modules["torch"]  # loaded: a tensor exists


def fresh(x: Array) -> Array:
    """``x`` itself when it is an array we may write into; numpy scalars become 0-d arrays."""
    return x if is_torch(x) or isinstance(x, np.ndarray) else np.asarray(x)


def round_(x: Array) -> Array:
    """Round half to even, in place."""
    return x.round_() if is_torch(x) else np.rint(x, out=x)


def round_ste(x: Array) -> Array:
    """Round half to even; in torch the gradient passes straight through (identity backward).

    ``x + (round(x) - x)`` equals ``round(x)`` exactly: ``round(x) - x`` is exact (Sterbenz) and so is
    the sum, which is representable.
    """
    if is_torch(x):
        return x + (_torch().round(x) - x).detach()
    return np.rint(x)


def rint(x: Array) -> Array:
    """Round half to even (a new array)."""
    return _torch().round(x) if is_torch(x) else np.rint(x)


def where(condition: Array, x: Array, y: Array) -> Array:
    """``x`` where ``condition`` holds, else ``y`` (torch when ``condition`` is a tensor)."""
    return _torch().where(condition, x, y) if is_torch(condition) else np.where(condition, x, y)


def sum_to(x: Array, shape: tuple[int, ...]) -> Array:
    """``x`` summed over the axes that ``shape`` (a broadcastable shape, e.g. a parameter's) lacks."""
    padded = (1,) * (x.ndim - len(shape)) + tuple(shape)
    axes = tuple(i for i, (have, want) in enumerate(zip(x.shape, padded)) if want == 1 and have != 1)
    if is_torch(x):
        total = x.sum(dim=axes, keepdim=True) if axes else x
    else:
        total = np.sum(x, axis=axes, keepdims=True)
    return total.reshape(shape)


def clip(x: Array, low: float, high: float) -> Array:
    """``min(max(x, low), high)`` (a new array; in torch the gradient of ``clamp``)."""
    return _torch().clamp(x, low, high) if is_torch(x) else np.clip(x, low, high)


def clip_(x: Array, low: float, high: float) -> Array:
    """``clip`` in place."""
    return x.clamp_(low, high) if is_torch(x) else np.clip(x, low, high, out=x)


def isub(x: Array, y: Array) -> Array:
    """``x - y``, written into ``x`` where the result has ``x``'s shape."""
    if is_torch(x) or np.broadcast_shapes(np.shape(x), np.shape(y)) == np.shape(x):
        x -= y
        return x
    return x - y


def imul(x: Array, y: Array) -> Array:
    """``x * y``, written into ``x`` where the result has ``x``'s shape."""
    if is_torch(x) or np.broadcast_shapes(np.shape(x), np.shape(y)) == np.shape(x):
        x *= y
        return x
    return x * y


def iadd(x: Array, y: Array) -> Array:
    """``x + y``, written into ``x`` where the result has ``x``'s shape."""
    if is_torch(x) or np.broadcast_shapes(np.shape(x), np.shape(y)) == np.shape(x):
        x += y
        return x
    return x + y


def float32(x: Array) -> Array:
    """``x`` as float32 (numpy: always a copy; torch: ``x`` itself when it is float32 already)."""
    return x.float() if is_torch(x) else np.asarray(x).astype(np.float32)


def take_rows(table: Array, index: Array) -> Array:
    """``table[index]`` along axis 0 for an integer ``index`` (rows of a small lookup table)."""
    if is_torch(index):
        torch = _torch()
        return torch.index_select(table, 0, index.to(torch.int32).reshape(-1)).reshape(*index.shape, *table.shape[1:])
    return np.take(table, index, axis=0)


def constant(make: Callable[[Hashable], np.ndarray], key: Hashable, like: Array) -> Array:
    """The numpy array ``make(key)``, or as a tensor on ``like``'s device (cached per device)."""
    if is_torch(like):
        return _device_constant(make, key, str(like.device))
    return make(key)


@lru_cache(maxsize=128)
def _device_constant(make: Callable[[Hashable], np.ndarray], key: Hashable, device: str):
    return _torch().from_numpy(np.ascontiguousarray(make(key))).to(device)
