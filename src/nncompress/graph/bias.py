"""The "bias is a following Add" rule, on the neutral graph (one rule for every backend).

A weighted node without a bias of its own (``Node.bias`` left None by the graph builder) takes as its
bias the constant of an ``Add`` that is the only consumer of its output, when that constant holds one
value per output channel: right-aligned against the output, it is 1 on every axis except the channel
axis, where it has the channel count. The channel axis is ``activation_channel_axis``: 1 for
convolutions, the last axis for matmuls with the weight on the right (``x @ W``; ``W @ x`` has no such bias).
Differences from the former per-backend rules: a rank-0 constant never is a bias (ONNX took one for a
single-channel layer), and a grouped convolution needs its output channel count in the output shape.
"""

from __future__ import annotations

from nncompress.graph.ir import BiasInfo, Graph, Node, TensorRef
from nncompress.graph.ops import OpKind, activation_channel_axis

CONV_KINDS = frozenset({OpKind.CONV, OpKind.DEPTHWISE_CONV, OpKind.CONV_TRANSPOSE})


def _channel_axis(node: Node, rank: int | None) -> int | None:
    """The output axis of ``node``'s channels (non-negative; ``activation_channel_axis``), None when unknown."""
    if rank is None or rank < 2 - (node.kind is OpKind.LINEAR):
        return None
    return activation_channel_axis(node.kind) % rank


def _channel_count(node: Node, out_shape: tuple | None, axis: int | None) -> int | None:
    """The output channel count: from the output shape when known, else from an ungrouped weight."""
    if out_shape is not None and axis is not None and isinstance(out_shape[axis], int) and out_shape[axis] > 0:
        return int(out_shape[axis])
    weight = node.weight
    if weight is None or (weight.groups != 1 and node.kind in CONV_KINDS):
        return None  # grouped layouts differ between backends: only the output shape says
    return int(weight.shape[weight.out_axis])


def is_channel_vector(shape: tuple[int, ...], channels: int, axis: int | None, rank: int | None) -> bool:
    """Whether a constant of ``shape`` adds one value per channel along ``axis`` of a rank-``rank`` output
    (a rank-unknown matmul output: ``[C]`` or ``[1, ..., 1, C]``)."""
    if not shape or any(d != 1 for d in shape if d != channels):
        return False
    if rank is None:  # matmul with an unknown output rank: the channels are last
        return shape[-1] == channels and all(d == 1 for d in shape[:-1])
    index = axis - (rank - len(shape))
    if len(shape) > rank or index < 0 or shape[index] != channels:
        return False
    return all(d == 1 for i, d in enumerate(shape) if i != index)


def following_add_bias(graph: Graph, node: Node) -> BiasInfo | None:
    """The bias of ``node`` as a following Add of a per-output-channel constant, None without one."""
    if node.weight is None or not (node.kind in CONV_KINDS or (node.kind is OpKind.LINEAR and node.weight.port != 0)):
        return None  # ``W @ x`` (weight on the left) has its channels on an axis bias correction does not use
    consumers = graph.consumers(TensorRef(node.name, 0))
    if len(consumers) != 1:
        return None
    add = graph.node(consumers[0].node)
    if add.kind is not OpKind.ADD or len(add.inputs) != 2 or len(add.const_ports) != 1:
        return None
    port = next(iter(add.const_ports))
    if port == consumers[0].port or add.inputs[port] is not None:
        return None
    shape = tuple(add.const_ports[port])
    out_shape = node.output_shapes[0] if node.output_shapes else None
    rank = len(out_shape) if out_shape is not None else None
    axis = _channel_axis(node, rank)
    channels = _channel_count(node, out_shape, axis)
    if channels is None or (axis is None and (rank is not None or node.kind in CONV_KINDS)):
        return None
    if not is_channel_vector(shape, channels, axis, rank):
        return None
    return BiasInfo(add.name, port, shape, TensorRef(add.name, 0))


def attach_following_add_biases(graph: Graph) -> None:
    """Set ``Node.bias`` of every weighted node without its own bias that has a following-Add bias."""
    for node in graph:
        if node.bias is None:
            node.bias = following_add_bias(graph, node)
