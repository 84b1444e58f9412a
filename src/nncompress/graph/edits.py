"""Model edits as data: algorithms produce them, backend adapters carry them out."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from nncompress.graph.ir import InputRef, TensorRef

if TYPE_CHECKING:
    from nncompress.numerics.lowbit import CompressedWeight


@dataclass(frozen=True)
class FakeQuantParams:
    """FakeQuantize semantics: values clamp to [low, high] and snap to ``levels`` even steps.

    ``low``/``high`` are scalars (per-tensor) or 1-D arrays of length C over ``axis`` of the tensor
    (per-channel). ``narrow`` and ``signed`` tell which integer grid backends store: signed
    [-128, 127] (narrow [-127, 127]) or unsigned [0, 255].
    """

    low: np.ndarray
    high: np.ndarray
    levels: int
    axis: int | None = None
    signed: bool = True
    narrow: bool = False

    @property
    def per_channel(self) -> bool:
        return self.axis is not None


@dataclass(frozen=True)
class QuantizeActivation:
    """Insert a fake quantizer on ``tensor``.

    ``consumers`` None: one quantizer after the producer that every consumer reads. Otherwise only
    the listed consumer inputs read the quantized tensor. Quantizers with the same ``name`` prefix are
    reported together.
    """

    tensor: TensorRef
    consumers: tuple[InputRef, ...] | None
    params: FakeQuantParams
    name: str


@dataclass(frozen=True)
class QuantizeWeight:
    """Quantize the constant weight on input ``port`` of ``node`` (per channel on ``params.axis``)."""

    node: str
    port: int
    params: FakeQuantParams
    name: str


@dataclass(frozen=True)
class SetConstant:
    """Replace the constant on input ``port`` of ``node`` (a bias, a scaled weight) by ``value``."""

    node: str
    port: int
    value: np.ndarray


@dataclass(frozen=True)
class InsertMultiply:
    """Multiply ``tensor`` by the constant ``scale`` (broadcast to the tensor) for ``consumers``."""

    tensor: TensorRef
    consumers: tuple[InputRef, ...]
    scale: np.ndarray
    name: str


Edit = QuantizeActivation | QuantizeWeight | SetConstant | InsertMultiply


@dataclass(frozen=True)
class CompressWeight:
    """Store the constant weight on input ``port`` of ``node`` in the low-bit form ``weight``.

    ``weight`` (a ``numerics.lowbit.CompressedWeight``) carries the codes, scales, zero points, mode,
    group size and original shape; the backend stores them as they are and inserts the
    decompression that reproduces ``weight.decompress()``.
    """

    node: str
    port: int
    weight: CompressedWeight
    name: str


@dataclass(frozen=True)
class AddLowRankCorrection:
    """Add ``x @ a.T @ b.T`` to the output of the weighted node ``node`` (LoRA correction).

    ``x`` is the activation on input ``input_port``; ``a`` is ``[rank, in]`` and ``b`` ``[out, rank]``,
    each a float array or a ``CompressedWeight`` (stored compressed, decompressed at run time).
    """

    node: str
    input_port: int
    a: CompressedWeight | np.ndarray
    b: CompressedWeight | np.ndarray
    name: str


WeightEdit = CompressWeight | AddLowRankCorrection


class EditStream:
    """Edits produced one at a time, so that large compressed weights need not all exist at once.

    Iterable once; backends consume it in order (weights are released as soon as they are stored).
    """

    def __init__(self, edits: Iterable, options: dict | None = None):
        self._edits = edits
        self.options = dict(options or {})  # backend storage options (e.g. onnx_accuracy_level)

    def __iter__(self) -> Iterator:
        return iter(self._edits)
