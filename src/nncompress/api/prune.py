"""``prune`` (unstructured magnitude / RB sparsity of a PyTorch model), ``RBLoss`` and ``pruning_statistic``.

NNCF 3.x's post-training entry points for the masks training-time sparsity uses: the same formulas
(``numerics.sparsity``), the same ``MaskWeight`` edits and the same mask modules (``backends.torch.sparsity``).
The weights of Conv / ConvTranspose / Linear / Embedding operations in scope are masked on a hooked copy
(the input model is not modified); a weight read by several operations (tied embeddings) gets one mask.

- ``UNSTRUCTURED_MAGNITUDE_LOCAL``: every weight to ``ratio`` with its own threshold on ``|w|``.
- ``UNSTRUCTURED_MAGNITUDE_GLOBAL``: one threshold on ``|w| / ‖W‖₂`` over all weights for ``ratio``
  overall, found in bounded memory (``numerics.sparsity.global_threshold``).
- ``UNSTRUCTURED_REGULARIZATION_BASED``: trainable RB masks (all weights kept at first); train with
  ``RBLoss(model, target_ratio)`` added to the task loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from nncompress.backends.registry import backend_name, get_adapter
from nncompress.errors import UnsupportedBackendError, ValidationError
from nncompress.graph.edits import MaskWeight
from nncompress.graph.ops import OpKind
from nncompress.log import logger
from nncompress.numerics import sparsity as sp
from nncompress.parameters import PruneMode, coerce_enum
from nncompress.scopes import IgnoredScope, match_ignored_scope

TModel = TypeVar("TModel")
PRUNABLE = (OpKind.CONV, OpKind.DEPTHWISE_CONV, OpKind.CONV_TRANSPOSE, OpKind.LINEAR, OpKind.EMBEDDING)
_TORCH_ONLY = (
    "{what} works on PyTorch models (torch.nn.Module) only; got {backend} model ({cls}). Prune the PyTorch "
    "model, then export it (nncompress.export or torch.onnx.export) to get an ONNX / OpenVINO model with the zeros"
)


def _require_torch(model: Any, what: str) -> None:
    backend = backend_name(model)
    if backend != "torch":
        article = "an" if backend[0] in "aeiou" else "a"
        raise UnsupportedBackendError(
            _TORCH_ONLY.format(what=what, backend=f"{article} {backend}", cls=type(model).__name__)
        )


def prune(
    model: TModel,
    mode: PruneMode,
    *,
    ratio: float | None = None,
    ignored_scope: IgnoredScope | None = None,
    examples_inputs: Any | None = None,
) -> TModel:
    """A copy of the PyTorch ``model`` with sparsity masks on its Conv/Linear/Embedding weights (see module doc)."""
    mode = coerce_enum(mode, PruneMode, "mode")
    _require_torch(model, "prune")
    if mode is PruneMode.UNSTRUCTURED_REGULARIZATION_BASED:
        if ratio is not None:
            raise ValidationError(
                f"ratio={ratio!r} is not used by {mode.name}: masks start dense and learn the level; give the "
                "target to RBLoss(model, target_ratio=...) instead"
            )
    elif ratio is None:
        raise ValidationError(f"{mode.name} needs ratio=... (the fraction of weights to zero, in [0, 1))")
    else:
        ratio = sp.check_level(ratio, "ratio")
    if examples_inputs is None:
        raise ValidationError(
            "prune needs examples_inputs=... (one model input: a tensor, a tuple of positional arguments or a dict "
            "of keyword arguments) to trace the model"
        )
    if ignored_scope is not None and not isinstance(ignored_scope, IgnoredScope):
        raise ValidationError(f"ignored_scope must be an nncompress.IgnoredScope; got {type(ignored_scope).__name__}")
    adapter = get_adapter(model, example_input=examples_inputs)
    groups = _weight_groups(adapter, model, ignored_scope)

    def weight(nodes: list) -> np.ndarray:
        return adapter.get_constant(model, nodes[0].name, nodes[0].weight.port)

    if mode is PruneMode.UNSTRUCTURED_MAGNITUDE_LOCAL:
        masks = {}
        for name, nodes in groups.items():
            values = sp.importance(weight(nodes), "abs")
            masks[name] = sp.binary_mask(values, sp.local_threshold(values, ratio))
    elif mode is PruneMode.UNSTRUCTURED_MAGNITUDE_GLOBAL:
        def chunks() -> Iterator[np.ndarray]:
            for nodes in groups.values():
                yield from sp.importance_chunks(weight(nodes), "normed_abs")

        threshold = sp.global_threshold(chunks, ratio)
        masks = {name: sp.binary_mask(sp.importance(weight(nodes)), threshold) for name, nodes in groups.items()}
    else:
        masks = {name: np.ones(nodes[0].const_ports[nodes[0].weight.port], bool) for name, nodes in groups.items()}
    edits = [MaskWeight(n.name, n.weight.port, masks[name], name) for name, nodes in groups.items() for n in nodes]
    result = adapter.apply(model, edits)
    if mode is PruneMode.UNSTRUCTURED_REGULARIZATION_BASED:
        from nncompress.backends.torch.sparsity import to_rb_masks

        to_rb_masks(result)
    logger.info("prune (%s): %d weights masked", mode.value, len(groups))
    return result


def _weight_groups(adapter, model, ignored_scope: IgnoredScope | None) -> dict[str, list]:
    """{parameter name: the prunable nodes reading it} for the weights in scope (graph order)."""
    graph = adapter.build_graph(model)
    ignored = match_ignored_scope(ignored_scope, graph)
    port_params = adapter.source(model).port_params
    groups: dict[str, list] = {}
    computed = []
    for node in graph:
        if node.kind in PRUNABLE and node.weight is not None and node.name not in ignored:
            name = port_params.get((node.name, node.weight.port))
            if name is None:  # computed in forward (e.g. weight.T): masking the parameter itself is what counts
                computed.append(node.name)
            else:
                groups.setdefault(name, []).append(node)
    if computed:
        logger.info(
            "prune: %d operations read a weight computed in forward, not a parameter, and are not masked: %s",
            len(computed), ", ".join(computed),
        )
    if not groups:
        raise ValidationError(
            f"{type(model).__name__} has no Conv/Linear/Embedding weight in scope to prune"
            + (f" ({len(ignored)} operations ignored)" if ignored else "")
        )
    return groups


class RBLoss:
    """The RB sparsity loss of a model pruned with ``UNSTRUCTURED_REGULARIZATION_BASED``:
    ``((K/N - (1 - target_ratio)) / p)^2`` over all its RB masks (K kept of N, deterministic masks with a
    straight-through gradient). Call it (no arguments) each step and add it to the task loss; it is 0 once
    every mask is frozen."""

    def __init__(self, model: Any, target_ratio: float, p: float = sp.RB_P):
        _require_torch(model, "RBLoss")
        from nncompress.backends.torch.sparsity import RBMask, mask_hooks

        self.target_ratio = sp.check_level(target_ratio, "target_ratio")
        if not p > 0:
            raise ValidationError(f"p must be a positive number; got {p!r}")
        self.p = float(p)
        unique = {id(m): m for _, m in mask_hooks(model) if isinstance(m, RBMask)}  # shared weights: one mask
        self.masks = list(unique.values())
        if not self.masks:
            raise ValidationError(
                "the model has no RB masks: call nncompress.prune(model, PruneMode.UNSTRUCTURED_REGULARIZATION_BASED, "
                "examples_inputs=...) first and pass its result"
            )
        self.total = sum(m.mask.numel() for m in self.masks)

    def __call__(self):
        import torch

        if all(bool(m.frozen) for m in self.masks):
            return torch.zeros((), device=self.masks[0].mask.device)
        kept = sum(m.kept() for m in self.masks)
        return sp.rb_loss(kept, self.total, self.target_ratio, self.p)

    forward = __call__

    def current_ratio(self) -> float:
        """``1 - K/N``: the fraction of weights the deterministic masks drop now."""
        return 1.0 - float(sum(int(m.binary_mask.sum()) for m in self.masks)) / self.total


@dataclass(frozen=True)
class TensorPruningStatistic:
    """One masked weight: its parameter name, shape and fraction of zeros in its mask."""

    tensor_name: str
    shape: tuple[int, ...]
    pruned_ratio: float


@dataclass(frozen=True)
class ModelPruningStatistic:
    """Sparsity of a pruned model: over the masked weights (``pruning_ratio``), over all the model's
    parameters (``global_pruning_ratio``), and per weight (``pruned_tensors``)."""

    pruning_ratio: float
    global_pruning_ratio: float
    pruned_tensors: list[TensorPruningStatistic]

    def to_str(self) -> str:
        """A table: one row per masked weight, then the totals."""
        if not self.pruned_tensors:
            return "No pruned weights (the model has no sparsity masks)."
        name_width = max(len("Weight"), *(len(t.tensor_name) for t in self.pruned_tensors))
        rows = [f"{'Weight':<{name_width}}  {'Shape':<20}  Pruned"]
        for t in self.pruned_tensors:
            rows.append(f"{t.tensor_name:<{name_width}}  {str(list(t.shape)):<20}  {t.pruned_ratio:6.1%}")
        rows.append(f"Masked weights: {self.pruning_ratio:.1%} pruned; all parameters: {self.global_pruning_ratio:.1%}")
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.to_str()


def pruning_statistic(model: TModel) -> ModelPruningStatistic:
    """Per-weight and total sparsity of a model returned by ``prune`` (RB masks: their deterministic masks)."""
    _require_torch(model, "pruning_statistic")
    from nncompress.backends.torch.hooks import is_storage_path
    from nncompress.backends.torch.sparsity import mask_hooks

    seen: dict[str, TensorPruningStatistic] = {}
    zeros = elements = 0
    for _, module in mask_hooks(model):
        name = module.tensor_name
        if name in seen:  # one weight read by several operations
            continue
        mask = module.binary_mask
        pruned = int(mask.numel() - mask.count_nonzero())
        seen[name] = TensorPruningStatistic(name, tuple(mask.shape), pruned / max(mask.numel(), 1))
        zeros, elements = zeros + pruned, elements + mask.numel()
    params = sum(p.numel() for n, p in model.named_parameters() if not is_storage_path(n))
    return ModelPruningStatistic(
        zeros / elements if elements else 0.0, zeros / params if params else 0.0, list(seen.values())
    )
