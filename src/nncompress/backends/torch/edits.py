"""Carrying out edits on a deep copy of a PyTorch model (the input model is never touched).

Every edit becomes a hook module at a point of the data flow (see ``hooks``):

- ``QuantizeActivation``: a quantizer right after the tensor's producer (``consumers`` None) or at the
  end of the pre-hook chain of each listed consumer input (one module shared by those inputs).
- ``QuantizeWeight``: a quantizer in the pre-hook chain of the constant input: the float parameter
  stays and is fake-quantized on the fly at every forward (``strip`` bakes it in).
- ``InsertMultiply``: a ``Multiply`` module on each listed consumer input.
- ``MaskWeight``: a ``sparsity.BinaryMask`` (``trainable``: an ``RBMask``) in the pre-hook chain of the
  constant input (stage SPARSITY_MASK: after a replaced constant, before a weight quantizer); edits with one
  name share one module; ``strip`` bakes it in.
- ``MaskChannels``: a ``pruning_mask.FilterPruningMask`` in the pre-hook chain of the constant (filter pruning).
- ``SetConstant``: written into the copy's parameter or buffer when no other operation reads it;
  otherwise (tied weights, constants computed inside ``forward``) a ``Replace`` hook at the start of
  that input's chain.
- ``CompressWeight`` / ``AddLowRankCorrection`` (weight compression, see ``weight_storage``): the
  copy is made without the weights of weighted nodes and the edits (a list or an ``EditStream``)
  are carried out in order, each compressed weight stored as soon as it arrives.

Edits are carried out in ``graph.edits.ordered`` order and every hook takes the stage of its edit,
so hooks sharing a chain run in stage order (a constant's replacement, then masks, then quantizers)
whatever order they were inserted in. A tensor produced by a hook (a node of the captured graph of a
hooked model) is addressed by the hook's name; inserting after it or before it places the new hook
next to it in its chain, within the stage order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from nncompress.errors import ValidationError
from nncompress.graph.edits import (
    AddLowRankCorrection,
    CompressWeight,
    Edit,
    EditStream,
    FakeConvertParams,
    InsertMultiply,
    MaskChannels,
    MaskWeight,
    QuantizeActivation,
    QuantizeWeight,
    SetConstant,
    Stage,
    ordered,
    stage_of,
)
from nncompress.graph.ir import InputRef, TensorRef

from .capture import Capture
from .fake_quantize import Multiply, Replace, quantizer_from_params
from .fp8 import FP8Quantizer
from .hooks import ChainKey, HookStorage, attach_storage
from .inputs import copy_model, named_tensor
from .sparsity import BinaryMask, RBMask


class Editor:
    """Applies edits to ``model`` (a private copy) using the capture of the model it was copied from."""

    def __init__(self, model: nn.Module, capture: Capture, weights=None):
        self.model = model
        self.capture = capture
        self.graph = capture.graph
        self.weights = weights  # a weight_storage.WeightStore when weights are compressed
        self._storage: HookStorage | None = None if weights is not None else attach_storage(model)
        self.stage = Stage.ACTIVATION_QUANTIZER  # of the edit being carried out: its hooks take it
        self._masks: dict[str, nn.Module] = {}  # MaskWeight name -> its mask module (shared weights share it)

    @property
    def storage(self) -> HookStorage:
        """The hook storage, attached on first use when compressing weights (a plain copy runs faster)."""
        if self._storage is None:
            self._storage = attach_storage(self.model)
        return self._storage

    def apply(self, edits: Sequence[Edit] | EditStream) -> None:
        for edit in ordered(edits):  # an EditStream: one at a time, as it arrives
            self.stage = stage_of(edit)
            if isinstance(edit, (CompressWeight, AddLowRankCorrection)):
                self._weight_edit(edit)
            elif isinstance(edit, QuantizeActivation):
                self._insert_on_tensor(edit.tensor, edit.consumers, _quantizer(edit.params), edit.name)
            elif isinstance(edit, QuantizeWeight):
                self._check_constant(edit.node, edit.port)
                key, index = self._before(InputRef(edit.node, edit.port))
                quantizer = _quantizer(edit.params)
                quantizer.on_constant = True
                self._insert(key, index, edit.name, quantizer)
                self._note_constant(key)
            elif isinstance(edit, InsertMultiply):
                self._insert_on_tensor(edit.tensor, edit.consumers or None, Multiply(edit.scale), edit.name)
            elif isinstance(edit, SetConstant):
                self._set_constant(edit)
            elif isinstance(edit, MaskWeight):
                self._mask_weight(edit)
            elif isinstance(edit, MaskChannels):
                self._mask_channels(edit)
            else:
                raise ValidationError(f"the torch backend cannot apply an edit of type {type(edit).__name__}")

    def _weight_edit(self, edit: CompressWeight | AddLowRankCorrection) -> None:
        if self.weights is None:
            raise ValidationError(f"{type(edit).__name__} edits go through apply_edits (weight compression copy)")
        if isinstance(edit, CompressWeight):
            self.weights.compress(edit, self)
        else:
            self.weights.add_low_rank(edit)

    def _insert_on_tensor(self, tensor: TensorRef, consumers, module: nn.Module, name: str) -> None:
        if tensor.node not in self.graph.nodes:
            raise ValidationError(f"no tensor {tensor.node}:{tensor.port} in the captured graph")
        if consumers is None:
            key, index = self._after(tensor)
            self._insert(key, index, name, module)
            return
        for consumer in consumers:
            if self.graph.producer(consumer) != tensor:
                raise ValidationError(
                    f"{consumer.node} input {consumer.port} does not read {tensor.node}:{tensor.port}"
                )
            key, index = self._before(consumer)
            self._insert(key, index, name, module)

    def _insert(self, key: ChainKey, index: int, name: str, module: nn.Module) -> str:
        node = self.graph.nodes.get(key[1])
        if node is not None and "signature" in node.attrs:
            self.storage.signatures[key[1]] = node.attrs["signature"]
        return self.storage.insert(key, index, name, module, self.stage)

    def _after(self, tensor: TensorRef) -> tuple[ChainKey, int]:
        """Where a hook goes to act right after ``tensor`` is produced."""
        found = self.storage.where(tensor.node)
        if found is not None:
            key, index = found
            return key, index + 1
        return ("post", tensor.node, tensor.port), 0

    def _before(self, consumer: InputRef) -> tuple[ChainKey, int]:
        """Where a hook goes to act on the value input ``consumer`` reads."""
        found = self.storage.where(consumer.node)
        if found is not None:
            return found
        key = ("pre", consumer.node, consumer.port)
        return key, len(self.storage.chain(*key))

    def _check_constant(self, node: str, port: int) -> None:
        if node not in self.graph.nodes:
            raise ValidationError(f"no operation named {node!r} in the captured graph")
        if port not in self.graph.node(node).const_ports:
            raise ValidationError(f"input {port} of {node!r} is not a constant (weight or bias)")

    def _mask_weight(self, edit: MaskWeight) -> None:
        self._check_constant(edit.node, edit.port)
        shape = tuple(self.graph.node(edit.node).const_ports[edit.port])
        mask = np.asarray(edit.mask)
        if mask.size != int(np.prod(shape, dtype=np.int64)):
            raise ValidationError(
                f"MaskWeight on {edit.node!r} input {edit.port}: mask {mask.shape} does not fit {shape}"
            )
        pname = self.capture.port_params.get((edit.node, edit.port))
        key, index = self._before(InputRef(edit.node, edit.port))
        kind = RBMask if edit.trainable else BinaryMask
        module = self._masks.get(edit.name)
        if not isinstance(module, kind) or tuple(module.binary_mask.shape) != shape:
            module = kind.from_mask(mask.reshape(shape), pname or edit.name)
            if pname is not None:
                module.to(named_tensor(self.model, pname).device)  # the weight's device: not moved every forward
            module.train(self.model.training)
            self._masks[edit.name] = module  # a weight read by several operations: one mask
        self._insert(key, index, edit.name, module)
        self._note_constant(key)

    def _mask_channels(self, edit: MaskChannels) -> None:
        from .pruning_mask import FilterPruningMask

        self._check_constant(edit.node, edit.port)
        shape = tuple(self.graph.node(edit.node).const_ports[edit.port])
        mask = np.asarray(edit.mask)
        if not -len(shape) <= edit.dim < len(shape) or mask.shape != (shape[edit.dim],):
            raise ValidationError(
                f"MaskChannels on {edit.node!r} input {edit.port}: a mask of shape {mask.shape} along dim "
                f"{edit.dim} does not fit {shape}"
            )
        module = FilterPruningMask(len(mask), edit.dim)
        module.set_mask(mask)
        pname = self.capture.port_params.get((edit.node, edit.port))
        if pname is not None:
            module.to(named_tensor(self.model, pname).device)
        key, index = self._before(InputRef(edit.node, edit.port))
        self._insert(key, index, edit.name, module)
        self._note_constant(key)

    def _set_constant(self, edit: SetConstant) -> None:
        self._check_constant(edit.node, edit.port)
        value = np.asarray(edit.value)
        pname = self.capture.port_params.get((edit.node, edit.port))
        if pname is not None and self.weights is not None:
            self.weights.materialize(pname)
        if pname is not None and self.capture.param_uses[pname] == 1:
            target = named_tensor(self.model, pname)
            if target.numel() != value.size:
                raise ValidationError(
                    f"SetConstant on {edit.node!r} input {edit.port}: {value.shape} does not fit {tuple(target.shape)}"
                )
            with torch.no_grad():
                target.copy_(torch.from_numpy(np.ascontiguousarray(value)).reshape(target.shape))
            return
        key = ("pre", edit.node, edit.port)
        self._insert(key, 0, f"{edit.node}/nncompress_constant_{edit.port}", Replace(value))
        self._note_constant(key)

    def _note_constant(self, key: ChainKey) -> None:
        """Remember that chain ``key`` acts on a constant, and on which exclusive parameter."""
        pname = self.capture.port_params.get(key[1:])
        exclusive = pname is not None and self.capture.param_uses[pname] == 1
        self.storage.constants[key] = pname if exclusive else None


def _quantizer(params) -> nn.Module:
    """The quantizer module of an edit's parameters: integer grid, or FP8 (``fp8.FP8Quantizer``)."""
    if isinstance(params, FakeConvertParams):
        return FP8Quantizer(params)
    return quantizer_from_params(params)


def has_weight_edits(edits) -> bool:
    """Whether ``edits`` compress weights (an ``EditStream``, or a list with weight edits)."""
    if isinstance(edits, EditStream):
        return True
    return any(isinstance(e, (CompressWeight, AddLowRankCorrection)) for e in edits)


def apply_edits(model: nn.Module, capture: Capture, edits: Sequence[Edit] | EditStream) -> nn.Module:
    """A deep copy of ``model`` with ``edits`` carried out as hooks (see the module docstring)."""
    if has_weight_edits(edits):
        from .weight_storage import WeightStore

        store = WeightStore(model, capture)
        Editor(store.model, capture, store).apply(edits)
        return store.finish()
    result = copy_model(model)
    Editor(result, capture).apply(edits)
    return result
