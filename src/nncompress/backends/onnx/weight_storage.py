"""Compressed weights in ONNX models, written without ever copying the float model.

Storage per weight (``CompressedWeight``):
- MatMul ``x @ W`` (W ``[K, N]`` on input 1) and Gemm (``transA=0``) with INT4_SYM/INT4_ASYM/INT2_SYM and
  a power-of-two group of at least 16: ``com.microsoft::MatMulNBits`` (ONNX Runtime's 4-bit kernel, also
  ``bits=2``: four codes ``q + 2`` per byte, the kernel's default zero point 2). ``B``
  is ``[N, K / block, block / 2]`` bytes, low nibble first along K; scales ``[N * blocks]``; INT4_ASYM zero
  points packed the same way per row ``[N * ceil(blocks / 2)]``; INT4_SYM codes are stored as ``q + 8``
  without zero points (the kernel's default zero point is 8). A Gemm bias ``C`` becomes the kernel's bias
  input and the Gemm is removed, so the bias is added exactly once; a following ``Add`` stays as it is.
- Embedding Gather, 8-bit: rows are gathered from the int8/uint8 table first, then dequantized with
  their gathered scale and zero point (the table stays 8-bit at run time).
- Other 8-bit weights with one scale axis: ``DequantizeLinear(axis)`` of an int8/uint8 initializer.
- Everything else (4-bit on convolutions/embeddings/other layouts, NF4, FP4, MXFP4, NVFP4, CB4, FP8):
  packed bytes (4-bit) or bytes (8-bit float codes) are unpacked by a small integer subgraph, mapped
  through ``(q - zp) * scale`` or a codebook (``* tensor scale`` for NVFP4) and reshaped.
- INT3_SYM (and INT2_SYM outside MatMulNBits): the packed bytes of ``numerics.packing`` (u3 / u2 layout)
  stay uint8 initializers and are decoded by Gathers from two shared 256-row int8 tables (the values of a
  byte's 2-bit fields, the high bits of a 3-bit triple), as ``numerics.decode`` does. ONNX's own
  INT2/UINT2 DequantizeLinear needs opset 25 (ONNX Runtime 1.32 runs it), which would mean raising the
  opset of the user's whole model, and there is no 3-bit ONNX type.

``apply_weight_edits`` builds the new model from a copy of the graph *without* initializers; the
original initializers that are still read at the end are copied, the replaced ones never are.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nncompress.backends.onnx.constants import evaluate_tensor
from nncompress.backends.onnx.editor import Editor
from nncompress.backends.onnx.naming import resolve_node_names, subgraph_refs, unique_name
from nncompress.errors import ValidationError
from nncompress.graph.edits import AddLowRankCorrection, CompressWeight, EditStream
from nncompress.numerics.chunked import chunk_bounds, run_chunks, transpose_2d
from nncompress.numerics.decode import narrow_tables
from nncompress.numerics.encoding import CompressedWeight
from nncompress.numerics.grids import E4M3_LEVELS, nearest_e4m3
from nncompress.numerics.lowbit import NARROW_BITS, pack_4bit
from nncompress.numerics.packing import pack_2bit
from nncompress.parameters import CompressWeightsMode as Mode

MS_DOMAIN = "com.microsoft"
INT_MODES = (Mode.INT4_SYM, Mode.INT4_ASYM, Mode.INT8_SYM, Mode.INT8_ASYM)
NBITS_MODES = (*INT_MODES, Mode.INT2_SYM)  # MatMulNBits takes 2, 4 and 8 bits
# MatMulNBits accuracy_level: 0 computes in the activations' float type (results equal the dequantized
# weights); 4 lets ONNX Runtime quantize activations to int8 (faster, less exact).
DEFAULT_ACCURACY_LEVEL = 0


def has_weight_edits(edits) -> bool:
    """Whether ``edits`` must go through ``apply_weight_edits`` (a stream, or a list with weight edits)."""
    if isinstance(edits, EditStream):
        return True
    return any(isinstance(e, (CompressWeight, AddLowRankCorrection)) for e in edits)


class _Builder:
    """The new model: graph without initializers, new nodes placed before their consumers."""

    def __init__(self, model: onnx.ModelProto, accuracy_level: int = DEFAULT_ACCURACY_LEVEL):
        self.source = model
        self.accuracy_level = accuracy_level
        graph = model.graph
        self.model = onnx.ModelProto()
        for desc, value in model.ListFields():
            if desc.name != "graph":
                _copy_field(self.model, desc, value)
        for desc, value in graph.ListFields():
            if desc.name not in ("initializer", "node"):
                _copy_field(self.model.graph, desc, value)
        self.original = {t.name: t for t in graph.initializer}
        self.shared: dict[str, str] = {}
        inputs = [i.name for i in graph.input if i.name not in self.original]
        self.nodes = []
        for proto, name in zip(graph.node, resolve_node_names(list(graph.node), inputs)):
            node = onnx.NodeProto()
            node.CopyFrom(proto)
            node.name = name
            self.nodes.append(node)
        self.by_name = {n.name: n for n in self.nodes}
        self.before: dict[int, list[onnx.NodeProto]] = {}
        self.taken = set(self.by_name) | set(self.original) | {o for n in graph.node for o in n.output}
        self.replaced: dict[int, onnx.NodeProto] = {}
        self._producers: dict[str, onnx.NodeProto] | None = None

    def fresh(self, base: str) -> str:
        """A tensor/node name not used anywhere in the model yet."""
        return unique_name(base, self.taken)

    def init(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        # straight into the new graph: extending it at the end would copy every compressed weight again
        self.model.graph.initializer.add().CopyFrom(numpy_helper.from_array(np.asarray(value), name))
        return name

    def shared_init(self, base: str, value: np.ndarray) -> str:
        """One initializer per distinct ``base`` (codebooks: every weight of a mode uses the same one)."""
        name = self.shared.get(base)
        if name is None:
            name = self.shared[base] = self.init(base, value)
        return name

    def node(self, consumer: onnx.NodeProto, op: str, inputs: list[str], base: str, **attrs) -> str:
        """Add a one-output node placed before ``consumer``; returns its output name."""
        out = self.fresh(f"{base}/output")
        new = helper.make_node(op, inputs, [out], name=self.fresh(base), **attrs)
        self.before.setdefault(id(consumer), []).append(new)
        return out

    def weight_dtype(self, tensor: str) -> int:
        if tensor in self.original:
            return self.original[tensor].data_type
        value = evaluate_tensor(self.source, tensor, self.producers(), self.original, {})
        return helper.np_dtype_to_tensor_dtype(np.asarray(value).dtype)

    def producers(self) -> dict[str, onnx.NodeProto]:
        if self._producers is None:
            self._producers = {out: n for n in self.source.graph.node for out in n.output if out}
        return self._producers

    def finish(self) -> onnx.ModelProto:
        graph = self.model.graph
        nodes = []
        for node in self.nodes:
            nodes += self.before.get(id(node), [])
            nodes.append(self.replaced.get(id(node), node))
        read = {name for n in nodes for name in n.input} | {o.name for o in graph.output}
        read |= {name for n in nodes for name in subgraph_refs(n)}
        graph.node.extend(nodes)
        for name, init in self.original.items():
            if name in read:
                graph.initializer.add().CopyFrom(init)
        keep = [i for i in graph.input if i.name not in self.original or i.name in read]
        del graph.input[:]
        graph.input.extend(keep)
        domains = {o.domain for o in self.model.opset_import}
        if MS_DOMAIN not in domains and any(n.domain == MS_DOMAIN for n in nodes):
            self.model.opset_import.add(domain=MS_DOMAIN, version=1)
        return self.model


def _copy_field(target, desc, value) -> None:
    if hasattr(value, "extend"):  # repeated field
        getattr(target, desc.name).extend(value)
    elif hasattr(value, "CopyFrom"):
        getattr(target, desc.name).CopyFrom(value)
    else:
        setattr(target, desc.name, value)


def _attr(node: onnx.NodeProto, name: str, default):
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


# --------------------------------------------------------------------------- decoding subgraphs


def _unpacked_codes(b: _Builder, consumer, weight: CompressedWeight, base: str, packed: np.ndarray) -> str:
    """int32 codes in the stored shape from packed bytes (Div/Mod on int32 work in every opset)."""
    raw = b.init(f"{base}/packed", packed)
    wide = b.node(consumer, "Cast", [raw], f"{base}/to_int32", to=TensorProto.INT32)
    sixteen = b.init(f"{base}/sixteen", np.array(16, np.int32))
    high = b.node(consumer, "Div", [wide, sixteen], f"{base}/high")
    low = b.node(consumer, "Mod", [wide, sixteen], f"{base}/low")
    axis = b.init(f"{base}/last_axis", np.array([-1], np.int64))
    pair = [b.node(consumer, "Unsqueeze", [t, axis], f"{base}/unsqueeze") for t in (low, high)]
    codes = b.node(consumer, "Concat", pair, f"{base}/interleave", axis=-1)
    flat = b.node(consumer, "Reshape", [codes, b.init(f"{base}/flat", np.array([-1], np.int64))], f"{base}/flatten")
    if weight.size % 2:
        ends = [b.init(f"{base}/{k}", np.array([v], np.int64)) for k, v in (("start", 0), ("end", weight.size))]
        flat = b.node(consumer, "Slice", [flat, *ends], f"{base}/trim")
    shape = b.init(f"{base}/stored_shape", np.array(weight.stored_shape, np.int64))
    return b.node(consumer, "Reshape", [flat, shape], f"{base}/codes")


def _narrow_values(b: _Builder, consumer, weight: CompressedWeight, base: str) -> str:
    """Float32 signed values in the stored shape of INT3_SYM / INT2_SYM packed bytes (int8 table Gathers)."""
    low, high = (b.shared_init(f"nncompress/int{weight.bits}_{part}", table.astype(np.int8))
                 for part, table in zip(("low_fields", "high_bits"), narrow_tables(weight.bits)))
    raw = b.init(f"{base}/packed", weight.data.reshape(-1, 3) if weight.bits == 3 else weight.data)
    index = b.node(consumer, "Cast", [raw], f"{base}/to_index", to=TensorProto.INT32)
    if weight.bits == 3:
        octets = b.init(f"{base}/octets", np.array([-1, 8], np.int64))
        parts = []
        for part, table, (start, stop) in (("low", low, (0, 2)), ("high", high, (2, 3))):
            ends = [b.init(f"{base}/{part}_{k}", np.array([v], np.int64)) for k, v in
                    (("start", start), ("stop", stop), ("axis", 1))]
            rows = b.node(consumer, "Slice", [index, *ends], f"{base}/{part}_bytes")
            values = b.node(consumer, "Gather", [table, rows], f"{base}/{part}_lookup", axis=0)
            values = b.node(consumer, "Cast", [values], f"{base}/{part}_to_float", to=TensorProto.FLOAT)
            parts.append(b.node(consumer, "Reshape", [values, octets], f"{base}/{part}_octets"))
        value = b.node(consumer, "Add", parts, f"{base}/add_high")
    else:
        value = b.node(consumer, "Gather", [low, index], f"{base}/lookup", axis=0)
        value = b.node(consumer, "Cast", [value], f"{base}/to_float", to=TensorProto.FLOAT)
    value = b.node(consumer, "Reshape", [value, b.init(f"{base}/flat", np.array([-1], np.int64))], f"{base}/flatten")
    if value_count(weight) != weight.size:
        ends = [b.init(f"{base}/{k}", np.array([v], np.int64)) for k, v in (("begin", 0), ("end", weight.size))]
        value = b.node(consumer, "Slice", [value, *ends], f"{base}/trim")
    shape = b.init(f"{base}/stored_shape", np.array(weight.stored_shape, np.int64))
    return b.node(consumer, "Reshape", [value, shape], f"{base}/values")


def value_count(weight: CompressedWeight) -> int:
    """How many values the packed bytes of an INT3_SYM / INT2_SYM weight decode to (padding included)."""
    return weight.data.size * 8 // weight.bits


def _generic(b: _Builder, consumer, weight: CompressedWeight, base: str, elem: int) -> str:
    """Float weight from any CompressedWeight: codes -> (q - zp) * scale or codebook * scale."""
    if weight.mode in NARROW_BITS:
        value = _narrow_values(b, consumer, weight, base)
        value = b.node(consumer, "Mul", [value, _scale(b, consumer, weight, base)], f"{base}/multiply")
        if weight.stored_shape != weight.shape:
            shape = b.init(f"{base}/shape", np.array(weight.shape, np.int64))
            value = b.node(consumer, "Reshape", [value, shape], f"{base}/reshape")
        return _cast(b, consumer, value, elem, base)
    if weight.bits == 4:
        codes = weight.codes()
        unsigned = (codes.astype(np.int16) + 8).astype(np.uint8) if weight.signed else codes
        value = _unpacked_codes(b, consumer, weight, base, pack_4bit(unsigned))
        offset = 8 if weight.signed else 0
    else:
        value, offset = b.init(f"{base}/quantized", weight.data.reshape(weight.stored_shape)), 0
    book = weight.codebook
    if book is not None:
        if weight.bits == 8:  # Gather indices must be int32/int64
            value = b.node(consumer, "Cast", [value], f"{base}/to_index", to=TensorProto.INT32)
        shared = weight.book is None  # fixed grids: one table per mode; a user codebook: its own
        table = b.shared_init(f"nncompress/{weight.mode.value}_codebook", book) if shared else b.init(
            f"{base}/codebook", book)
        value = b.node(consumer, "Gather", [table, value], f"{base}/lookup", axis=0)
    else:
        value = b.node(consumer, "Cast", [value], f"{base}/to_float", to=TensorProto.FLOAT)
        zero = np.zeros(weight.scale.shape, np.float32) + offset
        if weight.zero_point is not None:
            zero = zero + weight.zero_point.astype(np.float32)
        if np.any(zero):
            value = b.node(consumer, "Sub", [value, b.init(f"{base}/zero_point", zero)], f"{base}/subtract")
    value = b.node(consumer, "Mul", [value, _scale(b, consumer, weight, base)], f"{base}/multiply")
    if weight.stored_shape != weight.shape:
        shape = b.init(f"{base}/shape", np.array(weight.shape, np.int64))
        value = b.node(consumer, "Reshape", [value, shape], f"{base}/reshape")
    return _cast(b, consumer, value, elem, base)


def _scale(b: _Builder, consumer, weight: CompressedWeight, base: str) -> str:
    """The float32 scale tensor: float16 values cast up (exact), or NVFP4's one-byte E4M3 group scales
    looked up and multiplied by the tensor scale (both constant-folded by ONNX Runtime)."""
    if weight.global_scale is None:
        scale = b.init(f"{base}/scale", weight.scale.astype(weight.scale_dtype))
        if weight.scale_dtype == "float32":
            return scale
        return b.node(consumer, "Cast", [scale], f"{base}/scale_to_float", to=TensorProto.FLOAT)
    codes = b.init(f"{base}/scale_e4m3", nearest_e4m3(weight.scale))
    index = b.node(consumer, "Cast", [codes], f"{base}/scale_index", to=TensorProto.INT32)
    table = b.shared_init("nncompress/e4m3_values", np.nan_to_num(E4M3_LEVELS))
    scale = b.node(consumer, "Gather", [table, index], f"{base}/scale_lookup", axis=0)
    tensor_scale = b.init(f"{base}/tensor_scale", np.array(weight.global_scale, np.float32))
    return b.node(consumer, "Mul", [scale, tensor_scale], f"{base}/scale_times_tensor_scale")


def _cast(b: _Builder, consumer, value: str, elem: int, base: str) -> str:
    if elem == TensorProto.FLOAT:
        return value
    return b.node(consumer, "Cast", [value], f"{base}/to_original", to=elem)


def _single_axis(weight: CompressedWeight) -> int | None:
    """The one axis the scale varies along (8-bit integer per channel), or None."""
    if weight.bits != 8 or weight.group_size != -1 or weight.mode not in INT_MODES:
        return None
    axes = [i for i, d in enumerate(weight.scale.shape) if d != 1]
    return axes[0] if len(axes) == 1 else (0 if not axes else None)


def _dequantize_linear(b: _Builder, consumer, weight: CompressedWeight, axis: int, base: str, elem: int) -> str:
    inputs = [
        b.init(f"{base}/quantized", weight.data.reshape(weight.shape)),
        b.init(f"{base}/scale", weight.scale.reshape(-1)),
    ]
    if weight.zero_point is not None:
        inputs.append(b.init(f"{base}/zero_point", weight.zero_point.reshape(-1)))
    value = b.node(consumer, "DequantizeLinear", inputs, f"{base}/DequantizeLinear", axis=axis)
    return _cast(b, consumer, value, elem, base)


def _gathered_embedding(b: _Builder, node, weight: CompressedWeight, base: str, elem: int) -> None:
    """Gather 8-bit rows first, then dequantize them (table [V, D], one scale per row)."""
    ids = node.input[1]
    table = b.init(f"{base}/quantized", weight.data.reshape(weight.shape))
    rows = b.node(node, "Gather", [table, ids], f"{base}/gather_rows", axis=0)
    value = b.node(node, "Cast", [rows], f"{base}/to_float", to=TensorProto.FLOAT)
    if weight.zero_point is not None:
        zp = b.init(f"{base}/zero_point", weight.zero_point.reshape(-1, 1).astype(np.float32))
        value = b.node(node, "Sub", [value, b.node(node, "Gather", [zp, ids], f"{base}/gather_zp", axis=0)],
                       f"{base}/subtract")
    scale = b.init(f"{base}/scale", weight.scale.reshape(-1, 1))
    gathered = b.node(node, "Gather", [scale, ids], f"{base}/gather_scale", axis=0)
    if elem == TensorProto.FLOAT:
        b.replaced[id(node)] = helper.make_node("Mul", [value, gathered], [node.output[0]], name=node.name)
        return
    value = b.node(node, "Mul", [value, gathered], f"{base}/multiply")
    b.replaced[id(node)] = helper.make_node("Cast", [value], [node.output[0]], name=node.name, to=elem)


# --------------------------------------------------------------------------- MatMulNBits


def _nbits_layout(node: onnx.NodeProto, port: int, weight: CompressedWeight) -> tuple[bool, int] | None:
    """(weight is ``[N, K]``, block size) when MatMulNBits can hold ``weight``, else None.

    4-bit: the group size must be a power of two >= 16. 8-bit per channel: any power-of-two block >= 16
    that divides K (the channel's scale is repeated per block).
    """
    if weight.mode not in NBITS_MODES or len(weight.shape) != 2 or port != 1:
        return None
    k = weight.shape[weight.axis]
    block = weight.group_size if weight.bits < 8 else min(k & -k, 256)
    if weight.bits == 8 and weight.group_size != -1 or block < 16 or block & (block - 1) or k % block:
        return None
    if node.op_type == "MatMul":
        return (False, block) if weight.axis == 0 else None
    if node.op_type != "Gemm" or _attr(node, "transA", 0) or float(_attr(node, "beta", 1.0)) != 1.0:
        return None
    transposed = bool(_attr(node, "transB", 0))
    return (transposed, block) if weight.axis == (1 if transposed else 0) else None


def _row_major(values: np.ndarray, transposed: bool, rows: int) -> np.ndarray:
    """Per-(output row, block) values as ``[N, blocks]``."""
    return values.reshape(rows, -1) if transposed else values.reshape(-1, rows).T


def _signed_to_unsigned(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes shifted by ``2^(bits-1)`` (the kernel's default zero point) as uint8."""
    if bits == 8:
        return codes.view(np.uint8) ^ np.uint8(0x80)
    return (codes + np.int8(1 << (bits - 1))).view(np.uint8)


def _nbits_codes(weight: CompressedWeight, transposed: bool, block: int) -> np.ndarray:
    """``B`` of MatMulNBits: ``[N, K / block, block * bits / 8]`` uint8, built in row chunks on threads."""
    codes = weight.codes()
    n = weight.shape[0] if transposed else weight.shape[1]
    k = weight.size // n
    codes = codes.reshape(n, k) if transposed else codes.reshape(k, n)  # transposed below
    width = block * weight.bits // 8
    out = np.empty((n, k // block, width), np.uint8)

    if not transposed:
        codes = transpose_2d(codes)

    def work(start: int, stop: int) -> None:
        part = codes[start:stop]
        if weight.signed:
            part = _signed_to_unsigned(part, weight.bits)
        packed = {4: pack_4bit, 2: pack_2bit}.get(weight.bits, np.asarray)(part)
        out[start:stop] = packed.reshape(stop - start, -1, width)

    run_chunks(chunk_bounds(n, k, False), work)
    return out


def _matmul_nbits(b: _Builder, node, weight: CompressedWeight, layout: tuple[bool, int], elem: int, base: str,
                  accuracy_level: int) -> None:
    transposed, block = layout
    packed = _nbits_codes(weight, transposed, block)
    n, blocks = packed.shape[:2]
    k = blocks * block
    repeat = blocks if weight.group_size == -1 else 1
    scale = np.repeat(_row_major(weight.scale, transposed, n), repeat, axis=1)
    if node.op_type == "Gemm":
        scale = scale * float(_attr(node, "alpha", 1.0))
    inputs = [
        node.input[0],
        b.init(f"{base}/B", packed),
        b.init(f"{base}/scales", np.ascontiguousarray(scale).reshape(-1).astype(helper.tensor_dtype_to_np_dtype(elem))),
        "",
    ]
    if weight.zero_point is not None:
        zp = np.repeat(_row_major(weight.zero_point, transposed, n), repeat, axis=1)
        if weight.bits == 4:
            zp = pack_4bit(np.pad(zp, ((0, 0), (0, blocks % 2))))
        inputs[3] = b.init(f"{base}/zero_points", np.ascontiguousarray(zp).reshape(-1))
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
        inputs += ["", _gemm_bias(b, node, n, base)]
    while not inputs[-1]:
        inputs.pop()
    b.replaced[id(node)] = helper.make_node(
        "MatMulNBits", inputs, [node.output[0]], name=node.name, domain=MS_DOMAIN,
        K=k, N=n, bits=weight.bits, block_size=block, accuracy_level=accuracy_level,
    )


def _gemm_bias(b: _Builder, node, n: int, base: str) -> str:
    name = node.input[2]
    value = evaluate_tensor(b.source, name, b.producers(), b.original, {})
    value = np.broadcast_to(np.asarray(value), (n,)) if np.asarray(value).size in (1, n) else None
    if value is None:
        raise ValidationError(f"Gemm {node.name!r}: its bias does not have one value per output channel")
    return b.init(f"{base}/bias", np.ascontiguousarray(value))


# --------------------------------------------------------------------------- edits


def _compress(b: _Builder, edit: CompressWeight) -> None:
    node = b.by_name.get(edit.node)
    if node is None:
        raise ValidationError(f"the model has no operation named {edit.node!r}")
    if not 0 <= edit.port < len(node.input) or not node.input[edit.port]:
        raise ValidationError(f"operation {edit.node!r} has no input on port {edit.port}")
    weight, elem = edit.weight, b.weight_dtype(node.input[edit.port])
    layout = _nbits_layout(node, edit.port, weight)
    if layout is not None:
        _matmul_nbits(b, node, weight, layout, elem, edit.name, b.accuracy_level)
        return
    if node.op_type == "Gather" and edit.port == 0 and _single_axis(weight) == 0:
        _gathered_embedding(b, node, weight, edit.name, elem)
        return
    axis = _single_axis(weight)
    if axis is not None:
        value = _dequantize_linear(b, node, weight, axis, edit.name, elem)
    else:
        value = _generic(b, node, weight, edit.name, elem)
    node.input[edit.port] = value


def apply_weight_edits(model: onnx.ModelProto, edits: Iterable) -> onnx.ModelProto:
    """A new model with the weight edits of ``edits`` carried out (consumed one at a time).

    An ``EditStream`` may carry ``onnx_accuracy_level`` (MatMulNBits ``accuracy_level``).
    """
    builder = _Builder(model, getattr(edits, "options", {}).get("onnx_accuracy_level", DEFAULT_ACCURACY_LEVEL))
    rest, iterator = [], iter(edits)
    while (edit := next(iterator, None)) is not None:
        if isinstance(edit, CompressWeight):
            _compress(builder, edit)
        else:
            rest.append(edit)
        del edit  # release the compressed arrays (now initializers) before the next weight is produced
    result = builder.finish()
    if not rest:
        return result
    from nncompress.backends.onnx.edits import apply_edits

    lora = [e for e in rest if isinstance(e, AddLowRankCorrection)]
    if lora:
        result = _add_low_rank(result, lora)
    others = [e for e in rest if not isinstance(e, AddLowRankCorrection)]
    return apply_edits(result, others) if others else result


def _adapter(editor: Editor, value, base: str, elem: int) -> str:
    """The transposed adapter matrix (``[in, rank]`` or ``[rank, out]``) as a tensor name."""
    if not isinstance(value, CompressedWeight):
        dtype = helper.tensor_dtype_to_np_dtype(elem)
        return editor.add_initializer(f"{base}/T", np.ascontiguousarray(np.asarray(value).T).astype(dtype))
    axis = _single_axis(value)
    if axis is None:
        raise ValidationError(f"{base}: ONNX LoRA adapters must be 8-bit per-channel")
    inputs = [editor.add_initializer(f"{base}/quantized", value.data.reshape(value.shape)),
              editor.add_initializer(f"{base}/scale", value.scale.reshape(-1))]
    if value.zero_point is not None:
        inputs.append(editor.add_initializer(f"{base}/zero_point", value.zero_point.reshape(-1)))
    out = editor.add_node("DequantizeLinear", inputs, editor.fresh(f"{base}/dq"), f"{base}/DequantizeLinear",
                          axis=axis)
    if elem != TensorProto.FLOAT:
        out = editor.add_node("Cast", [out], editor.fresh(f"{base}/cast"), f"{base}/Cast", to=elem)
    return editor.add_node("Transpose", [out], editor.fresh(f"{base}/T"), f"{base}/Transpose", perm=[1, 0])


def _add_low_rank(model: onnx.ModelProto, edits: list[AddLowRankCorrection]) -> onnx.ModelProto:
    """``y + (x @ a.T) @ b.T`` after each edit's node; every reader of ``y`` reads the sum."""
    editor = Editor(model)
    for edit in edits:
        node = editor.node(edit.node)
        source, out = node.input[edit.input_port], node.output[0]
        elem = editor.elem_type(out)
        a = _adapter(editor, edit.a, f"{edit.name}/lora_A", elem)
        b = _adapter(editor, edit.b, f"{edit.name}/lora_B", elem)
        raw = editor.rename_output(out)
        hidden = editor.add_node("MatMul", [source, a], editor.fresh(f"{edit.name}/lora_A/out"), f"{edit.name}/lora_A")
        delta = editor.add_node("MatMul", [hidden, b], editor.fresh(f"{edit.name}/lora_B/out"), f"{edit.name}/lora_B")
        editor.add_node("Add", [raw, delta], out, f"{edit.name}/lora_add")
    return editor.finish()
