"""The ONNX region runner: the region extracted as its own ModelProto, one onnxruntime session per region.

The sub-model holds the region's operations, the folded (constant or shape) operations they read, and
the initializers those read. Region inputs become graph inputs; outputs and fetched tensors graph
outputs. Every weight and bias input of the region's operations is rewired to a graph input of its own,
fed on each run with the model's value or the caller's override, so one session serves every call.
A shape read of a tensor outside the region becomes a constant from its static shape (else an error).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from nncompress.errors import UnsupportedModelError
from nncompress.graph.ir import Graph, TensorRef
from nncompress.graph.regions import Region, merged_constants, overridable_ports, override_error, required_value

from .constants import ModelIndex, _shape_constant
from .op_map import SHAPE_OPS
from .runner import _session, needed_nodes
from .shapes import TensorType

OVERRIDE_PREFIX = "nncompress_constant::"


def _value_info(name: str, types: Mapping[str, TensorType], fallback: int = onnx.TensorProto.FLOAT):
    elem = (types.get(name) or (None, None))[0] or fallback
    return onnx.helper.make_tensor_value_info(name, elem, None)


class _Extraction:
    """Collects the node protos, initializers and inputs of one region's sub-model."""

    def __init__(self, index: ModelIndex, types: Mapping[str, TensorType], region: Region):
        self.index, self.types = index, types
        self.position = {name: i for i, name in enumerate(index.names)}
        self.available: set[str] = set()  # tensors given or computed inside the sub-model
        self.nodes: dict[int, onnx.NodeProto] = {}
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.region = region
        self.context: dict[TensorRef, str] = {}  # dynamic shapes of tensors outside the region, fed per item
        self.shapes: list[TensorRef] = []  # the context values that are whole shapes (Shape, not Size)

    def tensor_name(self, ref: TensorRef) -> str:
        index = self.index
        if ref.node in index.input_names and ref.port == 0:
            return ref.node
        proto = index.by_name.get(ref.node)
        if proto is None or ref.port >= len(proto.output):
            raise UnsupportedModelError(f"region {self.region.name!r}: the model has no tensor {ref.node}:{ref.port}")
        return proto.output[ref.port]

    def add_region_node(self, name: str, overrides: dict[int, str]) -> None:
        proto = onnx.NodeProto()
        proto.CopyFrom(self.index.by_name[name])
        proto.name = name
        for port, fed in overrides.items():
            proto.input[port] = fed
        i = self.position[name]
        self.nodes[i] = proto
        self.available.update(out for out in proto.output if out)

    def close(self) -> None:
        """Add the folded operations and initializers the collected nodes read (transitively)."""
        stack = [t for proto in list(self.nodes.values()) for t in proto.input if t]
        while stack:
            tensor = stack.pop()
            if tensor in self.available or tensor in self.initializers:
                continue
            if tensor in self.index.initializers:
                self.initializers[tensor] = self.index.initializers[tensor]
                continue
            producer = self.index.producer.get(tensor)
            if producer is None or producer[0] not in self.index.folded:
                raise UnsupportedModelError(
                    f"region {self.region.name!r} reads tensor {tensor!r}, which is neither one of its inputs nor "
                    "computed from constants inside it"
                )
            proto = self.index.model.graph.node[producer[0]]
            if proto.op_type in SHAPE_OPS and proto.input[0] not in self.available:
                try:
                    proto = _shape_constant(proto, self.types)  # the static shape of a tensor outside the region
                except UnsupportedModelError:  # a dynamic one: fed on each run as context
                    ref = TensorRef(self.index.names[producer[0]], producer[1])
                    self.context[ref] = tensor
                    if proto.op_type == "Shape":
                        self.shapes.append(ref)
                    self.available.add(tensor)
                    continue
            else:
                copy = onnx.NodeProto()
                copy.CopyFrom(proto)
                copy.name = self.index.names[producer[0]]
                proto = copy
            self.nodes[producer[0]] = proto
            self.available.update(out for out in proto.output if out)
            stack.extend(t for t in proto.input if t)

    def ordered_nodes(self) -> list[onnx.NodeProto]:
        return [self.nodes[i] for i in self.index.order if i in self.nodes]


class OnnxRegionRunner:
    """One region of an ONNX model in its own session (see the module docstring).

    ``frozen``: the weight and bias values to use on every run (``Adapter.region_runner``'s ``constants``):
    they and every other constant stay initializers, so onnxruntime folds and prepacks them; ``run`` then
    takes no overrides. None: every weight and bias is a session input, overridable per run. Without
    ``outputs``, the sub-model computes the fetched tensors only (its unused inputs are still fed).
    """

    def __init__(
        self,
        index: ModelIndex,
        types: Mapping[str, TensorType],
        graph: Graph,
        region: Region,
        fetch: Sequence[TensorRef],
        constant: Callable[[str, int], np.ndarray],
        frozen: dict | None = None,
        outputs: bool = True,
    ):
        self.region, self.fetch, self.frozen = region, tuple(fetch), frozen is not None
        extraction = _Extraction(index, types, region)
        self.ports = overridable_ports(graph, region)
        self.defaults: dict[tuple[str, int], np.ndarray] = {}
        rewired, override_inputs, baked = self._constant_ports(index, types, constant, frozen)
        self.input_names = [extraction.tensor_name(t) for t in region.inputs]
        extraction.available.update(self.input_names)
        extraction.available.update(i.name for i in override_inputs)
        extraction.available.update(t.name for t in baked)
        for name in region.nodes:
            extraction.add_region_node(name, rewired.get(name, {}))
        extraction.close()
        self.context = tuple(extraction.context)
        self.shapes = tuple(extraction.shapes)
        self.input_refs = list(region.inputs) + list(self.context)
        self.input_names += list(extraction.context.values())
        self.output_refs = list(dict.fromkeys((list(region.outputs) if outputs else []) + list(fetch)))
        self.output_names = [extraction.tensor_name(t) for t in self.output_refs]
        missing = [n for n in self.output_names if n not in extraction.available]
        if missing:
            raise UnsupportedModelError(f"region {region.name!r} does not compute {missing[0]!r} (output or fetch)")
        shapes = set(extraction.context.values())
        infos = [
            _value_info(n, types, onnx.TensorProto.INT64 if n in shapes else onnx.TensorProto.FLOAT)
            for n in self.input_names
        ]
        results = [_value_info(n, types) for n in dict.fromkeys(self.output_names)]
        initializers = list(extraction.initializers.values()) + baked
        nodes = extraction.ordered_nodes()
        if not outputs:  # only what the fetched tensors depend on (onnxruntime runs every node of its graph)
            nodes, read = needed_nodes(nodes, self.output_names)
            initializers = [i for i in initializers if i.name in read]
        sub_graph = onnx.helper.make_graph(
            nodes, f"region {region.name}", infos + override_inputs, results, initializers
        )
        model = index.model
        sub = onnx.helper.make_model(sub_graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
        sub.functions.extend(model.functions)
        self._dtypes = {i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in infos}
        self.session = _session(sub.SerializeToString(), True)
        self._unique_outputs = list(dict.fromkeys(self.output_names))

    def _constant_ports(self, index: ModelIndex, types, constant, frozen: dict | None):
        """Per node, the inputs rewired to a fed input (or baked initializer), those inputs, those initializers."""
        rewired: dict[str, dict[int, str]] = {}
        override_inputs, baked = [], []
        keys = self.ports if frozen is None else list(frozen)
        for node, port in keys:
            if (node, port) not in self.ports:
                raise UnsupportedModelError(override_error(self.region, (node, port)))
            original = index.by_name[node].input[port]
            name = f"{OVERRIDE_PREFIX}{node}::{port}"
            rewired.setdefault(node, {})[port] = name
            elem = (types.get(original) or (None, None))[0] or onnx.TensorProto.FLOAT
            dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
            value = np.asarray(constant(node, port), dtype=dtype)
            if frozen is None:
                override_inputs.append(onnx.helper.make_tensor_value_info(name, elem, None))
                self.defaults[(node, port)] = value
            else:
                given = np.asarray(frozen[(node, port)], dtype=dtype).reshape(value.shape)
                baked.append(numpy_helper.from_array(given, name))
        return rewired, override_inputs, baked

    def run(self, values: dict[TensorRef, np.ndarray], constants: dict | None = None) -> dict[TensorRef, np.ndarray]:
        feeds = {}
        for ref, name in zip(self.input_refs, self.input_names):
            feeds[name] = np.asarray(required_value(self.region, values, ref), dtype=self._dtypes[name])
        weights = merged_constants(self.region, self.defaults, constants, self.frozen)
        for (node, port), value in weights.items():
            feeds[f"{OVERRIDE_PREFIX}{node}::{port}"] = value
        results = dict(zip(self._unique_outputs, self.session.run(self._unique_outputs, feeds)))
        return {ref: results[name] for ref, name in zip(self.output_refs, self.output_names)}

