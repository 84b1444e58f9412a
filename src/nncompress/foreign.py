"""Accept NNCF's own option objects where nncompress expects its look-alikes.

When the real ``nncf`` package is installed beside nncompress, user code can hand nncompress an
``nncf.AdvancedQuantizationParameters``, an ``nncf.IgnoredScope``, an ``nncf.Dataset`` or an enum member
such as ``nncf.CompressWeightsMode.INT4_SYM``. Those are other classes, so ``isinstance`` refuses them.
``adopt`` converts such an object by duck typing: a dataclass whose class name is one of nncompress'
and whose fields all exist in nncompress' class becomes nncompress' object (nested records and enums
converted too), an enum member becomes the member of nncompress' enum with the same value, and an
object with ``get_data``/``get_inference_data`` becomes an ``nncompress.Dataset`` reading through it.
nncompress never imports nncf: only the object's class name, fields and public methods are used.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Iterator
from typing import Any, TypeVar

from nncompress.dataset import Dataset
from nncompress.errors import ValidationError

T = TypeVar("T")

# NNCF names of nncompress classes that nncompress calls differently
_ALIASES = {"QuantizationScheme": ("QuantizationMode",)}


@functools.cache
def _public_types() -> dict[str, list[type]]:
    """nncompress' option records and enums by name (a name may have several classes, e.g. QuantizationMode)."""
    from nncompress import parameters, scopes, weight_parameters

    found: dict[str, list[type]] = {}
    for module in (parameters, weight_parameters, scopes):
        for obj in vars(module).values():
            if not isinstance(obj, type) or obj.__module__ != module.__name__:
                continue
            if dataclasses.is_dataclass(obj) or (issubclass(obj, enum.Enum) and len(obj)):
                for name in (obj.__name__, *_ALIASES.get(obj.__name__, ())):
                    found.setdefault(name, []).append(obj)
    return found


def _names(cls: type) -> tuple[str, ...]:
    return (cls.__name__, *_ALIASES.get(cls.__name__, ()))


def is_foreign(value: Any, cls: type) -> bool:
    """Whether ``value`` is not a ``cls`` but an object of another class with one of ``cls``'s names."""
    return not isinstance(value, cls) and type(value).__name__ in _names(cls)


def adopt(value: Any, cls: type[T], what: str) -> T | Any:
    """``value`` as a ``cls`` when it is the look-alike of another library (NNCF); otherwise ``value`` itself
    (the caller's own type check then reports a wrong type)."""
    if value is None or isinstance(value, cls) or type(value).__name__ not in _names(cls):
        return value
    if cls is Dataset:
        return adopt_dataset(value, what)
    if issubclass(cls, enum.Enum):
        return _enum_member(value, [cls], what)
    if dataclasses.is_dataclass(cls):
        return _record(value, [cls], what)
    return value


def _enum_member(value: Any, candidates: list[type], what: str) -> enum.Enum:
    raw = value.value if isinstance(value, enum.Enum) else value
    for cls in candidates:
        for member in cls:
            if member.value == raw:
                return member
    valid = [m.value for cls in candidates for m in cls]
    raise ValidationError(f"{what}: {type(value).__name__}.{getattr(value, 'name', raw)} ({raw!r}) has no "
                          f"counterpart in nncompress; valid values: {valid}")


def _record(value: Any, candidates: list[type], what: str) -> Any:
    if not dataclasses.is_dataclass(value):
        raise ValidationError(f"{what}: a {type(value).__name__} that is not a dataclass cannot be read as nncompress' "
                              f"{candidates[0].__name__}")
    given = {f.name for f in dataclasses.fields(value)}
    for cls in candidates:
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(given - known)
        if unknown:
            if cls is candidates[-1]:
                raise ValidationError(f"{what}: {type(value).__name__} has fields nncompress' {cls.__name__} does not "
                                      f"know: {unknown}; known fields: {sorted(known)}")
            continue
        kwargs = {name: _convert(getattr(value, name), f"{what}.{name}") for name in sorted(given)}
        return cls(**kwargs)
    raise ValidationError(f"{what}: cannot read {type(value).__name__}")  # unreachable: candidates is not empty


def _convert(value: Any, what: str) -> Any:
    """Nested values of a foreign record: foreign records and enum members become nncompress' own."""
    if isinstance(value, (list, tuple)):
        return type(value)(_convert(v, f"{what}[{i}]") for i, v in enumerate(value))
    if isinstance(value, dict):
        return {k: _convert(v, f"{what}[{k!r}]") for k, v in value.items()}
    if not (isinstance(value, enum.Enum) or dataclasses.is_dataclass(value)) or type(value).__module__.startswith(
        "nncompress"
    ):
        return value
    candidates = _public_types().get(type(value).__name__)
    if not candidates:
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, enum.Enum):
        return _enum_member(value, [c for c in candidates if issubclass(c, enum.Enum)], what)
    return _record(value, [c for c in candidates if dataclasses.is_dataclass(c)], what)


class _ForeignItems:
    """The model inputs of another library's Dataset, re-iterable, with its length when known."""

    def __init__(self, dataset: Any):
        self.dataset = dataset
        self.batch_size = _call(dataset, "get_batch_size")

    def __iter__(self) -> Iterator:
        return iter(self.dataset.get_inference_data())

    def __len__(self) -> int:
        length = _call(self.dataset, "get_length")
        if length is None:
            raise TypeError("the dataset has no length")
        return int(length)


def _call(obj: Any, name: str) -> Any:
    method = getattr(obj, name, None)
    return method() if callable(method) else None


class _AdoptedDataset(Dataset):
    """A Dataset whose raw items come from the other library's ``get_data``."""

    def __init__(self, foreign: Any):
        super().__init__(_ForeignItems(foreign))
        self.foreign = foreign

    def get_data(self, indices=None):
        return self.foreign.get_data(None if indices is None else sorted(indices))


def adopt_dataset(value: Any, what: str) -> Dataset:
    """An ``nncompress.Dataset`` reading through another library's Dataset (its public methods only)."""
    if not all(callable(getattr(value, m, None)) for m in ("get_data", "get_inference_data")):
        raise ValidationError(f"{what}: a {type(value).__name__} without get_data()/get_inference_data() cannot be "
                              "read as a Dataset; wrap the data with nncompress.Dataset(data_source, transform_func)")
    return _AdoptedDataset(value)
