"""Running OpenVINO models on CPU: input checks, compilation, statistics collection, inference."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import openvino as ov

from nncompress.errors import CalibrationError
from nncompress.graph.ir import TensorRef

from .cache import ModelCache
from .naming import NameIndex

DEVICE = "CPU"
# exact float32 results: no bf16/f16 execution (the default on CPUs with AMX/avx512_bf16) and no dynamic
# int8 quantization of activations that feed int8-weight matmuls
COMPILE_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}


def compile_model(model: ov.Model) -> ov.CompiledModel:
    """``model`` compiled once for the CPU in float32 precision."""
    return ov.Core().compile_model(model, DEVICE, COMPILE_CONFIG)


def _to_array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensors
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _describe_inputs(model: ov.Model) -> str:
    parts = []
    for port in model.inputs:
        names = sorted(port.get_names()) or [port.get_node().get_friendly_name()]
        parts.append(f"{names[0]}: {port.get_element_type().get_type_name()}{port.get_partial_shape()}")
    return ", ".join(parts)


def _fail(model: ov.Model, problem: str) -> CalibrationError:
    return CalibrationError(f"{problem}; the model expects inputs ({_describe_inputs(model)})")


def _split_item(model: ov.Model, item: Any) -> list[Any]:
    """The item's values in model input order."""
    ports = model.inputs
    if isinstance(item, dict):
        values = []
        for port in ports:
            keys = set(port.get_names()) | {port.get_node().get_friendly_name()}
            found = [k for k in item if k in keys]
            if not found:
                raise _fail(model, f"the input dict has no value for {sorted(keys)[0]!r} "
                                   f"(got keys {sorted(map(str, item))})")
            values.append(item[found[0]])
        if len(item) != len(ports):
            raise _fail(model, f"the input dict has {len(item)} entries, not {len(ports)}")
        return values
    if isinstance(item, (tuple, list)) and len(item) == len(ports):
        return list(item)
    if len(ports) == 1 and not isinstance(item, (tuple, list, str, bytes)):
        return [item]
    kind = f"a {type(item).__name__} of {len(item)}" if isinstance(item, (tuple, list)) else repr(type(item))
    raise _fail(model, f"got {kind} for a model with {len(ports)} input(s)")


def _fit(model: ov.Model, port: ov.Output, value: Any) -> np.ndarray:
    array = _to_array(value)
    expected = port.get_element_type()
    name = sorted(port.get_names())[0] if port.get_names() else port.get_node().get_friendly_name()
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise _fail(model, f"input {name!r} got an array of dtype {array.dtype}")
    if expected.is_integral() and array.dtype.kind == "f":
        raise _fail(model, f"input {name!r} is {expected.get_type_name()} but got {array.dtype} values")
    if not port.get_partial_shape().compatible(ov.PartialShape(list(array.shape))):
        raise _fail(model, f"input {name!r} got shape {list(array.shape)}")
    target = expected.to_dtype() if expected.is_static() else array.dtype
    return np.ascontiguousarray(array, dtype=target)


def prepare_inputs(model: ov.Model, item: Any) -> list[np.ndarray]:
    """``item`` as one checked, contiguous array per model input; CalibrationError if it does not fit."""
    values = _split_item(model, item)
    return [_fit(model, port, value) for port, value in zip(model.inputs, values)]


def _requested_output(index: NameIndex, ref: TensorRef) -> ov.Output:
    op = index.op(ref.node)
    if op.get_type_name() == "Result":
        return op.input_value(0)
    return op.output(ref.port)


def collect(
    model: ov.Model,
    tensors: Sequence[TensorRef],
    items: Iterable[Any],
    on_item: Callable[[dict[TensorRef, np.ndarray]], None],
) -> None:
    """Run the part of ``model`` computing ``tensors`` on every item: an ov.Model of a clone's nodes with
    those tensors as its only outputs (what they do not depend on is not compiled), compiled once."""
    if not tensors:  # nothing to compute: the items are still checked
        for item in items:
            prepare_inputs(model, item)
            on_item({})
        return
    clone = model.clone()
    index = NameIndex(clone)
    wanted = {ref: _requested_output(index, ref) for ref in dict.fromkeys(tensors)}
    outputs = list(dict.fromkeys(wanted.values()))
    part = ov.Model(outputs, clone.get_parameters(), f"{clone.get_friendly_name()} (statistics)")
    positions = {ref: outputs.index(out) for ref, out in wanted.items()}
    request = compile_model(part).create_infer_request()
    for item in items:
        request.infer(prepare_inputs(clone, item))
        on_item({ref: request.get_output_tensor(i).data.copy() for ref, i in positions.items()})


class InferCache:
    """Infer requests of compiled models for the last few models given to ``infer``."""

    def __init__(self, size: int = 2):
        self._requests = ModelCache(lambda m: compile_model(m).create_infer_request(), size)

    def infer(self, model: ov.Model, item: Any) -> list[np.ndarray]:
        request = self._requests.get(model)
        request.infer(prepare_inputs(model, item))
        return [request.get_output_tensor(i).data.copy() for i in range(len(model.outputs))]
