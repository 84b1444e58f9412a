"""A small per-model cache that neither keeps models alive nor confuses a new model with a dead one."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

import openvino as ov

T = TypeVar("T")


class ModelCache(Generic[T]):
    """Values computed from a model, kept while the model lives (at most ``size`` models)."""

    def __init__(self, make: Callable[[ov.Model], T], size: int = 2):
        self.make = make
        self.size = size
        self._entries: OrderedDict[int, tuple[weakref.ref, T]] = OrderedDict()

    def get(self, model: ov.Model) -> T:
        """The cached value for ``model``, computed on first use."""
        key = id(model)
        entry = self._entries.get(key)
        if entry is None or entry[0]() is not model:
            entry = (weakref.ref(model, lambda _, k=key: self._drop(k)), self.make(model))
            self._entries[key] = entry
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        self._entries.move_to_end(key)
        return entry[1]

    def _drop(self, key: int) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is None:
            del self._entries[key]
