"""Torch function names → the neutral op vocabulary, and where weighted ops keep weight and bias.

Every intercepted call is identified by a short *op name*: the last component of the function's
qualified name with dunders removed (``torch.nn.functional.conv2d`` → ``conv2d``,
``torch.Tensor.__getitem__`` → ``getitem``, ``torch.Tensor.add_`` → ``add_``).
"""

from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass
from functools import lru_cache

from torch._ops import OpOverload
from torch.overrides import resolve_name

from nncompress.graph.ir import WeightInfo
from nncompress.graph.ops import OpKind as K

# metadata queries and attribute reads: never nodes, their results are Python values or constants
PASSTHROUGH = frozenset(
    """size dim shape dtype device ndim numel nelement __len__ __format__ __repr__ __str__ __bool__
    __index__ __int__ __float__ __complex__ __hash__ __contains__ __reduce_ex__ __deepcopy__
    item tolist numpy data_ptr stride storage_offset is_contiguous is_floating_point is_complex
    requires_grad grad_fn grad is_leaf is_nested layout is_cuda is_cpu is_sparse is_quantized is_meta
    get_device element_size names _set_grad_enabled untyped_storage _version
    is_inference __array__ __array_wrap__ __dlpack__ __dlpack_device__ output_nr _base is_mps
    is_xpu has_names dim_order""".split()
)

# ops whose output depends only on the shape/dtype of their inputs (folded like shape computations)
SHAPE_ONLY = frozenset(
    """zeros_like ones_like empty_like full_like rand_like randn_like randint_like new_zeros new_ones
    new_empty new_full new_tensor""".split()
)

# binary ops whose Python-number operand counts as a constant input port
BINARY = frozenset(
    """add sub rsub mul div true_divide floor_divide truediv floordiv pow maximum minimum eq ne lt le gt ge
    radd rmul rtruediv rfloordiv rpow iadd isub imul itruediv ipow fmod remainder mod rmod""".split()
)

_KINDS: dict[K, str] = {
    K.ADD: "add radd iadd",
    K.SUB: "sub rsub isub subtract",
    K.MUL: "mul rmul imul multiply",
    K.DIV: "div rtruediv truediv itruediv true_divide divide",
    K.POW: "pow rpow ipow square",
    K.SQRT: "sqrt",
    K.RECIPROCAL: "reciprocal",
    K.MAXIMUM: "maximum fmax",
    K.MINIMUM: "minimum fmin",
    K.COMPARISON: "eq ne lt le gt ge greater less equal not_equal greater_equal less_equal",
    K.LOGICAL: "logical_and logical_or logical_not logical_xor and or xor invert rand ror rxor bitwise_and "
    "bitwise_or bitwise_not",
    K.RELU: "relu threshold",
    K.CLAMP: "clamp clip relu6 hardtanh clamp_min clamp_max",
    K.SIGMOID: "sigmoid",
    K.HARD_SIGMOID: "hardsigmoid",
    K.HARD_SWISH: "hardswish",
    K.SWISH: "silu",
    K.GELU: "gelu",
    K.ERF: "erf",
    K.TANH: "tanh",
    K.ELU: "elu selu celu",
    K.PRELU: "prelu",
    K.LEAKY_RELU: "leaky_relu",
    K.EXP: "exp",
    K.SOFTMAX: "softmax",
    K.BATCH_NORM: "batch_norm",
    K.LAYER_NORM: "layer_norm",
    K.GROUP_NORM: "group_norm",
    K.NORMALIZE_L2: "normalize",
    K.MAX_POOL: "max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices "
    "max_pool3d_with_indices adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d",
    K.AVG_POOL: "avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d",
    K.REDUCE_MEAN: "mean",
    K.REDUCE_SUM: "sum",
    K.REDUCE_MAX: "amax",
    K.REDUCE_L2: "norm",
    K.RESHAPE: "reshape view view_as unflatten",
    K.FLATTEN: "flatten",
    K.SQUEEZE: "squeeze",
    K.UNSQUEEZE: "unsqueeze",
    K.TRANSPOSE: "permute transpose t swapaxes swapdims movedim T mT H mH adjoint",
    K.SPLIT: "split chunk unbind tensor_split split_with_sizes unsafe_split unsafe_chunk iter",
    K.STRIDED_SLICE: "getitem narrow select slice",
    K.GATHER: "gather index_select take_along_dim",
    K.PAD: "pad",
    K.TILE: "repeat tile repeat_interleave",
    K.BROADCAST: "expand expand_as broadcast_to",
    K.DEPTH_TO_SPACE: "pixel_shuffle",
    K.SPACE_TO_DEPTH: "pixel_unshuffle",
    K.CONCAT: "cat concat concatenate stack hstack vstack",
    K.INTERPOLATE: "interpolate upsample upsample_nearest upsample_bilinear",
    K.SCALED_DOT_PRODUCT_ATTENTION: "scaled_dot_product_attention",
    K.CONVERT: "to float half double bfloat16 type type_as int long bool",
    K.IDENTITY: "contiguous clone detach data dropout dropout1d dropout2d dropout3d alpha_dropout "
    "feature_alpha_dropout identity",
}
KIND_BY_NAME: dict[str, K] = {name: kind for kind, names in _KINDS.items() for name in names.split()}

_CONV = {"conv1d", "conv2d", "conv3d"}
_CONV_T = {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
_MATMUL = {"matmul", "rmatmul", "imatmul", "mm", "bmm"}


@dataclass(frozen=True)
class FuncInfo:
    """How an intercepted callable is named and treated."""

    name: str  # op name used in node names (``add_``, ``getitem``, ``conv2d``)
    base: str  # name without the in-place suffix, used for the op kind
    qualified: str  # the resolved qualified name, for error messages
    passthrough: bool  # metadata query: not a node, not counted
    shape_only: bool  # output depends only on input shapes: folded to a constant
    inplace: bool


@lru_cache(maxsize=4096)
def func_info(func) -> FuncInfo:
    """The naming record of an intercepted torch callable (cached per callable)."""
    if isinstance(func, OpOverload):  # ``torch.ops.aten.conv2d.default`` in a torch.export GraphModule
        return _name_info(func._opname, f"torch.ops.{func.namespace}.{func._opname}.{func._overloadname}")
    try:
        qualified = resolve_name(func)
    except Exception:  # an unusual callable: fall back to its own name
        qualified = None
    qualified = qualified or getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    parts = qualified.split(".")
    last = parts[-1]
    if last in ("__get__", "__set__") and len(parts) > 1:  # attribute access: shape is metadata, .T is an op
        prop = parts[-2]
        return FuncInfo(prop, prop, qualified, prop in PASSTHROUGH or last == "__set__", False, False)
    return _name_info(last, qualified)


def _name_info(last: str, qualified: str) -> FuncInfo:
    name = last[2:-2] if last.startswith("__") and last.endswith("__") and len(last) > 4 else last
    inplace = name.endswith("_") and not name.startswith("_") or name in ("setitem",) or (
        last.startswith("__i") and name[1:] in KIND_BY_NAME
    )
    base = name.rstrip("_") if name.endswith("_") else name
    passthrough = last in PASSTHROUGH or name in PASSTHROUGH
    return FuncInfo(name, base, qualified, passthrough, base in SHAPE_ONLY, inplace)


def mutates_first(func, info: FuncInfo, args: tuple, kwargs: dict) -> bool:
    """Whether the call changes its first tensor argument in place (``add_``, ``+=``, ``x[i] = v``,
    ``relu(x, inplace=True)``)."""
    if info.inplace or kwargs.get("inplace") is True:
        return True
    index = _inplace_index(func)
    return index is not None and len(args) > index and args[index] is True


@lru_cache(maxsize=1024)
def _inplace_index(func) -> int | None:
    """Position of an ``inplace`` parameter (``torch.nn.functional.relu(x, True)``), None without one."""
    try:
        names = list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return None
    return names.index("inplace") if "inplace" in names else None


def is_number(value) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


@dataclass
class OpSpec:
    """The neutral description of one recorded op: kind, weight and bias ports, attributes."""

    kind: K
    weight: WeightInfo | None = None
    bias_port: int | None = None
    attrs: dict | None = None


def op_spec(info: FuncInfo, ports: list, active: list[bool], args: tuple, kwargs: dict) -> OpSpec:
    """Kind (and weight layout) of op ``info`` with port values ``ports``; ``active[p]``: activation."""
    base = info.base
    if base in _CONV or base in _CONV_T:
        return _conv_spec(base, ports, active, args, kwargs)
    if base == "linear":
        return _linear_spec(ports, active)
    if base in _MATMUL:
        return _matmul_spec(ports, active)
    if base == "addmm":
        return _addmm_spec(ports, active)
    if base == "embedding":
        if len(ports) > 1 and active[0] and not active[1] and _ndim(ports[1]) == 2:
            return OpSpec(K.EMBEDDING, WeightInfo(1, tuple(ports[1].shape), 0, 1))
        if info.qualified.startswith("torch.ops.") and len(ports) > 1 and active[1] and not active[0] \
                and _ndim(ports[0]) == 2:  # ``aten.embedding(weight, indices)``
            return OpSpec(K.EMBEDDING, WeightInfo(0, tuple(ports[0].shape), 0, 1))
        return OpSpec(K.GATHER)
    if base in ("max", "min"):
        two = sum(1 for p in ports if _ndim(p) is not None) >= 2
        if base == "max":
            return OpSpec(K.MAXIMUM if two else K.REDUCE_MAX)
        return OpSpec(K.MINIMUM if two else K.OTHER)
    return OpSpec(KIND_BY_NAME.get(base, K.OTHER), attrs=_channel_attrs(base, ports, args, kwargs))


def _channel_attrs(base: str, ports: list, args: tuple, kwargs: dict) -> dict | None:
    """Attributes that tell which axis an op works on (concat axis, reduced axes, norm groups)."""
    try:
        if base in ("cat", "concat", "concatenate"):
            return {"axis": int(_arg(args, kwargs, 1, "dim", 0))}
        if base in ("mean", "sum", "amax"):
            dims = _arg(args, kwargs, 1, "dim", None)
            if dims is None or isinstance(dims, bool):
                return None
            dims = (dims,) if isinstance(dims, int) else tuple(int(d) for d in dims)
            return {"axes": dims, "keepdims": bool(_arg(args, kwargs, 2, "keepdim", False))}
        if base == "group_norm":
            return {"num_groups": int(_arg(args, kwargs, 1, "num_groups", 1))}
    except (TypeError, ValueError):  # an unusual call: no attributes, the op's axes stay unknown
        return None
    return None


def _ndim(value) -> int | None:
    return getattr(value, "ndim", None)


def _arg(args: tuple, kwargs: dict, index: int, name: str, default):
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _conv_spec(base: str, ports: list, active: list[bool], args: tuple, kwargs: dict) -> OpSpec:
    if len(ports) < 2 or not active[0] or active[1]:
        return OpSpec(K.OTHER)
    groups = int(_arg(args, kwargs, 6, "groups", 1))
    weight = ports[1]
    bias = 2 if len(ports) > 2 and not active[2] else None
    attrs = {"groups": groups}
    stride = _arg(args, kwargs, 3, "stride", 1)
    if isinstance(stride, (int, tuple, list)):
        ndim = max(weight.ndim - 2, 1)
        attrs["strides"] = tuple(int(v) for v in stride) if not isinstance(stride, int) else (stride,) * ndim
    if base in _CONV_T:
        info = WeightInfo(1, tuple(weight.shape), 1, 0, groups)
        return OpSpec(K.CONV_TRANSPOSE, info, bias, attrs)
    in_channels = ports[0].shape[1] if _ndim(ports[0]) and ports[0].ndim > 1 else None
    out_channels = weight.shape[0]
    depthwise = groups > 1 and groups == in_channels == out_channels
    kind = K.DEPTHWISE_CONV if depthwise else K.CONV
    return OpSpec(kind, WeightInfo(1, tuple(weight.shape), 0, 1, groups), bias, attrs)


def _linear_spec(ports: list, active: list[bool]) -> OpSpec:
    if len(ports) < 2 or not active[0]:
        return OpSpec(K.OTHER)
    if active[1]:
        return OpSpec(K.MATMUL)
    bias = 2 if len(ports) > 2 and not active[2] else None
    return OpSpec(K.LINEAR, WeightInfo(1, tuple(ports[1].shape), 0, 1), bias)


def _matmul_spec(ports: list, active: list[bool]) -> OpSpec:
    if len(ports) < 2:
        return OpSpec(K.OTHER)
    if active[0] and not active[1] and (_ndim(ports[1]) or 0) >= 2:
        ndim = ports[1].ndim
        return OpSpec(K.LINEAR, WeightInfo(1, tuple(ports[1].shape), ndim - 1, ndim - 2))
    return OpSpec(K.MATMUL)


def _addmm_spec(ports: list, active: list[bool]) -> OpSpec:
    """``addmm(bias, x, W)`` with a constant ``W`` [in, out] (e.g. Hugging Face Conv1D)."""
    if len(ports) == 3 and active[1] and not active[2] and not active[0]:
        return OpSpec(K.LINEAR, WeightInfo(2, tuple(ports[2].shape), 1, 0), bias_port=0)
    return OpSpec(K.MATMUL if len(ports) == 3 and active[1] and active[2] else K.OTHER)
