"""Per-device quantization rules as data: which op kinds take which quantizers."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from nncompress.errors import ValidationError
from nncompress.graph.ops import OpKind as K


class Trait(Enum):
    QUANTIZABLE = "quantizable"  # activation inputs (and weights) take quantizers
    AGNOSTIC = "agnostic"  # quantizers move through to the op's input
    CONCAT = "concat"  # quantizers move to every input and share one range
    NONE = "none"  # runs in float; quantizers stop at its output


SYM = "symmetric"
ASYM = "asymmetric"


@dataclass(frozen=True)
class OpRule:
    trait: Trait
    activation_modes: frozenset[str] = frozenset({SYM, ASYM})
    per_channel_activations: bool = False
    quantize_weights: bool = False
    activation_ports: tuple[int, ...] | None = None  # None: every activation input


_ACT = OpRule(Trait.QUANTIZABLE)
_ACT_AND_WEIGHTS = OpRule(Trait.QUANTIZABLE, quantize_weights=True)
_AGNOSTIC = OpRule(Trait.AGNOSTIC)

CPU_RULES: dict[K, OpRule] = {
    K.CONV: _ACT_AND_WEIGHTS,
    K.CONV_TRANSPOSE: _ACT_AND_WEIGHTS,
    K.LINEAR: _ACT_AND_WEIGHTS,
    K.MATMUL: _ACT,
    K.DEPTHWISE_CONV: OpRule(Trait.QUANTIZABLE, per_channel_activations=True, quantize_weights=True),
    K.EMBEDDING: OpRule(Trait.NONE, quantize_weights=True),
    K.SCALED_DOT_PRODUCT_ATTENTION: OpRule(Trait.QUANTIZABLE, frozenset({SYM}), activation_ports=(0, 1)),  # Q and K
    **{
        kind: _ACT
        for kind in (
            K.ADD, K.SUB, K.MUL, K.DIV, K.MAXIMUM, K.MINIMUM, K.COMPARISON, K.LOGICAL, K.POW,
            K.AVG_POOL, K.NORMALIZE_L2, K.REDUCE_L2, K.REDUCE_MEAN, K.REDUCE_SUM, K.LAYER_NORM,
            K.GROUP_NORM, K.INTERPOLATE,
        )
    },
    **{
        kind: _AGNOSTIC
        for kind in (
            K.MAX_POOL, K.REDUCE_MAX, K.RESHAPE, K.FLATTEN, K.SQUEEZE, K.UNSQUEEZE, K.TRANSPOSE,
            K.SPLIT, K.STRIDED_SLICE, K.GATHER, K.PAD, K.TILE, K.BROADCAST, K.DEPTH_TO_SPACE,
            K.SPACE_TO_DEPTH, K.IDENTITY,
        )
    },
    K.CONCAT: OpRule(Trait.CONCAT),
}

_NONE = OpRule(Trait.NONE)

# Inputs of these kinds stay in float for transformers (NNCF's transformer ignored metatypes).
TRANSFORMER_IGNORED_KINDS = frozenset(
    {
        K.ADD, K.POW, K.SQUEEZE, K.SUB, K.AVG_POOL, K.REDUCE_MEAN, K.REDUCE_L2, K.REDUCE_SUM, K.DIV,
        K.MAXIMUM, K.SQRT, K.RECIPROCAL, K.BATCH_NORM, K.COMPARISON, K.MUL, K.LAYER_NORM,
        K.GROUP_NORM,
    }
)


def rule_for(kind: K, rules: dict[K, OpRule] = CPU_RULES) -> OpRule:
    """The rule of ``kind``; kinds not listed run in float."""
    return rules.get(kind, _NONE)


# 8-bit rules per target device (``TargetDevice`` values). GPU and NPU have their own tables for other
# bit widths in the reference tool, but with 8-bit weights and activations it uses the CPU table for every
# device; CPU_SPR differs only by a pass on Add inputs (the quantization pipeline's ``cpu_spr``).
DEVICE_RULES: dict[str, dict[K, OpRule]] = {
    "ANY": CPU_RULES,
    "CPU": CPU_RULES,
    "CPU_SPR": CPU_RULES,
    "GPU": CPU_RULES,
    "NPU": CPU_RULES,
}


def rules_for_device(device) -> dict[K, OpRule]:
    """The 8-bit rules of ``device`` (a ``TargetDevice`` or its value), looked up in ``DEVICE_RULES``."""
    key = getattr(device, "value", device)
    if key not in DEVICE_RULES:
        raise ValidationError(f"target_device={device!r} has no quantization rules; valid: {', '.join(DEVICE_RULES)}")
    return DEVICE_RULES[key]
