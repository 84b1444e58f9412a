"""The binarization section as a spec, and which convolutions it binarizes (JSON-able layer records).

Binarized: 2-D convolutions (``Conv2d``, depthwise included) with a constant weight, as in the reference.
The first and the last weighted layers of the model stay in full precision by default (the reference's
configs ignore them): a convolution with no weighted layer before it, or none after it. A scope of
``target_scopes`` that names such a convolution binarizes it anyway. The layer list is the builder state
saved in checkpoints, so a resumed model gets exactly the same binarizers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from nncompress.errors import UnsupportedBackendError, ValidationError
from nncompress.graph.ir import Graph
from nncompress.graph.ops import OpKind
from nncompress.log import logger
from nncompress.numerics.binarization import MODES
from nncompress.training.config.spec import StagedParams, scopes
from nncompress.training.quantization.scopes import check_scopes, matching_nodes

_CONV_KINDS = (OpKind.CONV, OpKind.DEPTHWISE_CONV)
_WEIGHTED = (OpKind.CONV, OpKind.DEPTHWISE_CONV, OpKind.CONV_TRANSPOSE, OpKind.LINEAR, OpKind.MATMUL, OpKind.EMBEDDING)


@dataclass(frozen=True)
class BinarizationSpec:
    """A ``binarization`` section with its defaults filled in (``staged``: the ``params``, defaults when absent:
    the reference always runs binarization under the staged scheduler)."""

    mode: str = "xnor"
    staged: StagedParams = StagedParams()
    num_init_samples: int = 256
    num_bn_adaptation_samples: int | None = None
    ignored_scopes: tuple = ()
    target_scopes: tuple = ()
    validate_scopes: bool = True
    compression_lr_multiplier: float | None = None
    name: str = "binarization"


def binarization_spec(section: dict, path: str = "compression") -> BinarizationSpec:
    """A validated ``binarization`` section (global params applied) as a spec."""
    init = section.get("initializer", {}) or {}
    if init.get("precision") is not None:
        raise UnsupportedBackendError(
            f"{path}.initializer.precision is a quantization (mixed precision) setting; binarization has one "
            "precision: remove it"
        )
    rng = init.get("range")
    entries = [] if rng is None else [rng] if isinstance(rng, dict) else list(rng)
    if len(entries) > 1:
        raise UnsupportedBackendError(
            f"{path}.initializer.range has {len(entries)} entries; binarization initialises every activation scale "
            "the same way: give one object"
        )
    entry = entries[0] if entries else {}
    if entry.get("type") not in (None, "mixed_min_max", "min_max"):
        logger.warning("%s.initializer.range.type %r has no effect on binarization: activation scales start at the "
                       "top-0.1%% value of each input", path, entry["type"])
    bn = init.get("batchnorm_adaptation")
    return BinarizationSpec(
        mode=section.get("mode", "xnor"),
        staged=StagedParams(**section.get("params", {})),
        num_init_samples=int(entry.get("num_init_samples", 256)),
        num_bn_adaptation_samples=None if bn is None else bn.get("num_bn_adaptation_samples", 2000),
        ignored_scopes=scopes(section.get("ignored_scopes"), f"{path}.ignored_scopes"),
        target_scopes=scopes(section.get("target_scopes"), f"{path}.target_scopes"),
        validate_scopes=section.get("validate_scopes", True),
        compression_lr_multiplier=section.get("compression_lr_multiplier"),
    )


@dataclass
class BinarizedLayer:
    """One binarized convolution: its weight binarizer and the activation binarizer on its input 0."""

    node: str
    port: int  # the weight's input port
    tensor: list  # [producer node, port] of the convolution's input 0
    weight_hook: str
    activation_hook: str
    in_channels: int
    out_channels: int
    macs: int  # multiply-accumulates per sample

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BinarizedLayer:
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            raise ValidationError(
                f"a saved binarization layer must have the fields {sorted(names)}; got "
                f"{sorted(data) if isinstance(data, dict) else type(data).__name__}"
            )
        return cls(**data)


def conv_macs(graph: Graph, node_name: str) -> int:
    """Multiply-accumulates of one sample through a convolution (or weighted layer): output elements
    times the weight's per-output-element fan-in."""
    node = graph.node(node_name)
    out = node.output_shapes[0] if node.output_shapes else None
    if node.weight is None or not out:
        return 0
    shape = node.weight.shape
    fan_in = int(_prod(shape)) // max(int(shape[node.weight.out_axis]), 1)
    spatial = _prod(d for d in out[2:] if isinstance(d, int)) if len(out) > 2 else 1
    channels = out[1] if len(out) > 1 and isinstance(out[1], int) else shape[node.weight.out_axis]
    return int(channels * spatial * fan_in)


def _prod(values) -> int:
    total = 1
    for v in values:
        total *= int(v)
    return total


def is_binarizable(graph: Graph, node) -> bool:
    """A 2-D convolution reading a constant weight and an activation on input 0."""
    weight = node.weight
    return (node.kind in _CONV_KINDS and node.op_type == "conv2d" and weight is not None and len(weight.shape) == 4
            and weight.port in node.const_ports and bool(node.inputs) and node.inputs[0] is not None)


def _input_channels(graph: Graph, producer, fallback: int) -> int:
    shape = graph.tensor_shape(producer)
    return int(shape[1]) if shape and len(shape) > 1 and isinstance(shape[1], int) else int(fallback)


def boundary_layers(graph: Graph) -> tuple[set[str], set[str]]:
    """(first, last): weighted layers with no weighted layer before them / after them."""
    weighted = {n.name for n in graph if n.kind in _WEIGHTED and n.weight is not None}
    order = [n.name for n in graph]
    before: dict[str, bool] = {}
    for name in order:
        before[name] = any(p.name in weighted or before.get(p.name, False) for p in graph.predecessors(name))
    after: dict[str, bool] = {}
    for name in reversed(order):
        after[name] = any(s.name in weighted or after.get(s.name, False) for s in graph.successors(name))
    return ({n for n in weighted if not before[n]}, {n for n in weighted if not after[n]})


def select_layers(graph: Graph, names: dict[str, tuple[str, ...]], spec: BinarizationSpec) -> list[BinarizedLayer]:
    """The convolutions ``spec`` binarizes (``names``: each node's scope names)."""
    if spec.mode not in MODES:
        raise ValidationError(f"binarization mode must be one of {MODES}; got {spec.mode!r}")
    if spec.validate_scopes:
        check_scopes(spec.ignored_scopes, names, "ignored_scopes")
        check_scopes(spec.target_scopes, names, "target_scopes")
    ignored = matching_nodes(spec.ignored_scopes, names)
    targets = matching_nodes(spec.target_scopes, names) if spec.target_scopes else None
    first, last = boundary_layers(graph)
    layers, kept = [], []
    for node in graph:
        if not is_binarizable(graph, node) or node.name in ignored:
            continue
        if targets is not None and node.name not in targets:
            continue
        if (node.name in first or node.name in last) and not (targets and node.name in targets):
            kept.append(node.name)
            continue
        producer = node.inputs[0]
        shape = node.weight.shape
        layers.append(BinarizedLayer(
            node=node.name, port=node.weight.port, tensor=[producer.node, producer.port],
            weight_hook=f"{node.name}|weights_binarizer", activation_hook=f"{node.name}|activations_binarizer",
            in_channels=_input_channels(graph, producer, shape[1] * node.weight.groups), out_channels=int(shape[0]),
            macs=conv_macs(graph, node.name),
        ))
    if kept:
        logger.info("binarization keeps the first/last layer(s) %s in full precision (name them in target_scopes "
                    "to binarize them)", ", ".join(kept))
    if not layers:
        logger.warning("binarization found no convolution to binarize (2-D convolutions other than the first and "
                       "last layers, outside ignored_scopes)")
    return layers
