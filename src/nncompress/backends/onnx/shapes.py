"""Element types and static shapes of every tensor, from ONNX shape inference on a light copy."""

from __future__ import annotations

import math
from itertools import chain

import onnx

# (element type or None, shape with -1 for dynamic dimensions or None when unknown)
TensorType = tuple[int | None, tuple[int, ...] | None]

SMALL_INITIALIZER = 4096  # initializers up to this many elements keep their data for data propagation


def value_info_type(value_info: onnx.ValueInfoProto) -> TensorType:
    """(elem_type, shape) of a value info; (None, None) for non-tensor or untyped values."""
    if not value_info.type.HasField("tensor_type"):
        return None, None
    tensor_type = value_info.type.tensor_type
    elem = tensor_type.elem_type or None
    if not tensor_type.HasField("shape"):
        return elem, None
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
    return elem, dims


def _lite_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without the data of large initializers (they become typed graph inputs)."""
    graph = model.graph
    lite = onnx.ModelProto()
    lite.ir_version = max(model.ir_version, 4)
    lite.opset_import.extend(model.opset_import)
    lite.functions.extend(model.functions)
    lite.graph.name = graph.name
    lite.graph.node.extend(graph.node)
    lite.graph.input.extend(graph.input)
    lite.graph.output.extend(graph.output)
    lite.graph.value_info.extend(graph.value_info)
    input_names = {i.name for i in graph.input}
    for init in graph.initializer:
        if math.prod(init.dims) <= SMALL_INITIALIZER:
            lite.graph.initializer.append(init)
        elif init.name not in input_names:
            lite.graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, init.dims))
    return lite


def infer_types(model: onnx.ModelProto) -> dict[str, TensorType]:
    """Tensor name -> (elem_type, shape) for every tensor shape inference can type."""
    lite = _lite_copy(model)
    try:
        lite = onnx.shape_inference.infer_shapes(lite, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best effort; the stored value infos remain
        pass
    graph = lite.graph
    types = {vi.name: value_info_type(vi) for vi in chain(graph.input, graph.value_info, graph.output)}
    for init in model.graph.initializer:
        types[init.name] = (init.data_type, tuple(init.dims))
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] not in types:
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = (attr.t.data_type, tuple(attr.t.dims))
    return types
