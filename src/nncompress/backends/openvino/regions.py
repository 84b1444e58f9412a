"""The OpenVINO region runner: an ``ov.Model`` built from the region, compiled once.

On a clone of the model, every consumer of a region input is rewired to a new Parameter, and each
weight and bias input of the region's layers to a Parameter of its own (fed on every run with the
model's value or the caller's override, so one compiled model serves every call: no recompilation).
The region's outputs (unless the runner is made without them) and fetched tensors become Results: the
model computes nothing else. A region that still reaches a model input it
was not given (e.g. a shape read of it) is refused, naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import openvino as ov

from nncompress.errors import UnsupportedModelError
from nncompress.graph.ir import Graph, TensorRef
from nncompress.graph.regions import Region, merged_constants, overridable_ports, override_error, required_value

from .folding import folded_ops
from .naming import NameIndex
from .runner import compile_model


def _output(index: NameIndex, ref: TensorRef) -> ov.Output:
    op = index.op(ref.node)
    if op.get_type_name() == "Result":
        return op.input_value(0)
    if ref.port >= op.get_output_size():
        raise UnsupportedModelError(f"the model has no tensor {ref.node}:{ref.port}")
    return op.output(ref.port)


def _parameter(element_type: ov.Type, shape: ov.PartialShape, name: str) -> ov.Node:
    param = ov.opset13.parameter(shape, element_type, name=name)
    param.output(0).get_tensor().set_names({name})
    return param


class OpenVINORegionRunner:
    """One region of an OpenVINO model compiled on its own (see the module docstring)."""

    def __init__(
        self,
        model: ov.Model,
        graph: Graph,
        region: Region,
        fetch: Sequence[TensorRef],
        constant: Callable[[str, int], np.ndarray],
        frozen: dict | None = None,
        outputs: bool = True,
    ):
        self.region, self.fetch, self.frozen = region, tuple(fetch), frozen is not None
        self.ports = overridable_ports(graph, region)
        unknown = [key for key in frozen or {} if key not in self.ports]
        if unknown:
            raise UnsupportedModelError(override_error(region, unknown[0]))
        self.defaults = {key: constant(*key) for key in self.ports} if frozen is None else {}
        clone = model.clone()
        index = NameIndex(clone)
        wanted = list(dict.fromkeys((list(region.outputs) if outputs else []) + list(fetch)))
        outputs = {ref: _output(index, ref) for ref in wanted}  # before rewiring: region inputs may be outputs
        params = []
        for i, ref in enumerate(region.inputs):
            source = _output(index, ref)
            param = _parameter(source.get_element_type(), source.get_partial_shape(), f"region_input_{i}")
            for target in list(source.get_target_inputs()):
                target.replace_source_output(param.output(0))
            for out_ref, out in outputs.items():
                if out == source:
                    outputs[out_ref] = param.output(0)
            params.append(param)
        context = self._shapes_from_outside(index, folded_ops(clone), set(params))
        self.context = tuple(context)
        self.shapes = self.context  # every context value is a ShapeOf result
        params.extend(context.values())
        self._input_types = [p.get_element_type().to_dtype() for p in params]
        if frozen is not None:
            self._bake(index, frozen)
            self.ports = []
        for i, (node, port) in enumerate(self.ports):
            target = index.op(node).input(port)
            source = target.get_source_output()
            param = _parameter(source.get_element_type(), source.get_partial_shape(), f"region_constant_{i}")
            target.replace_source_output(param.output(0))
            dtype = source.get_element_type().to_dtype()
            self.defaults[(node, port)] = np.asarray(self.defaults[(node, port)], dtype=dtype)
            params.append(param)
        self.output_refs = wanted
        unique = list(dict.fromkeys(outputs.values()))
        self._positions = [unique.index(outputs[ref]) for ref in wanted]
        results = [ov.opset13.result(out) for out in unique]
        try:
            sub = ov.Model(results, params, f"region {region.name}")
        except Exception as exc:  # OpenVINO names the Parameter the region still reaches
            raise UnsupportedModelError(
                f"region {region.name!r} reads a model input it was not given ({exc}); add it to the region's inputs"
            ) from exc
        self.request = compile_model(sub).create_infer_request()

    @staticmethod
    def _bake(index: NameIndex, frozen: dict) -> None:
        """Replace each given weight/bias input by a Constant holding its value (compiled with the region)."""
        for (node, port), value in frozen.items():
            target = index.op(node).input(port)
            source = target.get_source_output()
            partial = source.get_partial_shape()
            array = np.asarray(value, dtype=source.get_element_type().to_dtype())
            if partial.is_static:
                array = array.reshape(list(partial.to_shape()))
            target.replace_source_output(ov.opset13.constant(array).output(0))

    def _shapes_from_outside(self, index: NameIndex, folded: set, params: set) -> dict[TensorRef, ov.Node]:
        """Shape reads (ShapeOf) of tensors outside the region: a Constant where the shape is static, else a
        context Parameter fed on each run."""
        members = {index.op(name) for name in self.region.nodes} | params
        context: dict[TensorRef, ov.Node] = {}
        stack = [v for op in members for v in op.input_values()]
        seen: set = set()
        while stack:
            value = stack.pop()
            op = value.get_node()
            if op in seen or op not in folded:
                continue
            seen.add(op)
            source = op.input_value(0) if op.get_input_size() else None
            if op.get_type_name() not in ("ShapeOf",) or source is None or source.get_node() in folded | members:
                stack.extend(op.input_values())
                continue
            shape = source.get_partial_shape()
            if shape.is_static:
                dims = np.array(list(shape.to_shape()), dtype=op.get_output_element_type(0).to_dtype())
                replacement = ov.opset13.constant(dims)
            else:
                replacement = _parameter(
                    op.get_output_element_type(0), op.get_output_partial_shape(0), f"region_context_{len(context)}"
                )
                context[TensorRef(index.name(op), 0)] = replacement
            for target in list(op.output(0).get_target_inputs()):
                target.replace_source_output(replacement.output(0))
        return context

    def run(self, values: dict[TensorRef, np.ndarray], constants: dict | None = None) -> dict[TensorRef, np.ndarray]:
        feeds = []
        for ref, dtype in zip(list(self.region.inputs) + list(self.context), self._input_types):
            feeds.append(np.ascontiguousarray(required_value(self.region, values, ref), dtype=dtype))
        weights = merged_constants(self.region, self.defaults, constants, self.frozen)
        feeds.extend(weights[key] for key in self.ports)
        self.request.infer(feeds)
        return {ref: self.request.get_output_tensor(i).data.copy() for ref, i in zip(self.output_refs, self._positions)}

