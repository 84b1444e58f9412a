"""OpenVINO operation types mapped onto the neutral op vocabulary, and weight layouts."""

from __future__ import annotations

from nncompress.graph.ir import WeightInfo
from nncompress.graph.ops import OpKind

SIMPLE_KINDS: dict[str, OpKind] = {
    "Parameter": OpKind.INPUT,
    "Result": OpKind.OUTPUT,
    "Add": OpKind.ADD,
    "Subtract": OpKind.SUB,
    "Multiply": OpKind.MUL,
    "Divide": OpKind.DIV,
    "Power": OpKind.POW,
    "Sqrt": OpKind.SQRT,
    "Maximum": OpKind.MAXIMUM,
    "Minimum": OpKind.MINIMUM,
    "Relu": OpKind.RELU,
    "Clamp": OpKind.CLAMP,
    "Sigmoid": OpKind.SIGMOID,
    "HSigmoid": OpKind.HARD_SIGMOID,
    "HSwish": OpKind.HARD_SWISH,
    "Swish": OpKind.SWISH,
    "Gelu": OpKind.GELU,
    "Erf": OpKind.ERF,
    "Tanh": OpKind.TANH,
    "Elu": OpKind.ELU,
    "PRelu": OpKind.PRELU,
    "Exp": OpKind.EXP,
    "Softmax": OpKind.SOFTMAX,
    "LogSoftmax": OpKind.OTHER,
    "BatchNormInference": OpKind.BATCH_NORM,
    "MVN": OpKind.LAYER_NORM,
    "GroupNormalization": OpKind.GROUP_NORM,
    "NormalizeL2": OpKind.NORMALIZE_L2,
    "MaxPool": OpKind.MAX_POOL,
    "AvgPool": OpKind.AVG_POOL,
    "ReduceMean": OpKind.REDUCE_MEAN,
    "ReduceSum": OpKind.REDUCE_SUM,
    "ReduceMax": OpKind.REDUCE_MAX,
    "ReduceL2": OpKind.REDUCE_L2,
    "Reshape": OpKind.RESHAPE,
    "Squeeze": OpKind.SQUEEZE,
    "Unsqueeze": OpKind.UNSQUEEZE,
    "Transpose": OpKind.TRANSPOSE,
    "Split": OpKind.SPLIT,
    "VariadicSplit": OpKind.SPLIT,
    "Slice": OpKind.SLICE,
    "StridedSlice": OpKind.STRIDED_SLICE,
    "Pad": OpKind.PAD,
    "Tile": OpKind.TILE,
    "Broadcast": OpKind.BROADCAST,
    "DepthToSpace": OpKind.DEPTH_TO_SPACE,
    "SpaceToDepth": OpKind.SPACE_TO_DEPTH,
    "Concat": OpKind.CONCAT,
    "Interpolate": OpKind.INTERPOLATE,
    "ScaledDotProductAttention": OpKind.SCALED_DOT_PRODUCT_ATTENTION,
    "Convert": OpKind.CONVERT,
    "Identity": OpKind.IDENTITY,
    "Convolution": OpKind.CONV,
    "ConvolutionBackpropData": OpKind.CONV_TRANSPOSE,
    "GroupConvolutionBackpropData": OpKind.CONV_TRANSPOSE,
}
for _name in ("Equal", "NotEqual", "Less", "LessEqual", "Greater", "GreaterEqual"):
    SIMPLE_KINDS[_name] = OpKind.COMPARISON
for _name in ("LogicalAnd", "LogicalOr", "LogicalXor", "LogicalNot"):
    SIMPLE_KINDS[_name] = OpKind.LOGICAL


def op_kind(op_type: str, const_ports: set[int], attrs: dict, weight_shape: tuple | None) -> OpKind:
    """The neutral kind of an operation from its type and which inputs are constant."""
    if op_type == "MatMul":
        return OpKind.LINEAR if const_ports & {0, 1} else OpKind.MATMUL
    if op_type == "Gather":
        return OpKind.EMBEDDING if 0 in const_ports and attrs.get("axis", 0) == 0 else OpKind.GATHER
    if op_type == "GroupConvolution":
        depthwise = weight_shape is not None and len(weight_shape) >= 3 and weight_shape[0] > 1
        depthwise = depthwise and weight_shape[1] == 1 and weight_shape[2] == 1
        return OpKind.DEPTHWISE_CONV if depthwise else OpKind.CONV
    return SIMPLE_KINDS.get(op_type, OpKind.OTHER)


def weight_info(op_type: str, const_ports: dict[int, tuple], attrs: dict) -> WeightInfo | None:
    """Where the weight of a weighted operation is and how it is laid out, None without one."""
    if op_type == "MatMul":
        return _matmul_weight(const_ports, attrs)
    port = 0 if op_type == "Gather" else 1
    shape = const_ports.get(port)
    if shape is None:
        return None
    if op_type == "Convolution":
        return WeightInfo(port, shape, 0, 1, 1)
    if op_type == "GroupConvolution":  # [G, O/G, I/G, k...]: channels of a group on axes 0 and 1
        return WeightInfo(port, shape, 0, 2, shape[0])
    if op_type == "ConvolutionBackpropData":  # [I, O, k...]
        return WeightInfo(port, shape, 1, 0, 1)
    if op_type == "GroupConvolutionBackpropData":  # [G, I/G, O/G, k...]
        return WeightInfo(port, shape, 0, 1, shape[0])
    if op_type == "Gather" and attrs.get("axis", 0) == 0 and len(shape) == 2:
        return WeightInfo(port, shape, 0, 1, 1)
    return None


def _matmul_weight(const_ports: dict[int, tuple], attrs: dict) -> WeightInfo | None:
    if 1 in const_ports:
        port, transposed = 1, bool(attrs.get("transpose_b", False))
    elif 0 in const_ports:
        port, transposed = 0, not bool(attrs.get("transpose_a", False))
    else:
        return None
    shape = const_ports[port]
    rank = len(shape)
    if rank < 2:
        return WeightInfo(port, shape, 0, 0, 1)
    # x @ W: W [..., K, N] (out last, in second last); transposed W [..., N, K]
    out_axis, in_axis = (rank - 2, rank - 1) if transposed else (rank - 1, rank - 2)
    return WeightInfo(port, shape, out_axis, in_axis, 1)
