"""The OpenVINO backend adapter (see docs/adding_a_backend.md)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import openvino as ov

from nncompress.backends.adapter import Capabilities
from nncompress.errors import ValidationError
from nncompress.graph.edits import Edit
from nncompress.graph.ir import Graph, TensorRef
from nncompress.graph.regions import Region

from . import runner
from .cache import ModelCache
from .edits import apply_edits
from .folding import ConstantEvaluator
from .graph_builder import GraphBuilder
from .naming import NameIndex
from .regions import OpenVINORegionRunner


class OpenVINOAdapter:
    """Adapter for ``openvino.Model``; models are never modified in place."""

    capabilities = Capabilities(name="openvino", export_formats=("openvino",))

    def __init__(self, example_input: Any = None) -> None:
        # example_input is not needed: the graph comes from the ov.Model itself (caches hold models weakly)
        self._infer_cache = runner.InferCache()
        self._names: ModelCache[NameIndex] = ModelCache(NameIndex)
        self._graphs: ModelCache[Graph] = ModelCache(self.build_graph)

    def build_graph(self, model: ov.Model) -> Graph:
        """The neutral graph of ``model`` with constants and shape computations folded away."""
        return GraphBuilder(model).build()

    def get_constant(self, model: ov.Model, node: str, port: int) -> np.ndarray:
        """The float32 value of the constant subgraph feeding input ``port`` of ``node``."""
        op = self._names.get(model).op(node)
        if port >= op.get_input_size():
            raise ValidationError(f"{node!r} has {op.get_input_size()} inputs; no input {port}")
        return ConstantEvaluator().array(op.input_value(port))

    def collect(
        self,
        model: ov.Model,
        tensors: Sequence[TensorRef],
        items: Iterable[Any],
        on_item: Callable[[dict[TensorRef, np.ndarray]], None],
    ) -> None:
        """Run the part of ``model`` computing ``tensors`` (compiled once, float32) on each item; pass their
        values on."""
        runner.collect(model, tensors, items, on_item)

    def region_runner(
        self, model: ov.Model, region: Region, fetch: Sequence[TensorRef] = (), constants: dict | None = None,
        outputs: bool = True,
    ) -> OpenVINORegionRunner:
        """The region as its own ov.Model, compiled once (``regions.OpenVINORegionRunner``)."""
        return OpenVINORegionRunner(
            model, self._graphs.get(model), region, fetch, lambda node, port: self.get_constant(model, node, port),
            constants, outputs,
        )

    def region_inputs(self, model: ov.Model, runner, items: Iterable[Any],
                      on_item: Callable[[dict[TensorRef, np.ndarray]], None], extra: Sequence[TensorRef] = ()) -> None:
        """The region's inputs and context (dynamic shapes it reads), and ``extra``, for each item (a run of
        the part of the model computing them)."""
        self.collect(model, list(dict.fromkeys([*runner.region.inputs, *runner.context, *extra])), items, on_item)

    def apply(self, model: ov.Model, edits: Sequence[Edit]) -> ov.Model:
        """A new model with ``edits`` carried out on a clone of ``model``."""
        return apply_edits(model, edits)

    def export(self, model: ov.Model, path: Any, format: str, example_input: Any = None, dynamic_axes=None) -> Any:
        """Save as OpenVINO IR (the only format in ``capabilities.export_formats``)."""
        ov.save_model(model, str(path), compress_to_fp16=False)
        return path

    def prepare_for_validation(self, model: ov.Model) -> ov.CompiledModel:
        """``model`` compiled for the CPU in float32 precision (as the statistics runner does)."""
        return runner.compile_model(model)

    def infer(self, model: ov.Model, item: Any) -> list[np.ndarray]:
        """The outputs of ``model`` for one item (the compiled model is cached per model)."""
        return self._infer_cache.infer(model, item)

    def check_inputs(self, model: ov.Model, item: Any) -> None:
        """Raise CalibrationError when ``item`` is not a valid input of ``model``."""
        runner.prepare_inputs(model, item)


def model_size_bytes(model: ov.Model) -> int:
    """Bytes of ``model`` saved as OpenVINO IR (.xml + .bin) without fp16 compression."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.xml")
        ov.save_model(model, path, compress_to_fp16=False)
        return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
