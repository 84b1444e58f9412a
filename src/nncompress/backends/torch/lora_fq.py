"""Trainable fake-quantized weights, with LoRA adapters: ``compress_weights``' FQ, FQ_LORA, FQ_LORA_NLS formats.

``compress_weights`` first compresses as for the default DQ format (scales and zero points from
round-to-nearest or scale estimation); ``to_fake_quantize`` then swaps each ``CompressedStorage`` of the
primary mode for a ``FakeQuantizedWeight`` under the same key, so the layer reads it through the same
forward hooks (``weight_storage.materialize_weight``). That module holds the original float weight
``W`` (frozen, except in the FQ format, which trains the weight itself), the trainable ``scale`` (and
``zero_point``, rounded straight-through, for asymmetric modes) and, for the LoRA formats, adapters
``lora_A`` ``[r, in]`` (random, as ``nn.Linear`` initialises weights) and ``lora_B`` ``[out, r]``
(zeros). Its forward is, per group,

    W^ = fake_quantize(W + lora_B @ lora_A; scale, zero_point)

(``round(w / s + zp)`` clipped to the grid, as the encoder rounds; straight-through rounding): the
adapters are added to the weight inside the quantizer, so the deployed model is a plain INT4 model with
nothing to add at inference. With ``lora_B = 0`` the initial output is exactly the DQ model's.

FQ_LORA_NLS (neural low-rank search) makes the rank elastic: in training mode each forward uses the
first ``r'`` rows/columns of the adapters, ``r'`` drawn from ``rank_choices`` (``r, 3r/4, r/2``); in
eval mode and at ``strip`` the ``active_rank`` (the largest unless ``set_lora_rank`` picks another).

``strip_fake_quantized`` merges the adapters and encodes each weight to the packed storage the DQ
format has (``CompressedStorage``): outputs equal the fake-quantized model's (same arithmetic).
"""

from __future__ import annotations

import math
import weakref

import numpy as np
import torch
from torch import nn

from nncompress.errors import ValidationError
from nncompress.log import logger
from nncompress.numerics.encoding import CompressedWeight
from nncompress.numerics.lowbit import code_range, mode_bits, pack_4bit
from nncompress.numerics.xp import round_ste
from nncompress.parameters import CompressWeightsMode as Mode

from .fake_quantize import is_tracing
from .inputs import named_tensor
from .weight_storage import CompressedStorage, materialize_weight

# the fake-quantized weight for inference, per module; not part of state_dict or copies
_INFERENCE_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
FORMATS = ("fake_quantize", "fake_quantize_with_lora", "fake_quantize_with_lora_nls")


def nls_rank_choices(rank: int) -> tuple[int, ...]:
    """The elastic ranks of FQ_LORA_NLS for a maximal ``rank``: ``r, 3r/4, r/2`` (distinct, positive), descending."""
    return tuple(sorted({r for r in (rank, rank * 3 // 4, rank // 2) if r > 0}, reverse=True))


class FakeQuantizedWeight(nn.Module):
    """A weight fake-quantized on its group-wise integer grid, optionally with (elastic) LoRA adapters.

    ``forward()`` returns the fake-quantized weight in its original shape and dtype.
    """

    def __init__(self, weight: torch.Tensor, storage: CompressedStorage, rank: int = 0,
                 rank_choices: tuple[int, ...] = (), train_weight: bool = False):
        super().__init__()
        self.mode = storage.mode
        self.shape, self.stored_shape = tuple(storage.shape), tuple(storage.stored_shape)
        self.axis, self.group_size = storage.axis, storage.group_size
        self.level_low, self.level_high = code_range(self.mode)
        device = storage.data.device
        self.weight = nn.Parameter(weight.detach().to(device).clone(), requires_grad=train_weight)
        self.scale = nn.Parameter(storage.scale.detach().float().clone())
        zero_point = None if storage.zero_point is None else nn.Parameter(storage.zero_point.detach().float())
        self.zero_point = zero_point
        self.rank_choices = tuple(rank_choices)
        self.active_rank = int(rank)
        if rank:
            rows, cols = self.shape[0], int(np.prod(self.shape[1:], dtype=np.int64))
            self.lora_A = nn.Parameter(torch.empty(rank, cols, dtype=torch.float32, device=device))
            self.lora_B = nn.Parameter(torch.zeros(rows, rank, dtype=torch.float32, device=device))
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear initialises its weight
        else:
            self.lora_A = self.lora_B = None
        self.register_buffer("dtype_ref", torch.empty(0, dtype=storage.dtype_ref.dtype, device=device),
                             persistent=False)

    @property
    def rank(self) -> int:
        """The adapters' full rank (0 without adapters)."""
        return 0 if self.lora_A is None else int(self.lora_A.shape[0])

    @property
    def placeholder(self) -> torch.Tensor:
        """A ``meta`` tensor with the weight's shape and dtype: ``module.weight`` outside forward."""
        return torch.empty(self.shape, dtype=self.dtype_ref.dtype, device="meta")

    def _rank_now(self) -> int:
        if self.rank_choices and self.training and torch.is_grad_enabled():
            return self.rank_choices[int(torch.randint(len(self.rank_choices), ()))]
        return self.active_rank

    def merged(self, rank: int | None = None) -> torch.Tensor:
        """``W + lora_B[:, :r] @ lora_A[:r]`` (float32) in the stored, grouped shape."""
        value = self.weight.float()
        rank = self.active_rank if rank is None else rank
        if self.lora_A is not None and rank:
            value = value + (self.lora_B[:, :rank] @ self.lora_A[:rank]).reshape(self.shape)
        return value.reshape(self.stored_shape)

    def _grid(self, ste: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.zero_point is None:
            return self.scale, None
        zero_point = round_ste(self.zero_point) if ste else torch.round(self.zero_point)
        return self.scale, torch.clamp(zero_point, self.level_low, self.level_high)

    def forward(self) -> torch.Tensor:
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        if grad or is_tracing():
            return self._fake_quantized(grad)
        # inference: computed again only after a parameter (an optimizer step) or the active rank changed
        params = tuple((p.data_ptr(), p._version) for p in self.parameters())
        versions = (self.active_rank, self.dtype_ref.dtype, *params)
        cached = _INFERENCE_CACHE.get(self)
        if cached is None or cached[0] != versions:
            cached = (versions, self._fake_quantized(False))
            _INFERENCE_CACHE[self] = cached
        return cached[1]

    def _levels(self, value: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
                ste: bool) -> torch.Tensor:
        """``clip(round(w / scale + zero_point))``: the zero point is added before rounding, as the encoder
        (``numerics.lowbit.quantize_codes``) does, so near-ties get the DQ format's codes (adding it after,
        as QuantizeLinear does, differs by one level where ``w / scale + zero_point`` rounds to a half)."""
        normalized = value / scale if zero_point is None else value / scale + zero_point
        rounded = round_ste(normalized) if ste else torch.round(normalized)
        return torch.clamp(rounded, self.level_low, self.level_high)

    def _fake_quantized(self, grad: bool) -> torch.Tensor:
        scale, zero_point = self._grid(grad)
        levels = self._levels(self.merged(self._rank_now()), scale, zero_point, grad)
        value = (levels if zero_point is None else levels - zero_point) * scale
        return value.reshape(self.shape).to(self.dtype_ref.dtype)

    @torch.no_grad()
    def compressed(self) -> CompressedWeight:
        """The merged weight encoded on the trained grid (codes packed two per byte for 4-bit modes)."""
        scale, zero_point = self._grid(False)
        levels = self._levels(self.merged(), scale, zero_point, False)
        codes = levels.cpu().numpy().astype(np.int8 if self.level_low < 0 else np.uint8)
        data = pack_4bit(codes) if mode_bits(self.mode) == 4 else codes
        zp = None if zero_point is None else zero_point.cpu().numpy().astype(np.uint8)
        return CompressedWeight(mode=self.mode, shape=self.shape, axis=self.axis, group_size=self.group_size,
                                data=data, scale=scale.detach().cpu().numpy().astype(np.float32), zero_point=zp,
                                dtype=str(self.dtype_ref.dtype).removeprefix("torch."))

    def extra_repr(self) -> str:
        granularity = "per-channel" if self.group_size == -1 else f"group_size={self.group_size}"
        lora = f", lora rank={self.rank}" if self.rank else ""
        elastic = f" (elastic {list(self.rank_choices)}, active {self.active_rank})" if self.rank_choices else ""
        return f"{self.mode.value}, shape={list(self.shape)}, {granularity}{lora}{elastic}"


def _read_attr(module: nn.Module, key: str) -> str | None:
    """The attribute (e.g. ``weight``) that ``module``'s materialize hook fills from child ``key``."""
    for hook in module._forward_pre_hooks.values():
        if getattr(hook, "func", None) is materialize_weight and hook.keywords.get("key") == key:
            return hook.keywords["attr"]
    return None


def to_fake_quantize(model: nn.Module, original: nn.Module, compression_format: str, rank: int,
                     mode: Mode) -> list[str]:
    """In ``model`` (a fresh ``compress_weights`` result of ``original``), replace each ``CompressedStorage``
    of ``mode`` (an integer mode) by a ``FakeQuantizedWeight`` started from ``original``'s float weight;
    returns the names of the weights converted. Weights in the backup mode stay compressed and frozen."""
    if compression_format not in FORMATS:
        raise ValidationError(f"compression_format must be one of {FORMATS}; got {compression_format!r}")
    lora = compression_format != "fake_quantize"
    choices = nls_rank_choices(rank) if compression_format.endswith("_nls") else ()
    storages = [(path, m, k, c) for path, m in model.named_modules() for k, c in m._modules.items()
                if isinstance(c, CompressedStorage)]
    converted: dict[int, FakeQuantizedWeight] = {}
    names = []
    for path, module, key, storage in storages:
        if storage.mode is not mode:
            continue
        if id(storage) not in converted:
            attr = _read_attr(module, key)
            name = f"{path}.{attr}" if path else attr
            source = _float_weight(original, name) if attr is not None else None
            if source is None or tuple(source.shape) != storage.shape:
                logger.warning("compress_weights(compression_format=%r): %s.%s is read through a graph hook, not "
                               "by its own layer; it stays compressed and frozen", compression_format, path, key)
                continue
            converted[id(storage)] = FakeQuantizedWeight(source, storage, rank if lora else 0, choices,
                                                         train_weight=not lora)
            names.append(name)
        module._modules[key] = converted[id(storage)]
    return names


def _float_weight(model: nn.Module, name: str) -> torch.Tensor | None:
    try:
        value = named_tensor(model, name)
    except AttributeError:
        return None
    return value if isinstance(value, torch.Tensor) and value.device.type != "meta" else None


def fake_quantized_weights(model: nn.Module) -> list[FakeQuantizedWeight]:
    """The distinct ``FakeQuantizedWeight`` modules of ``model``."""
    seen: dict[int, FakeQuantizedWeight] = {}
    for module in model.modules():
        if isinstance(module, FakeQuantizedWeight):
            seen.setdefault(id(module), module)
    return list(seen.values())


def lora_rank_choices(model: nn.Module) -> tuple[int, ...]:
    """The elastic ranks every FQ_LORA_NLS adapter of ``model`` offers, descending."""
    elastic = [m.rank_choices for m in fake_quantized_weights(model) if m.rank_choices]
    if not elastic:
        raise ValidationError("the model has no elastic LoRA adapters (compress_weights with "
                              "compression_format=CompressionFormat.FQ_LORA_NLS makes them)")
    return tuple(r for r in elastic[0] if all(r in choices for choices in elastic))


def set_lora_rank(model: nn.Module, rank: int | None = None) -> int:
    """Set the active rank of every elastic (FQ_LORA_NLS) adapter: ``rank`` (one of the choices) or the
    largest (None); returns how many adapters were set. ``strip`` merges the active rank."""
    elastic = [m for m in fake_quantized_weights(model) if m.rank_choices]
    if not elastic:
        raise ValidationError("set_lora_rank: the model has no elastic LoRA adapters (compress_weights with "
                              "compression_format=CompressionFormat.FQ_LORA_NLS makes them)")
    for module in elastic:
        if rank is not None and rank not in module.rank_choices:
            raise ValidationError(f"set_lora_rank: rank={rank!r} is not one of the elastic ranks "
                                  f"{list(module.rank_choices)}")
        module.active_rank = module.rank_choices[0] if rank is None else int(rank)
    return len(elastic)


def strip_fake_quantized(model: nn.Module) -> int:
    """In place: every ``FakeQuantizedWeight`` becomes the ``CompressedStorage`` of its merged weight on its
    trained grid (the DQ format); returns how many were encoded."""
    encoded: dict[int, CompressedStorage] = {}
    for module in list(model.modules()):
        for key, child in list(module._modules.items()):
            if isinstance(child, FakeQuantizedWeight):
                if id(child) not in encoded:
                    encoded[id(child)] = CompressedStorage(child.compressed(), child.dtype_ref.dtype,
                                                           child.weight.device)
                module._modules[key] = encoded[id(child)]
    return len(encoded)

