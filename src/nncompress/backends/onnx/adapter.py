"""The ONNX backend: neutral graph, constants, statistics, edits and inference via onnxruntime."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import onnx

from nncompress.backends.adapter import Capabilities
from nncompress.backends.onnx.constants import ModelIndex, build_index, evaluate_tensor, initializer_array
from nncompress.backends.onnx.edits import apply_edits
from nncompress.backends.onnx.graph_builder import build_graph
from nncompress.backends.onnx.naming import OUTPUT_PREFIX
from nncompress.backends.onnx.regions import OnnxRegionRunner
from nncompress.backends.onnx.runner import ModelCache, create_session, input_specs, make_feeds
from nncompress.backends.onnx.shapes import TensorType, infer_types
from nncompress.errors import UnsupportedModelError, ValidationError
from nncompress.graph.edits import Edit
from nncompress.graph.ir import Graph, TensorRef
from nncompress.graph.regions import Region


def as_model(model: Any) -> onnx.ModelProto:
    """``model`` itself, or the model stored at a path (external data loaded)."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, os.PathLike)):
        return onnx.load(os.fspath(model))
    raise UnsupportedModelError(f"expected an onnx.ModelProto or a path to a .onnx file; got {type(model).__name__}")


def model_size_bytes(model: Any) -> int:
    """Serialized size of ``model`` in bytes."""
    return as_model(model).ByteSize()


class OnnxAdapter:
    """Adapter for ``onnx.ModelProto`` models, executed with onnxruntime on CPU."""

    # ONNX Runtime's integer kernels (QLinearConv, QLinearAdd) need per-tensor activation scales
    # and Q/DQ on every Add input.
    capabilities = Capabilities(name="onnx", fuse_linear_arithmetic=False, per_channel_activations=False)

    def __init__(self, example_input: Any = None) -> None:
        # example_input is not needed: the graph comes from the ModelProto itself. The caches below hold
        # models strongly (a ModelProto cannot be weakly referenced): an adapter serves one API call.
        self._indexes = ModelCache(4)
        self._types = ModelCache(4)
        self._sessions = ModelCache(2)
        self._graphs = ModelCache(2)

    def _index(self, model: onnx.ModelProto) -> ModelIndex:
        return self._indexes.get(model, lambda: build_index(model))

    def _types_of(self, model: onnx.ModelProto) -> dict[str, TensorType]:
        return self._types.get(model, lambda: infer_types(model))

    def build_graph(self, model: Any) -> Graph:
        """The neutral graph of ``model`` (constants and shape computations folded away)."""
        model = as_model(model)
        return build_graph(self._index(model), self._types_of(model))

    def _input_tensor(self, index: ModelIndex, node: str, port: int) -> str:
        if node.startswith(OUTPUT_PREFIX) and port == 0:
            outputs = {o.name for o in index.model.graph.output}
            if node[len(OUTPUT_PREFIX) :] in outputs:
                return node[len(OUTPUT_PREFIX) :]
        proto = index.by_name.get(node)
        if proto is None:
            raise ValidationError(f"the model has no operation named {node!r}")
        if not 0 <= port < len(proto.input) or not proto.input[port]:
            raise ValidationError(f"operation {node!r} has no input on port {port}")
        return proto.input[port]

    def get_constant(self, model: Any, node: str, port: int) -> np.ndarray:
        """The float32 value of the constant on input ``port`` of ``node``."""
        model = as_model(model)
        index = self._index(model)
        tensor = self._input_tensor(index, node, port)
        if not index.is_constant(tensor):
            raise ValidationError(f"input {port} of {node!r} ({tensor!r}) is not a constant")
        if tensor in index.initializers:
            return np.asarray(initializer_array(index.initializers[tensor]), dtype=np.float32)
        value = evaluate_tensor(model, tensor, index.producer_node, index.initializers, self._types_of(model))
        return np.asarray(value, dtype=np.float32)

    def _tensor_name(self, index: ModelIndex, ref: TensorRef) -> str:
        if ref.node in index.input_names and ref.port == 0:
            return ref.node
        proto = index.by_name.get(ref.node)
        if proto is None or not 0 <= ref.port < len(proto.output) or not proto.output[ref.port]:
            raise ValidationError(f"the model has no tensor {ref} (operation output)")
        return proto.output[ref.port]

    def collect(
        self,
        model: Any,
        tensors: Sequence[TensorRef],
        items: Iterable[Any],
        on_item: Callable[[dict[TensorRef, np.ndarray]], None],
    ) -> None:
        """Run the part of ``model`` computing ``tensors`` on each item (one session) and pass their values
        to ``on_item``."""
        model = as_model(model)
        index = self._index(model)
        names = [self._tensor_name(index, t) for t in tensors]
        unique = list(dict.fromkeys(names))
        session = create_session(model, unique, only=True) if unique else None  # nothing to compute: no model
        specs = input_specs(model)
        for item in items:
            feeds = make_feeds(specs, item)
            if not unique:
                on_item({})
                continue
            values = dict(zip(unique, session.run(unique, feeds)))
            on_item({t: values[n] for t, n in zip(tensors, names)})

    def region_runner(
        self, model: Any, region: Region, fetch: Sequence[TensorRef] = (), constants: dict | None = None,
        outputs: bool = True,
    ) -> OnnxRegionRunner:
        """The region extracted as its own model, one onnxruntime session (``regions.OnnxRegionRunner``)."""
        model = as_model(model)
        index = self._index(model)
        graph = self._graphs.get(model, lambda: build_graph(index, self._types_of(model)))
        return OnnxRegionRunner(
            index, self._types_of(model), graph, region, fetch,
            lambda node, port: self.get_constant(model, node, port), constants, outputs,
        )

    def region_inputs(self, model: Any, runner, items: Iterable[Any],
                      on_item: Callable[[dict[TensorRef, np.ndarray]], None], extra: Sequence[TensorRef] = ()) -> None:
        """The region's inputs and context (dynamic shapes it reads), and ``extra``, for each item (a run of
        the part of the model computing them)."""
        self.collect(model, list(dict.fromkeys([*runner.region.inputs, *runner.context, *extra])), items, on_item)

    def apply(self, model: Any, edits: Sequence[Edit]) -> onnx.ModelProto:
        """A new model with ``edits`` carried out; ``model`` itself is untouched."""
        return apply_edits(as_model(model), edits)

    def export(self, model: Any, path: Any, format: str, example_input: Any = None, dynamic_axes=None) -> Any:
        """Save as ONNX, or convert to OpenVINO IR."""
        if format == "onnx":
            onnx.save(as_model(model), str(path))
            return path
        import openvino as ov

        ov.save_model(ov.convert_model(as_model(model)), str(path), compress_to_fp16=False)
        return path

    def prepare_for_validation(self, model: Any) -> onnx.ModelProto:
        """The ModelProto itself: validation functions create their own onnxruntime session."""
        return as_model(model)

    def infer(self, model: Any, item: Any) -> list[np.ndarray]:
        """The model's outputs for one item (the session is cached per model object)."""
        model = as_model(model)
        session = self._sessions.get(model, lambda: create_session(model))
        return list(session.run(None, make_feeds(input_specs(model), item)))

    def check_inputs(self, model: Any, item: Any) -> None:
        """Raise CalibrationError when ``item`` is not a valid input of ``model``."""
        make_feeds(input_specs(as_model(model)), item)
