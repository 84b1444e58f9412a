"""Model edits as data: algorithms produce them, backend adapters carry them out.

Every edit kind has a ``stage`` (``Stage``): where several edits act at one place of the model, the
lower stage acts first (a constant is replaced before it is quantized, an activation is scaled
before it is masked, masked before it is quantized). Backends carry edits out in ``ordered(edits)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from nncompress.errors import ValidationError
from nncompress.graph.ir import InputRef, TensorRef

if TYPE_CHECKING:
    from nncompress.numerics.encoding import CompressedWeight


class Stage(IntEnum):
    """The order in which edits acting at one place of the model take effect (gaps leave room)."""

    SET_CONSTANT = 10  # replace a constant's value: everything after sees the new value
    TRANSFORM = 20  # scale an activation (InsertMultiply)
    PRUNING_MASK = 30  # MaskChannels: structured (filter) pruning masks
    SPARSITY_MASK = 40  # MaskWeight: unstructured sparsity masks
    WEIGHT_QUANTIZER = 50  # QuantizeWeight, CompressWeight: the weight's stored form
    CORRECTION = 60  # AddLowRankCorrection: added to the output of the (compressed) layer
    ACTIVATION_QUANTIZER = 70  # QuantizeActivation: last, on what every earlier edit produced


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
class FakeConvertParams:
    """FP8 fake conversion (OpenVINO FakeConvert, ``numerics.fp8``): ``(fp8(x * scale - shift) + shift) /
    scale``, saturating. ``scale``/``shift`` are scalars or 1-D arrays over ``axis``; ``destination`` is
    'f8e4m3' or 'f8e5m2'. QuantizeActivation / QuantizeWeight carry it in ``params`` in FP8 mode."""

    scale: np.ndarray
    shift: np.ndarray
    destination: str
    axis: int | None = None

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

    stage: ClassVar[Stage] = Stage.ACTIVATION_QUANTIZER

    tensor: TensorRef
    consumers: tuple[InputRef, ...] | None
    params: FakeQuantParams | FakeConvertParams
    name: str


@dataclass(frozen=True)
class QuantizeWeight:
    """Quantize the constant weight on input ``port`` of ``node`` (per channel on ``params.axis``)."""

    stage: ClassVar[Stage] = Stage.WEIGHT_QUANTIZER

    node: str
    port: int
    params: FakeQuantParams | FakeConvertParams
    name: str


@dataclass(frozen=True)
class SetConstant:
    """Replace the constant on input ``port`` of ``node`` (a bias, a scaled weight) by ``value``."""

    stage: ClassVar[Stage] = Stage.SET_CONSTANT

    node: str
    port: int
    value: np.ndarray


@dataclass(frozen=True)
class InsertMultiply:
    """Multiply ``tensor`` by the constant ``scale`` (broadcast to the tensor) for ``consumers``."""

    stage: ClassVar[Stage] = Stage.TRANSFORM

    tensor: TensorRef
    consumers: tuple[InputRef, ...]
    scale: np.ndarray
    name: str


@dataclass(frozen=True, eq=False)
class MaskWeight:
    """Multiply the constant weight on input ``port`` of ``node`` by ``mask`` (0/1, the constant's shape).

    Unstructured sparsity: PyTorch keeps the float weight and masks it on the fly (a ``BinaryMask`` hook;
    ``trainable``: an ``RBMask`` whose logits start at the mask and learn); ONNX and OpenVINO store the
    masked constant (and refuse ``trainable``: their models do not train). ``name`` names the mask (e.g.
    the masked parameter); edits with the same ``name`` on a weight read by several operations share one mask.
    """

    stage: ClassVar[Stage] = Stage.SPARSITY_MASK

    node: str
    port: int
    mask: np.ndarray
    name: str
    trainable: bool = False


@dataclass(frozen=True, eq=False)
class MaskChannels:
    """Multiply the constant on input ``port`` of ``node`` by the 0/1 ``mask`` along dimension ``dim``
    (filter pruning: a producer's output filters and bias, a consumer's input channels, a norm's affine
    parameters). PyTorch masks on the fly (a ``FilterPruningMask`` hook named ``name``, updated as
    training goes); other backends do not carry it out.
    """

    stage: ClassVar[Stage] = Stage.PRUNING_MASK

    node: str
    port: int
    dim: int
    mask: np.ndarray
    name: str


Edit = QuantizeActivation | QuantizeWeight | SetConstant | InsertMultiply | MaskWeight | MaskChannels


@dataclass(frozen=True)
class CompressWeight:
    """Store the constant weight on input ``port`` of ``node`` in the low-bit form ``weight``.

    ``weight`` (a ``numerics.encoding.CompressedWeight``) carries the codes, scales, zero points, mode,
    group size and original shape; the backend stores them as they are and inserts the
    decompression that reproduces ``weight.decompress()``.
    """

    stage: ClassVar[Stage] = Stage.WEIGHT_QUANTIZER

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

    stage: ClassVar[Stage] = Stage.CORRECTION

    node: str
    input_port: int
    a: CompressedWeight | np.ndarray
    b: CompressedWeight | np.ndarray
    name: str


WeightEdit = CompressWeight | AddLowRankCorrection


class EditStream:
    """Edits produced one at a time, so that large compressed weights need not all exist at once.

    Iterable once; backends consume it in order (weights are released as soon as they are stored).
    The streaming contract: the producer yields the edits of each place (``target``) in stage order
    (a weight's ``CompressWeight`` before the ``AddLowRankCorrection`` of its layer); edits at different
    places are independent, so backends carry each out as it arrives. ``ordered`` checks the contract
    lazily, item by item, instead of sorting (which would hold every compressed weight at once).
    """

    def __init__(self, edits: Iterable, options: dict | None = None):
        self._edits = edits
        self.options = dict(options or {})  # backend storage options (e.g. onnx_accuracy_level)

    def __iter__(self) -> Iterator:
        return iter(self._edits)


def stage_of(edit) -> Stage:
    """The stage of ``edit``; ValidationError for an object that is not an edit."""
    stage = getattr(type(edit), "stage", None)
    if not isinstance(stage, Stage):
        raise ValidationError(f"{edit!r} is not an edit (edit kinds: {', '.join(sorted(_KINDS))})")
    return stage


def target_of(edit) -> tuple:
    """The place of the model ``edit`` acts on: a constant input, an activation tensor or a layer output."""
    if isinstance(edit, (SetConstant, QuantizeWeight, CompressWeight, MaskWeight, MaskChannels)):
        return ("constant", edit.node, edit.port)
    if isinstance(edit, AddLowRankCorrection):
        return ("output", edit.node)
    if isinstance(edit, (QuantizeActivation, InsertMultiply)):
        return ("tensor", edit.tensor.node, edit.tensor.port)
    stage_of(edit)  # raises for non-edits
    return ("edit", id(edit))


def ordered(edits: Sequence | EditStream) -> list | EditStream:
    """``edits`` in the order backends carry them out.

    A list or tuple: sorted by stage, stable (edits of one stage keep their given order). An
    ``EditStream``: a new stream over the same items, unsorted and still lazy, that raises
    ValidationError when an item would act on a place after an edit of a later stage (the contract).
    """
    if isinstance(edits, EditStream):
        return EditStream(_checked(edits), edits.options)
    return sorted(edits, key=stage_of)


def _checked(stream: EditStream) -> Iterator:
    latest: dict[tuple, Stage] = {}  # per place, the last stage seen (small: no edit is kept)
    for edit in stream:
        stage, target = stage_of(edit), target_of(edit)
        before = latest.get(target)
        if before is not None and stage < before:
            raise ValidationError(
                f"edit stream out of stage order: {type(edit).__name__} (stage {stage.name}) on {target} "
                f"arrived after a {before.name} edit there; a stream yields each place's edits in stage order"
            )
        latest[target] = stage
        yield edit


_KINDS = {cls.__name__: cls for cls in (QuantizeActivation, QuantizeWeight, SetConstant, InsertMultiply,
                                        CompressWeight, AddLowRankCorrection, MaskWeight,
                                        MaskChannels)}
