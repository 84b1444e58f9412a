"""The one op vocabulary every backend maps its operations onto."""

from __future__ import annotations

from enum import Enum


class OpKind(str, Enum):
    INPUT = "input"
    OUTPUT = "output"
    # weighted
    CONV = "conv"
    DEPTHWISE_CONV = "depthwise_conv"
    CONV_TRANSPOSE = "conv_transpose"
    LINEAR = "linear"  # MatMul/Gemm whose weight is a constant
    MATMUL = "matmul"  # MatMul of two activations
    EMBEDDING = "embedding"  # Gather from a constant table
    # elementwise arithmetic
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    POW = "pow"
    SQRT = "sqrt"
    RECIPROCAL = "reciprocal"
    MAXIMUM = "maximum"
    MINIMUM = "minimum"
    COMPARISON = "comparison"
    LOGICAL = "logical"
    # activations
    RELU = "relu"
    CLAMP = "clamp"  # ReLU6 and other clips
    SIGMOID = "sigmoid"
    HARD_SIGMOID = "hard_sigmoid"
    HARD_SWISH = "hard_swish"
    SWISH = "swish"
    GELU = "gelu"
    ERF = "erf"
    TANH = "tanh"
    ELU = "elu"
    PRELU = "prelu"
    LEAKY_RELU = "leaky_relu"
    EXP = "exp"
    SOFTMAX = "softmax"
    # normalisation
    BATCH_NORM = "batch_norm"
    LAYER_NORM = "layer_norm"  # LayerNormalization / MVN
    GROUP_NORM = "group_norm"
    NORMALIZE_L2 = "normalize_l2"
    # pooling and reductions
    MAX_POOL = "max_pool"
    AVG_POOL = "avg_pool"
    REDUCE_MEAN = "reduce_mean"
    REDUCE_SUM = "reduce_sum"
    REDUCE_MAX = "reduce_max"
    REDUCE_L2 = "reduce_l2"
    # data movement (quantize-agnostic)
    RESHAPE = "reshape"
    FLATTEN = "flatten"
    SQUEEZE = "squeeze"
    UNSQUEEZE = "unsqueeze"
    TRANSPOSE = "transpose"
    SPLIT = "split"
    SLICE = "slice"
    STRIDED_SLICE = "strided_slice"
    GATHER = "gather"  # Gather of activations (not an embedding)
    PAD = "pad"
    TILE = "tile"
    BROADCAST = "broadcast"
    DEPTH_TO_SPACE = "depth_to_space"
    SPACE_TO_DEPTH = "space_to_depth"
    CONCAT = "concat"
    INTERPOLATE = "interpolate"
    SCALED_DOT_PRODUCT_ATTENTION = "sdpa"
    CONVERT = "convert"
    IDENTITY = "identity"
    OTHER = "other"


WEIGHTED_KINDS = frozenset(
    {OpKind.CONV, OpKind.DEPTHWISE_CONV, OpKind.CONV_TRANSPOSE, OpKind.LINEAR, OpKind.EMBEDDING}
)
ELEMENTWISE_KINDS = frozenset(
    {
        OpKind.ADD,
        OpKind.SUB,
        OpKind.MUL,
        OpKind.DIV,
        OpKind.MAXIMUM,
        OpKind.MINIMUM,
        OpKind.COMPARISON,
        OpKind.LOGICAL,
    }
)
LINEAR_KINDS = frozenset(
    {OpKind.CONV, OpKind.DEPTHWISE_CONV, OpKind.CONV_TRANSPOSE, OpKind.LINEAR, OpKind.MATMUL}
)
ATOMIC_ACTIVATION_KINDS = frozenset(
    {
        OpKind.RELU,
        OpKind.CLAMP,
        OpKind.ELU,
        OpKind.PRELU,
        OpKind.LEAKY_RELU,
        OpKind.SIGMOID,
        OpKind.HARD_SIGMOID,
        OpKind.SWISH,
        OpKind.HARD_SWISH,
        OpKind.GELU,
        OpKind.TANH,
    }
)
ARITHMETIC_KINDS = frozenset({OpKind.ADD, OpKind.SUB, OpKind.MUL, OpKind.DIV})

CONV_LIKE_KINDS = frozenset({OpKind.CONV, OpKind.DEPTHWISE_CONV, OpKind.CONV_TRANSPOSE})


def activation_channel_axis(kind: OpKind) -> int:
    """Channel axis of the activations a weighted op reads and writes (NCHW convs, [..., C] matmuls)."""
    return 1 if kind in CONV_LIKE_KINDS else -1
