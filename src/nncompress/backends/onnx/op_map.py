"""ONNX operator types mapped onto the neutral op vocabulary."""

from __future__ import annotations

import onnx

from nncompress.graph.ops import OpKind

DEFAULT_DOMAINS = ("", "ai.onnx")

OP_KINDS: dict[str, OpKind] = {
    "Conv": OpKind.CONV,
    "ConvTranspose": OpKind.CONV_TRANSPOSE,
    "MatMul": OpKind.LINEAR,
    "Gemm": OpKind.LINEAR,
    "Gather": OpKind.GATHER,
    "Add": OpKind.ADD,
    "Sub": OpKind.SUB,
    "Mul": OpKind.MUL,
    "Div": OpKind.DIV,
    "Pow": OpKind.POW,
    "Sqrt": OpKind.SQRT,
    "Reciprocal": OpKind.RECIPROCAL,
    "Max": OpKind.MAXIMUM,
    "Min": OpKind.MINIMUM,
    "Relu": OpKind.RELU,
    "Clip": OpKind.CLAMP,
    "Sigmoid": OpKind.SIGMOID,
    "HardSigmoid": OpKind.HARD_SIGMOID,
    "HardSwish": OpKind.HARD_SWISH,
    "Swish": OpKind.SWISH,
    "Gelu": OpKind.GELU,
    "Erf": OpKind.ERF,
    "Tanh": OpKind.TANH,
    "Elu": OpKind.ELU,
    "PRelu": OpKind.PRELU,
    "LeakyRelu": OpKind.LEAKY_RELU,
    "Exp": OpKind.EXP,
    "Softmax": OpKind.SOFTMAX,
    "BatchNormalization": OpKind.BATCH_NORM,
    "LayerNormalization": OpKind.LAYER_NORM,
    "MeanVarianceNormalization": OpKind.LAYER_NORM,
    "GroupNormalization": OpKind.GROUP_NORM,
    "InstanceNormalization": OpKind.GROUP_NORM,
    "LpNormalization": OpKind.NORMALIZE_L2,
    "MaxPool": OpKind.MAX_POOL,
    "GlobalMaxPool": OpKind.MAX_POOL,
    "AveragePool": OpKind.AVG_POOL,
    "GlobalAveragePool": OpKind.AVG_POOL,
    "ReduceMean": OpKind.REDUCE_MEAN,
    "ReduceSum": OpKind.REDUCE_SUM,
    "ReduceMax": OpKind.REDUCE_MAX,
    "ReduceL2": OpKind.REDUCE_L2,
    "Reshape": OpKind.RESHAPE,
    "Flatten": OpKind.FLATTEN,
    "Squeeze": OpKind.SQUEEZE,
    "Unsqueeze": OpKind.UNSQUEEZE,
    "Transpose": OpKind.TRANSPOSE,
    "Split": OpKind.SPLIT,
    "Slice": OpKind.SLICE,
    "Pad": OpKind.PAD,
    "Tile": OpKind.TILE,
    "Expand": OpKind.BROADCAST,
    "DepthToSpace": OpKind.DEPTH_TO_SPACE,
    "SpaceToDepth": OpKind.SPACE_TO_DEPTH,
    "Concat": OpKind.CONCAT,
    "Resize": OpKind.INTERPOLATE,
    "Upsample": OpKind.INTERPOLATE,
    "Attention": OpKind.SCALED_DOT_PRODUCT_ATTENTION,
    "Cast": OpKind.CONVERT,
    "CastLike": OpKind.CONVERT,
    "Identity": OpKind.IDENTITY,
    "Dropout": OpKind.IDENTITY,
}
for _op in ("Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"):
    OP_KINDS[_op] = OpKind.COMPARISON
for _op in ("And", "Or", "Not", "Xor"):
    OP_KINDS[_op] = OpKind.LOGICAL

# Operators that are never folded even when every input is a constant.
NON_FOLDABLE = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
)
# Operators whose outputs are shape constants although their input is an activation.
SHAPE_OPS = frozenset({"Shape", "Size"})

_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
    onnx.TensorProto.FLOAT8E4M3FN,
    onnx.TensorProto.FLOAT8E4M3FNUZ,
    onnx.TensorProto.FLOAT8E5M2,
    onnx.TensorProto.FLOAT8E5M2FNUZ,
}


def is_default_domain(node: onnx.NodeProto) -> bool:
    return node.domain in DEFAULT_DOMAINS


def base_kind(node: onnx.NodeProto) -> OpKind:
    """The kind of ``node`` from its type alone (weighted kinds are refined by the graph builder)."""
    if not is_default_domain(node):
        return OpKind.OTHER
    kind = OP_KINDS.get(node.op_type, OpKind.OTHER)
    if kind is OpKind.NORMALIZE_L2 and _int_attr(node, "p", 2) != 2:
        return OpKind.OTHER
    return kind


def dtype_kind(elem_type: int | None) -> str:
    """``"float"``, ``"int"`` or ``"bool"`` for an ONNX element type (float when unknown)."""
    if elem_type is None or elem_type == onnx.TensorProto.UNDEFINED or elem_type in _FLOAT_TYPES:
        return "float"
    if elem_type == onnx.TensorProto.BOOL:
        return "bool"
    return "int"


def _int_attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


def node_attrs(node: onnx.NodeProto) -> dict:
    """Scalar and list attributes of ``node`` (for debugging)."""
    simple = {
        onnx.AttributeProto.INT,
        onnx.AttributeProto.FLOAT,
        onnx.AttributeProto.STRING,
        onnx.AttributeProto.INTS,
        onnx.AttributeProto.FLOATS,
    }
    attrs = {}
    for attr in node.attribute:
        if attr.type in simple:
            value = onnx.helper.get_attribute_value(attr)
            attrs[attr.name] = value.decode() if isinstance(value, bytes) else value
    return attrs
