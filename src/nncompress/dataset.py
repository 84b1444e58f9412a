"""``Dataset``: the calibration/validation data wrapper of the public API."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from nncompress.errors import CalibrationError, ValidationError


class Dataset:
    """Wraps any iterable of data items and a ``transform_fn`` that turns an item into model inputs.

    ``data_source`` may be a list, a torch DataLoader, any re-iterable object, or a zero-argument
    callable returning a fresh iterator (for generators).
    """

    def __init__(self, data_source: Iterable | Callable[[], Iterable], transform_fn: Callable | None = None):
        if data_source is None or not (hasattr(data_source, "__iter__") or callable(data_source)):
            raise ValidationError(
                f"data_source must be an iterable (list, DataLoader, ...) or a callable returning one; "
                f"got {type(data_source).__name__}"
            )
        if transform_fn is not None and not callable(transform_fn):
            raise ValidationError(f"transform_fn must be callable or None; got {type(transform_fn).__name__}")
        self._source = data_source
        self._transform = transform_fn

    def _iterate(self) -> Iterator:
        source = self._source() if callable(self._source) and not hasattr(self._source, "__iter__") else self._source
        return iter(source)

    def get_data(self, indices: list[int] | None = None) -> Iterator:
        """The raw items, all of them or those at the sorted ``indices``."""
        return _select(self._iterate(), indices)

    def get_inference_data(self, indices: list[int] | None = None) -> Iterator:
        """The items after ``transform_fn``: ready-to-use model inputs."""
        for position, item in enumerate(self.get_data(indices)):
            yield self._apply_transform(item, position)

    def _apply_transform(self, item: Any, position: int) -> Any:
        if self._transform is None:
            return item
        try:
            return self._transform(item)
        except Exception as exc:  # the user's function failed: say where
            raise CalibrationError(
                f"transform_fn raised {type(exc).__name__} on dataset item {position}: {exc}"
            ) from exc

    def get_length(self) -> int | None:
        """Number of items, or None when the source has no length."""
        try:
            return len(self._source)  # type: ignore[arg-type]
        except TypeError:
            return None

    def get_batch_size(self) -> int | None:
        """The source's batch size when it declares one (e.g. a torch DataLoader)."""
        return getattr(self._source, "batch_size", None)


def _select(items: Iterator, indices: list[int] | None) -> Iterator:
    if indices is None:
        yield from items
        return
    wanted = sorted(set(indices))
    if wanted and wanted[0] < 0:
        raise ValidationError(f"dataset indices must be non-negative; got {wanted[0]}")
    position = 0
    for index, item in enumerate(items):
        if position == len(wanted):
            return
        if index == wanted[position]:
            yield item
            position += 1
