"""The FLOPs and parameter model of filter pruning (§6.1 of the NNCF brief), per sample.

Conv: ``2 · Πk · C_in · (C_out / groups) · Π(output spatial)``; linear: ``2 · in · out · Π(output dims
except the first (batch) and the last)``. Parameters: weights plus biases of those layers. Under masks
the kept input/output channels replace the full ones (a depthwise conv keeps groups = channels).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from nncompress.graph.channels import ChannelGroups, NodeMasks
from nncompress.graph.ir import Graph, Node
from nncompress.graph.ops import OpKind as K

COUNTED_KINDS = frozenset({K.CONV, K.DEPTHWISE_CONV, K.CONV_TRANSPOSE, K.LINEAR})


@dataclass(frozen=True)
class LayerCost:
    flops: int
    params: int
    filters: int  # output channels


@dataclass(frozen=True)
class ModelCost:
    flops: int
    params: int
    filters: int

    def level(self, full: ModelCost) -> float:
        """Fraction of FLOPs removed relative to ``full``."""
        return 1.0 - self.flops / full.flops if full.flops else 0.0


def layer_cost(node: Node, masks: NodeMasks | None = None) -> LayerCost:
    """Cost of one weighted node of the counted kinds, under ``masks`` (None: unpruned)."""
    w = node.weight
    shape = w.shape
    groups = max(int(node.attrs.get("groups", w.groups) or 1), 1)
    out_ch = shape[w.out_axis] * (groups if node.kind is K.CONV_TRANSPOSE else 1)
    in_ch = shape[w.in_axis] * (1 if node.kind is K.CONV_TRANSPOSE else groups)
    kernel = math.prod(d for i, d in enumerate(shape) if i not in (w.out_axis, w.in_axis))
    out_shape = node.output_shapes[0] if node.output_shapes and node.output_shapes[0] is not None else ()
    if masks is not None:
        if node.kind is K.DEPTHWISE_CONV:
            mask = masks.out if masks.out is not None else masks.inp
            if mask is not None:
                out_ch = in_ch = groups = int(np.count_nonzero(mask))
        else:
            out_ch = int(np.count_nonzero(masks.out)) if masks.out is not None else out_ch
            in_ch = int(np.count_nonzero(masks.inp)) if masks.inp is not None else in_ch
    if node.kind is K.LINEAR:
        positions = math.prod(out_shape[1:-1]) if len(out_shape) > 2 else 1
    else:
        positions = math.prod(out_shape[2:]) if len(out_shape) > 2 else 1
    macs = kernel * in_ch * out_ch // groups
    params = macs + (out_ch if node.bias is not None and node.bias.node == node.name else 0)
    return LayerCost(2 * macs * positions, params, out_ch)


def model_cost(graph: Graph, masks: Mapping[str, NodeMasks] | None = None) -> ModelCost:
    """Summed cost of every conv / linear node of ``graph`` under per-node ``masks``."""
    masks = masks or {}
    flops = params = filters = 0
    for node in graph:
        if node.kind in COUNTED_KINDS and node.weight is not None:
            cost = layer_cost(node, masks.get(node.name))
            flops, params, filters = flops + cost.flops, params + cost.params, filters + cost.filters
    return ModelCost(flops, params, filters)


def pruned_cost(groups: ChannelGroups, keep: Mapping[int, np.ndarray]) -> ModelCost:
    """Cost of ``groups.graph`` with the channels ``keep`` drops removed."""
    return model_cost(groups.graph, groups.node_masks(dict(keep)))
