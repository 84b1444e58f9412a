"""Model edits as data: algorithms produce them, backend adapters carry them out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nncompress.graph.ir import InputRef, TensorRef


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
