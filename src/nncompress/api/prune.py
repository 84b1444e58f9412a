"""``prune`` (unstructured magnitude / RB sparsity of a PyTorch model), ``RBLoss`` and ``pruning_statistic``.

NNCF 3.x's post-training entry points for the masks training-time sparsity uses: the same formulas
(``numerics.sparsity``), the same ``MaskWeight`` edits and the same mask modules (``backends.torch.sparsity``).
The weights of Conv / ConvTranspose / Linear / Embedding operations in scope are masked on a hooked copy
(the input model is not modified); a weight read by several operations (tied embeddings) gets one mask.
Backends whose models train (``Capabilities.trainable``: PyTorch) are supported.

- ``UNSTRUCTURED_MAGNITUDE_LOCAL``: every weight to ``ratio`` with its own threshold on ``|w|``.
- ``UNSTRUCTURED_MAGNITUDE_GLOBAL``: one threshold on ``|w| / ‖W‖₂`` over all weights for ``ratio``
  overall, found in bounded memory (``numerics.sparsity.global_threshold``).
- ``UNSTRUCTURED_REGULARIZATION_BASED``: trainable RB masks (all weights kept at first); train with
  ``RBLoss(model, target_ratio)`` (``nncompress.backends.torch.sparsity``) added to the task loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from nncompress.backends.registry import get_adapter
from nncompress.errors import UnsupportedBackendError, ValidationError
from nncompress.foreign import adopt
from nncompress.graph.edits import MaskWeight
from nncompress.graph.ops import OpKind
from nncompress.log import logger
from nncompress.numerics import sparsity as sp
from nncompress.parameters import PruneMode, coerce_enum
from nncompress.scopes import IgnoredScope, match_ignored_scope

TModel = TypeVar("TModel")
PRUNABLE = (OpKind.CONV, OpKind.DEPTHWISE_CONV, OpKind.CONV_TRANSPOSE, OpKind.LINEAR, OpKind.EMBEDDING)


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
    ratio = _checked_ratio(mode, ratio)
    if examples_inputs is None:
        raise ValidationError(
            "prune needs examples_inputs=... (one model input: a tensor, a tuple of positional arguments or a dict "
            "of keyword arguments) to trace the model"
        )
    ignored_scope = adopt(ignored_scope, IgnoredScope, "ignored_scope")
    if ignored_scope is not None and not isinstance(ignored_scope, IgnoredScope):
        raise ValidationError(f"ignored_scope must be an nncompress.IgnoredScope; got {type(ignored_scope).__name__}")
    adapter = get_adapter(model, example_input=examples_inputs)
    if not adapter.capabilities.trainable:
        raise UnsupportedBackendError(
            f"prune works on PyTorch models (torch.nn.Module) only; got {_article(adapter.capabilities.name)} model "
            f"({type(model).__name__}). Prune the PyTorch model, then export it (nncompress.export or "
            "torch.onnx.export) to get an ONNX / OpenVINO model with the zeros"
        )
    groups = _weight_groups(adapter.build_graph(model), ignored_scope, type(model).__name__)

    def weight(nodes: list) -> np.ndarray:
        return adapter.get_constant(model, nodes[0].name, nodes[0].weight.port)

    trainable = mode is PruneMode.UNSTRUCTURED_REGULARIZATION_BASED
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
    edits = [
        MaskWeight(n.name, n.weight.port, masks[name], name, trainable) for name, nodes in groups.items() for n in nodes
    ]
    result = adapter.apply(model, edits)
    logger.info("prune (%s): %d weights masked", mode.value, len(groups))
    return result


def _checked_ratio(mode: PruneMode, ratio: Any) -> float | None:
    """The sparsity level ``ratio`` for ``mode`` (None for RB, which learns it), or a ValidationError."""
    if mode is PruneMode.UNSTRUCTURED_REGULARIZATION_BASED:
        if ratio is not None:
            raise ValidationError(
                f"ratio={ratio!r} is not used by {mode.name}: masks start dense and learn the level; give the "
                "target to RBLoss(model, target_ratio=...) instead"
            )
        return None
    if ratio is None:
        raise ValidationError(f"{mode.name} needs ratio=... (the fraction of weights to zero, in [0, 1))")
    return sp.check_level(ratio, "ratio")


def _article(name: str) -> str:
    return ("an " if name[:1] in "aeiou" else "a ") + name


def _weight_groups(graph, ignored_scope: IgnoredScope | None, model_name: str, required: bool = True) -> dict:
    """{weight name: the prunable nodes reading it} for the weights in scope (graph order). Nodes whose graph
    names the stored constant (``attrs["constant_names"]``) group by it: a shared weight gets one mask."""
    ignored = match_ignored_scope(ignored_scope, graph)
    groups = weight_groups(graph, ignored)
    if not groups and required:
        raise ValidationError(
            f"{model_name} has no Conv/Linear/Embedding weight in scope to prune"
            + (f" ({len(ignored)} operations ignored)" if ignored else "")
        )
    return groups


def weight_groups(graph, skip=frozenset()) -> dict[str, list]:
    """{weight name: the Conv/ConvTranspose/Linear/Embedding nodes reading it} for the nodes not in ``skip``,
    in graph order (also training-time sparsity's targets). A weight read by several nodes is one group."""
    groups: dict[str, list] = {}
    for node in graph:
        if node.kind in PRUNABLE and node.weight is not None and node.name not in skip:
            name = node.attrs.get("constant_names", {}).get(node.weight.port, node.name)
            groups.setdefault(name, []).append(node)
    return groups


@dataclass(frozen=True)
class TensorPruningStatistic:
    """One weight: its name (PyTorch: the parameter's), shape and fraction of zeros."""

    tensor_name: str
    shape: tuple[int, ...]
    pruned_ratio: float


@dataclass(frozen=True)
class ModelPruningStatistic:
    """Sparsity of a model: over all its Conv/Linear/Embedding weights (``pruning_ratio``) and per weight
    (``pruned_tensors``)."""

    pruning_ratio: float
    pruned_tensors: list[TensorPruningStatistic]

    def to_str(self) -> str:
        """A table: one row per weight, then the total."""
        name_width = max(len("Weight"), *(len(t.tensor_name) for t in self.pruned_tensors))
        rows = [f"{'Weight':<{name_width}}  {'Shape':<20}  Pruned"]
        for t in self.pruned_tensors:
            rows.append(f"{t.tensor_name:<{name_width}}  {str(list(t.shape)):<20}  {t.pruned_ratio:6.1%}")
        rows.append(f"All {len(self.pruned_tensors)} weights: {self.pruning_ratio:.1%} pruned")
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.to_str()


def pruning_statistic(model: TModel) -> ModelPruningStatistic:
    """Per-weight and total sparsity (fraction of zeros) of the Conv/Linear/Embedding weights of ``model``, as
    the model computes them (masks applied; RB masks: their deterministic masks in eval mode)."""
    adapter = get_adapter(model)
    graph = adapter.build_graph(model)
    stats, zeros, elements = [], 0, 0
    for name, nodes in _weight_groups(graph, None, type(model).__name__, required=False).items():
        value = adapter.get_constant(model, nodes[0].name, nodes[0].weight.port)
        pruned = value.size - int(np.count_nonzero(value))
        stats.append(TensorPruningStatistic(name, tuple(value.shape), pruned / max(value.size, 1)))
        zeros, elements = zeros + pruned, elements + value.size
    return ModelPruningStatistic(zeros / elements if elements else 0.0, stats)
