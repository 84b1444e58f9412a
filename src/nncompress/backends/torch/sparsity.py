"""Sparsity mask modules: thin ``nn.Module``s over ``numerics.sparsity``, used as hooks on a weight's chain
(``graph.edits.Stage.SPARSITY_MASK``: after a pruning mask, before a weight quantizer).

``forward(weight)`` returns the masked weight in the weight's own dtype; masked weights get zero gradient.

- ``BinaryMask``: a fixed 0/1 mask in the boolean buffer ``_binary_mask`` (magnitude and const sparsity;
  ``set_mask`` replaces it, a checkpoint's ``state_dict`` restores it).
- ``RBMask``: trainable mask logits (parameter ``mask``, init ``logit(0.99)``); in training a fresh
  stochastic mask ``[sigmoid(m + logit(u)) > 0.5]`` each forward, in eval or once frozen the deterministic
  ``[sigmoid(m) > 0.5]``; the threshold passes gradients straight through to the logits.
- ``RBLoss``: NNCF 3.x's loss over a model's RB masks.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from nncompress.errors import ValidationError
from nncompress.numerics import sparsity as sp

from .hooks import storage_of


class BinaryMask(nn.Module):
    """``weight * mask`` with a fixed boolean mask (all ones by default)."""

    def __init__(self, shape_or_mask, tensor_name: str = ""):
        super().__init__()
        if isinstance(shape_or_mask, (tuple, list, torch.Size)):
            mask = torch.ones(tuple(shape_or_mask), dtype=torch.bool)
        else:
            mask = torch.as_tensor(np.asarray(shape_or_mask) if not torch.is_tensor(shape_or_mask) else shape_or_mask)
            mask = mask != 0
        self.register_buffer("_binary_mask", mask)
        self.tensor_name = tensor_name  # the parameter it masks, for statistics

    @classmethod
    def from_mask(cls, mask, tensor_name: str = "") -> BinaryMask:
        return cls(mask, tensor_name)

    @property
    def binary_mask(self) -> torch.Tensor:
        return self._binary_mask

    def set_mask(self, mask) -> None:
        """Replace the mask (same number of elements; nonzero = keep)."""
        value = torch.as_tensor(mask).to(self._binary_mask.device)
        if value.numel() != self._binary_mask.numel():
            raise ValidationError(f"mask of {tuple(value.shape)} does not fit {tuple(self._binary_mask.shape)}")
        self._binary_mask.copy_(value.reshape(self._binary_mask.shape) != 0)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self._binary_mask.to(weight.device)  # bool promotes to the weight's dtype


class SharedGenerator:
    """One seed, one ``torch.Generator`` per device made from it on first use: masks that share it draw one
    sequence, and processes that share the seed (``reseed`` with a broadcast value) draw the same one.

    Copies and pickles keep the seed and restart the sequence (a ``torch.Generator`` is not copied)."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}

    def on(self, device: torch.device) -> torch.Generator:
        key = str(device)
        generator = self._generators.get(key)
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(self.seed)
            self._generators[key] = generator
        return generator

    def reseed(self, seed: int) -> None:
        """Start every device's sequence again from ``seed``."""
        self.seed = int(seed)
        self._generators.clear()

    def __getstate__(self) -> dict:
        return {"seed": self.seed}

    def __setstate__(self, state: dict) -> None:
        self.seed = int(state["seed"])
        self._generators = {}


class RBMask(nn.Module):
    """Trainable RB mask: logits ``mask``, stochastic in training, deterministic in eval or frozen."""

    def __init__(self, shape, tensor_name: str = "", eps: float = sp.RB_EPS):
        super().__init__()
        self.mask = nn.Parameter(torch.full(tuple(shape), sp.RB_INIT_LOGIT, dtype=torch.float32))
        self.register_buffer("frozen", torch.tensor(False))
        self.eps = eps
        self.tensor_name = tensor_name
        # sampling RNG: None (torch's global one), a torch.Generator, or a SharedGenerator
        self.generator: torch.Generator | SharedGenerator | None = None

    @classmethod
    def from_mask(cls, mask, tensor_name: str = "") -> RBMask:
        """Logits ``+logit(0.99)`` where ``mask`` keeps a weight, ``-logit(0.99)`` where it drops one."""
        keep = torch.as_tensor(np.asarray(mask) != 0)
        module = cls(tuple(keep.shape), tensor_name)
        with torch.no_grad():
            module.mask.copy_(torch.where(keep, sp.RB_INIT_LOGIT, -sp.RB_INIT_LOGIT))
        return module

    @property
    def binary_mask(self) -> torch.Tensor:
        """The deterministic mask ``sigmoid(m) > 0.5`` (boolean, no gradient)."""
        return self.mask.detach() > 0

    def freeze(self, frozen: bool = True) -> None:
        """Stop sampling and training the mask (the deterministic mask is used from now on)."""
        self.frozen.fill_(frozen)
        self.mask.requires_grad_(not frozen)

    def sample(self) -> torch.Tensor:
        """The 0/1 mask of this forward (float32, STE to the logits)."""
        if self.training and not bool(self.frozen):
            generator = self.generator
            if isinstance(generator, SharedGenerator):
                generator = generator.on(self.mask.device)
            u = torch.rand(self.mask.shape, generator=generator, device=self.mask.device)
            return sp.rb_mask(self.mask, u, self.eps)
        return sp.rb_mask(self.mask)

    def kept(self) -> torch.Tensor:
        """``K`` of this layer (deterministic mask, STE), for the RB loss."""
        return sp.rb_kept(self.mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.sample().to(device=weight.device, dtype=weight.dtype)


MASKS = (BinaryMask, RBMask)


def mask_hooks(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(hook name, mask module) of every sparsity mask hook of a hooked model."""
    storage = storage_of(model)
    if storage is None:
        return
    for name in list(storage.keys):
        module = storage.module(name)
        if isinstance(module, MASKS):
            yield name, module


class RBLoss:
    """The RB sparsity loss of a model with RB masks (``prune(..., UNSTRUCTURED_REGULARIZATION_BASED)``):
    ``((K/N - (1 - target_ratio)) / p)^2`` over all its ``RBMask`` modules (K weights kept of N by the
    deterministic masks, straight-through gradient to the logits). Call it (no arguments) each step and add
    it to the task loss; it is 0 once every mask is frozen."""

    def __init__(self, model: nn.Module, target_ratio: float, p: float = sp.RB_P):
        self.target_ratio = sp.check_level(target_ratio, "target_ratio")
        if not (isinstance(p, (int, float)) and p > 0):
            raise ValidationError(f"p must be a positive number; got {p!r}")
        self.p = float(p)
        unique = {id(m): m for _, m in mask_hooks(model) if isinstance(m, RBMask)}  # shared weights: one mask
        self.masks = list(unique.values())
        if not self.masks:
            raise ValidationError(
                f"the {type(model).__name__} has no RB masks: call nncompress.prune(model, "
                "PruneMode.UNSTRUCTURED_REGULARIZATION_BASED, examples_inputs=...) first and pass its result"
            )
        self.total = sum(m.mask.numel() for m in self.masks)

    def __call__(self) -> torch.Tensor:
        if all(bool(m.frozen) for m in self.masks):
            return torch.zeros((), device=self.masks[0].mask.device)
        kept = sum(m.kept() for m in self.masks)
        return sp.rb_loss(kept, self.total, self.target_ratio, self.p)

    forward = __call__

    def current_ratio(self) -> float:
        """``1 - K/N``: the fraction of weights the deterministic masks drop now."""
        return 1.0 - float(sum(int(m.binary_mask.sum()) for m in self.masks)) / self.total
