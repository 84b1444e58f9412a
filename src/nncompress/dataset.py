"""``Dataset``: the calibration/validation data wrapper of the public API."""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from nncompress.errors import CalibrationError, OneShotDatasetError, ValidationError

_FIX = (
    "pass a list, or a zero-argument callable that returns a fresh iterator each time "
    "(e.g. nncompress.Dataset(lambda: make_generator(), transform_fn))"
)


class Dataset:
    """Wraps any iterable of data items and a ``transform_fn`` that turns an item into model inputs.

    ``data_source`` may be a list, a torch DataLoader, any re-iterable object, or a zero-argument
    callable returning a fresh iterator (for generators). A one-shot iterator (a generator object:
    ``iter(source) is source``) works for algorithms that read the data once; those that need
    several passes raise ``OneShotDatasetError`` before doing any work.
    """

    def __init__(
        self,
        data_source: Iterable | Callable[[], Iterable],
        transform_func: Callable | None = None,
        *,
        transform_fn: Callable | None = None,
    ):
        # NNCF 3.x names the transform ``transform_func``, NNCF 2.x code often says ``transform_fn``: both work.
        if transform_func is not None and transform_fn is not None:
            raise ValidationError("give the transform once: transform_func or transform_fn, not both")
        transform_fn = transform_fn if transform_fn is not None else transform_func
        if data_source is None or not (hasattr(data_source, "__iter__") or callable(data_source)):
            raise ValidationError(
                f"data_source must be an iterable (list, DataLoader, ...) or a callable returning one; "
                f"got {type(data_source).__name__}"
            )
        if transform_fn is not None and not callable(transform_fn):
            raise ValidationError(f"transform_fn must be callable or None; got {type(transform_fn).__name__}")
        self._source = data_source
        self._transform = transform_fn
        self._factory = callable(data_source) and not hasattr(data_source, "__iter__")
        # only iterators have __next__; asking a DataLoader for iter() would start its workers
        self._one_shot = hasattr(data_source, "__next__") and iter(data_source) is data_source
        self._peeked: list = []  # a one-shot source's first item, taken by a check and replayed by its pass
        self._read = False  # a one-shot source has started its pass
        self._yielded = False  # some pass has given at least one item

    def get_data(self, indices: Iterable[int] | None = None) -> Iterable:
        """The raw items, all of them or those at ``indices`` (in ascending order), as a re-iterable
        object; it has a ``len()`` when the count is known."""
        return _view(self, _check_indices(indices, self.get_length()), transform=False)

    def get_inference_data(self, indices: Iterable[int] | None = None) -> Iterable:
        """The items after ``transform_fn`` (ready-to-use model inputs), as ``get_data`` gives them."""
        return _view(self, _check_indices(indices, self.get_length()), transform=True)

    def get_length(self) -> int | None:
        """Number of items, or None when the source has no length."""
        try:
            return len(self._source)  # type: ignore[arg-type]
        except TypeError:
            return None

    def get_batch_size(self) -> int | None:
        """The source's batch size when it declares one (e.g. a torch DataLoader)."""
        return getattr(self._source, "batch_size", None)

    @property
    def is_one_shot(self) -> bool:
        """True when the source is an iterator that can be read only once (e.g. a generator object)."""
        return self._one_shot

    def require_reiterable(self, reason: str) -> None:
        """Raise ``OneShotDatasetError`` now, before any work, when the source can be read only once;
        ``reason`` says what needs the data several times."""
        if self._one_shot:
            raise OneShotDatasetError(
                f"the dataset's data source is a one-shot iterator ({type(self._source).__name__}) that can be "
                f"read only once, but {reason}; {_FIX}"
            )

    def peek_inference_data(self) -> list:
        """``[first model input]`` (``[]`` when the dataset is empty) without using up a pass: a one-shot
        source keeps the raw item and replays it first when its one pass starts."""
        if not self._one_shot:
            return list(itertools.islice(self.get_inference_data(), 1))
        if self._read:
            self._raise_read()
        if not self._peeked:
            self._peeked = list(itertools.islice(self._source, 1))  # type: ignore[arg-type]
        return [self._apply_transform(item, 0) for item in self._peeked]

    def _open(self) -> Iterator:
        """A fresh iterator over the raw items (one pass); raises at once when no fresh pass exists."""
        if self._one_shot:
            if self._read:
                self._raise_read()
            self._read = True
            head, self._peeked = self._peeked, []
            return itertools.chain(head, self._source)  # type: ignore[arg-type]
        return self._guard_empty(iter(self._source() if self._factory else self._source))

    def _guard_empty(self, items: Iterator) -> Iterator:
        """The items; an error instead of a silent empty pass after a pass that gave items."""
        empty = True
        for item in items:
            empty = False
            self._yielded = True
            yield item
        if empty and self._yielded:
            raise OneShotDatasetError(
                "the data source yielded no items on this pass though an earlier pass gave items: it "
                f"behaves like a one-shot iterator (a callable data_source must return a NEW iterator on every "
                f"call); {_FIX}"
            )

    def _raise_read(self) -> None:
        raise OneShotDatasetError(
            f"the dataset's data source is a one-shot iterator ({type(self._source).__name__}) and was already "
            f"read once, and a second pass would see no items; {_FIX}"
        )

    def _apply_transform(self, item: Any, position: int) -> Any:
        if self._transform is None:
            return item
        try:
            return self._transform(item)
        except Exception as exc:  # the user's function failed: say where
            raise CalibrationError(
                f"transform_fn raised {type(exc).__name__} on dataset item {position}: {exc}"
            ) from exc


class _DataView:
    """Re-iterable items of a Dataset: every ``iter()`` starts a new pass over the source."""

    def __init__(self, dataset: Dataset, indices: list[int] | None, transform: bool):
        self._dataset = dataset
        self._indices = indices
        self._transform = transform

    def __iter__(self) -> Iterator:
        items = self._dataset._open()  # eager: a pass that cannot happen fails at iter(), not later
        return self._items(items)

    def _items(self, items: Iterator) -> Iterator:
        apply = self._dataset._apply_transform
        for index, item in _select(items, self._indices):
            yield apply(item, index) if self._transform else item


class _SizedDataView(_DataView):
    def __init__(self, dataset: Dataset, indices: list[int] | None, transform: bool, length: int):
        super().__init__(dataset, indices, transform)
        self._length = length

    def __len__(self) -> int:
        return self._length


def _view(dataset: Dataset, indices: list[int] | None, transform: bool) -> _DataView:
    length = len(indices) if indices is not None else dataset.get_length()
    if length is None:
        return _DataView(dataset, indices, transform)
    return _SizedDataView(dataset, indices, transform, length)


def _check_indices(indices: Iterable[int] | None, length: int | None) -> list[int] | None:
    """``indices`` sorted ascending, after checking each is a distinct in-range integer."""
    if indices is None:
        return None
    if isinstance(indices, (str, bytes)) or not hasattr(indices, "__iter__"):
        raise ValidationError(f"dataset indices must be an iterable of integers or None; got {indices!r}")
    seen: set[int] = set()
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise ValidationError(f"dataset indices must be integers; got {index!r}")
        if index < 0 or (length is not None and index >= length):
            raise ValidationError(f"dataset index {index} is out of range{_valid_range(length)}")
        if index in seen:
            raise ValidationError(f"dataset index {index} is given twice; each item can be selected once")
        seen.add(int(index))
    return sorted(seen)


def _select(items: Iterator, indices: list[int] | None) -> Iterator[tuple[int, Any]]:
    """``(index, item)`` for every item, or for the sorted ``indices`` only."""
    if indices is None:
        yield from enumerate(items)
        return
    if not indices:
        return
    position = 0
    count = 0
    for count, item in enumerate(items, 1):
        if count - 1 == indices[position]:
            yield count - 1, item
            position += 1
            if position == len(indices):
                return
    raise ValidationError(
        f"dataset index {indices[position]} is out of range: the data source yielded only {count} items"
        + (f" (valid: 0..{count - 1})" if count else "")
    )


def _valid_range(length: int | None) -> str:
    if length is None:
        return " (valid: non-negative integers)"
    if length == 0:
        return ": the dataset is empty"
    return f" for a dataset of {length} items (valid: 0..{length - 1})"
