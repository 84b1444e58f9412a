"""Running a region on several calibration items in one call (``Adapter.region_runner``).

Items whose values have equal shapes are joined on the leading axis of the block's stream input (values
equal for every item, e.g. a shape tensor, are passed once). Whether a block computes a batch exactly as
its items one by one is not known from the graph (a sub-model may have the batch size built into a
reshape), so the first batch of a pass is checked against its last item run alone -- the last, because a
causal block that merged the batch into one sequence would let that item attend to the others -- and the
pass runs items singly from the first mismatch or error on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from nncompress.graph.ir import TensorRef
from nncompress.log import logger

BATCH_ITEMS = 8  # calibration items run in one call (same shapes only); 16 made the peak of a transformer
# block run ~100 MB higher (SmolLM2, every backend) for no speed, and no faster full bias correction either
BATCH_BYTES = 8 << 20  # bytes of stream input in one call


class Batching:
    """Whether one pass over a region may run items in batches: allowed until a check fails."""

    def __init__(self):
        self.allowed, self.checked, self.why = True, False, ""

    def refuse(self, why: str) -> None:
        self.allowed, self.why = False, why
        logger.debug("block runs one item a call: %s", why)


def signature(values: dict[TensorRef, object]) -> tuple:
    """Names, shapes and dtypes of one item's values (items batch together when theirs are equal)."""
    entries = sorted(values.items(), key=lambda entry: (entry[0].node, str(entry[0].port)))
    return tuple((tensor, np.shape(value), np.asarray(value).dtype.str) for tensor, value in entries)


def joined(values: list[dict], stream: TensorRef | None, shapes: tuple[TensorRef, ...] = ()) -> dict | None:
    """One run's values for several items: per-item tensors (leading dimension the stream's) concatenated
    on that axis, ``shapes`` (shape vectors equal for every item, leading entry the stream's batch size)
    with that entry scaled, values equal for every item kept once; None when a value is none of these."""
    if stream is None or np.ndim(values[0][stream]) < 1:
        return None
    lead = np.shape(values[0][stream])[0]
    joined = {}
    for tensor, first in values[0].items():
        column = [v[tensor] for v in values]
        if tensor in shapes:
            if np.ndim(first) != 1 or not len(first) or first[0] != lead:
                return None
            if any(not np.array_equal(first, other) for other in column[1:]):
                return None
            joined[tensor] = np.array(first)
            joined[tensor][0] = lead * len(values)
        elif np.ndim(first) >= 1 and np.shape(first)[0] == lead:
            joined[tensor] = np.concatenate(column, axis=0)
        elif all(np.array_equal(first, other) for other in column[1:]):
            joined[tensor] = first
        else:
            return None
    return joined


def split(result: dict, count: int) -> list[dict] | None:
    """A batched run's result as per-item results (row blocks of the leading axis), None when a tensor's
    leading axis does not split in ``count``."""
    parts: list[dict] = [{} for _ in range(count)]
    for tensor, value in result.items():
        value = np.asarray(value)
        if value.ndim < 1 or value.shape[0] % count:
            return None
        for part, piece in zip(parts, np.split(value, count, axis=0)):
            part[tensor] = piece
    return parts


def difference(alone: dict, batched: dict) -> str:
    """Why a batched item's result differs from its own run ('' when it matches)."""
    for tensor, value in alone.items():
        other = batched.get(tensor)
        value = np.asarray(value, np.float64)
        if other is None or np.shape(other) != value.shape:
            return f"{tensor.node}:{tensor.port} has another shape in a batch"
        scale = float(np.max(np.abs(value[np.isfinite(value)]), initial=0.0)) or 1.0
        if not np.allclose(np.asarray(other, np.float64), value, rtol=1e-3, atol=1e-4 * scale, equal_nan=True):
            return f"{tensor.node}:{tensor.port} differs in a batch"
    return ""


Values = Callable[[int], dict]  # item index -> the runner's values for that item


def groups(count: int, values_of: Values, stream: TensorRef | None) -> list[list[int]]:
    """Consecutive items whose values all have the same shapes, up to ``BATCH_ITEMS`` items and
    ``BATCH_BYTES`` of ``stream`` input a group."""
    found: list[list[int]] = []
    last, size = None, 0
    for index in range(count):
        values = values_of(index)
        mine = signature(values)
        nbytes = int(np.asarray(values[stream]).nbytes) if stream in values else 0
        if found and mine == last and len(found[-1]) < BATCH_ITEMS and size + nbytes <= BATCH_BYTES:
            found[-1].append(index)
            size += nbytes
        else:
            found.append([index])
            last, size = mine, nbytes
    return found


def results(runner, values_of: Values, stream: TensorRef | None, indices: list[int], constants,
            batching: Batching) -> Iterator[tuple[int, dict]]:
    """(item index, ``runner.run`` result for that item) for ``indices``: one run of the whole group when
    the region computes batched items as single ones (checked on the first group), else one run each."""
    if len(indices) > 1 and batching.allowed:
        parts = _batched(runner, values_of, stream, indices, constants, batching)
        if parts is not None:
            yield from zip(indices, parts)
            return
    for index in indices:
        yield index, runner.run(values_of(index), constants)


def _batched(runner, values_of: Values, stream, indices: list[int], constants, batching: Batching):
    values = joined([values_of(i) for i in indices], stream, tuple(getattr(runner, "shapes", ())))
    if values is None:
        return None
    try:
        result = runner.run(values, constants)
    except Exception as error:  # noqa: BLE001 - e.g. a sub-model with the batch size built in
        batching.refuse(f"{type(error).__name__}: {error}")
        return None
    parts = split(result, len(indices))
    if parts is None:
        batching.refuse("a result does not hold one row block per item")
        return None
    if not batching.checked:  # the last item would see the others' tokens if the batch were merged
        why = difference(runner.run(values_of(indices[-1]), constants), parts[-1])
        if why:
            batching.refuse(why)
            return None
        batching.checked = True
    return parts
