"""The PyTorch backend adapter (see docs/adding_a_backend.md and this package's docstring).

One adapter serves one API call (``registry.get_adapter`` makes a fresh one). Graph capture needs an
example input, given explicitly: ``TorchAdapter(example_input=item)`` (``nncompress.quantize`` passes
the first calibration item). Each model the call works on is captured once on it.

Without an example input, ``build_graph``, ``get_constant`` and ``apply`` use the graph of the
model's weighted layers read from its module tree (``module_graph``, ``Graph.has_dataflow`` False):
enough for data-free weight compression, which therefore needs no dataset. Statistics and
activation edits need the capture.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nncompress.backends.adapter import Capabilities
from nncompress.errors import CalibrationError, GraphCaptureError, UnsupportedModelError, ValidationError
from nncompress.graph.edits import Edit, EditStream
from nncompress.graph.ir import Graph, TensorRef
from nncompress.graph.regions import Region

from .capture import Capture, capture_graph
from .edits import apply_edits
from .hooks import storage_of
from .inputs import (
    check_model_readable,
    eval_mode,
    exported_example,
    named_tensor,
    output_arrays,
    split_item,
    to_numpy,
)
from .mode import Observer, OpCall, output_tensors, run_model
from .module_graph import module_capture


class _Tap(Observer):
    """Copies the values of the requested tensors out of one run."""

    def __init__(self, tensors: Sequence[TensorRef]):
        self.wanted: dict[str, set[int]] = {}
        for tensor in tensors:
            self.wanted.setdefault(tensor.node, set()).add(tensor.port)
        self.op_names = set(self.wanted)
        self.values: dict[TensorRef, np.ndarray] = {}

    def _take(self, name: str, tensors: list) -> None:
        for port in self.wanted.get(name, ()):
            if port < len(tensors):
                self.values[TensorRef(name, port)] = to_numpy(tensors[port])

    def on_input(self, name: str, value: torch.Tensor) -> None:
        self._take(name, [value])

    def on_op(self, call: OpCall, out: Any) -> None:
        if call.name in self.wanted:
            self._take(call.name, output_tensors(out))

    def on_hook(self, name: str, module: nn.Module, value: torch.Tensor, result: torch.Tensor) -> None:
        self._take(name, [result])


class TorchAdapter:
    """Adapter for ``torch.nn.Module``; results are hooked deep copies, inputs are never modified."""

    # Exported models run in ONNX Runtime and OpenVINO: place quantizers as for ONNX.
    capabilities = Capabilities(
        name="torch",
        fuse_linear_arithmetic=False,
        per_channel_activations=False,
        graph_from_example_input=True,
        export_needs_example_input=True,
        strippable=True,
        trainable=True,
    )

    def __init__(self, example_input: Any = None) -> None:
        self.example_input = example_input  # one model-input item for capturing graphs (this call only)
        self._sources: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> Capture
        self._calls: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> submodule calls

    def capture(self, model: nn.Module) -> Capture:
        """The capture of ``model`` on this adapter's example input (made once per model)."""
        if self.example_input is None:
            raise GraphCaptureError(
                f"capturing the graph of a {type(model).__name__} needs an example input: pass "
                "example_input=... (a tensor, a tuple of positional arguments or a dict of keyword arguments)"
            )
        return self.source(model)

    def source(self, model: nn.Module) -> Capture:
        """The capture on the example input when there is one, else the module-tree graph."""
        cached = self._sources.get(model)
        if cached is None:
            check_model_readable(model)
            example = self.example_input
            if example is None:
                example = exported_example(model)  # a torch.export GraphModule: its layers are not modules
            cached = module_capture(model) if example is None else capture_graph(model, example)
            for (node, port), pname in cached.port_params.items():  # shared weights: one name, several nodes
                if node in cached.graph.nodes:
                    cached.graph.node(node).attrs.setdefault("constant_names", {})[port] = pname
            self._sources[model] = cached
        return cached

    def build_graph(self, model: nn.Module) -> Graph:
        """The neutral graph of ``model``'s forward on the example input, or without one the graph of
        its weighted layers (``module_graph``; ``has_dataflow`` is False)."""
        return self.source(model).graph

    def get_constant(self, model: nn.Module, node: str, port: int) -> np.ndarray:
        """The float32 value of constant input ``port`` of ``node`` (after the hooks on it)."""
        capture = self.source(model)
        graph_node = capture.graph.nodes.get(node)
        if graph_node is None or port not in graph_node.const_ports:
            raise ValidationError(f"input {port} of {node!r} is not a constant of the captured graph")
        pname = capture.port_params.get((node, port))
        value = named_tensor(model, pname) if pname is not None else capture.const_values.get((node, port))
        if value is None:
            raise ValidationError(f"input {port} of {node!r} is not a weight or bias tensor")
        storage = storage_of(model)
        with torch.no_grad():
            if storage is not None:
                for hook in storage.chain("pre", node, port):
                    value = storage.module(hook)(value)
            return value.detach().cpu().float().numpy()

    def collect(
        self,
        model: nn.Module,
        tensors: Sequence[TensorRef],
        items: Iterable[Any],
        on_item: Callable[[dict[TensorRef, np.ndarray]], None],
    ) -> None:
        """One forward per item (no grad, eval mode) with the requested tensors copied out."""
        tap = _Tap(tensors)
        with torch.no_grad(), eval_mode(model):
            for index, item in enumerate(items):
                args, kwargs = split_item(model, item)
                tap.values = {}
                run_model(model, args, kwargs, tap)
                missing = [t for t in tensors if t not in tap.values]
                if missing:
                    raise CalibrationError(
                        f"calibration item {index} did not compute {missing[0].node}:{missing[0].port} "
                        f"({len(missing)} tensors missing): the forward took another path than on the example input"
                    )
                on_item({t: tap.values[t] for t in tensors})

    def region_runner(self, model: nn.Module, region: Region, fetch: Sequence[TensorRef] = (), constants=None,
                      outputs: bool = True):
        """A runner calling the module whose scope is ``region`` (``regions.ModuleRegionRunner``); without
        ``outputs`` the module's forward stops once the fetched tensors are read."""
        from .regions import ModuleRegionRunner, record_module_calls, region_module

        capture = self.capture(model)
        path = region_module(capture.graph, region)
        if path is None:
            raise UnsupportedModelError(
                f"region {region.name!r} ({len(region.nodes)} nodes from {region.nodes[0]!r}) is not exactly the "
                "scope of one module: the PyTorch runner runs one module's scope (e.g. "
                "graph.regions.scope_region(graph, "
                "'model/layers/3'))"
            )
        calls = self._calls.get(model)
        if calls is None:
            calls = self._calls[model] = record_module_calls(model, self.example_input)
        return ModuleRegionRunner(model, capture, calls, path, region, fetch, constants, outputs)

    def region_inputs(self, model: nn.Module, runner, items: Iterable[Any],
                      on_item: Callable[[dict[TensorRef, np.ndarray]], None], extra: Sequence[TensorRef] = ()) -> None:
        """The runner's inputs and context per item, read where its module is called (the forward stops
        there, so ``extra`` values are not read: the pipeline collects those it misses later)."""
        runner.inputs_of(items, on_item)

    def apply(self, model: nn.Module, edits: Sequence[Edit] | EditStream) -> nn.Module:
        """A hooked deep copy of ``model`` with ``edits`` carried out (weight compression: a copy
        holding compressed weights, see ``weight_storage``)."""
        return apply_edits(model, self.source(model), edits)

    def strip(self, model: nn.Module, keep_activation_quantizers: bool = True, do_copy: bool = True,
              strip_format: str = "native") -> nn.Module:
        """A copy (or ``model`` itself) with fake-quantized weights baked into the parameters (``native``),
        stored as integers + scale (``dequantize``) or every compressed weight as float (``in_place``)."""
        from nncompress.backends.torch import strip_formats
        from nncompress.backends.torch.export import strip
        from nncompress.backends.torch.lora_fq import fake_quantized_weights, strip_fake_quantized

        if fake_quantized_weights(model):  # compress_weights' FQ formats: merge, encode as the DQ format has it
            model = copy.deepcopy(model) if do_copy else model
            do_copy = False
            strip_fake_quantized(model)
        function = {"dequantize": strip_formats.strip_dequantize, "in_place": strip_formats.strip_in_place}
        return function.get(strip_format, strip)(model, keep_activation_quantizers, do_copy)

    def fake_quantize_weights(self, model: nn.Module, original: nn.Module, compression_format: str, rank: int,
                              mode: Any) -> nn.Module:
        """``model`` (a ``compress_weights`` result of ``original``) with its ``mode`` weights trainable:
        fake-quantized from ``original``'s float weights, with LoRA adapters of ``rank`` (``lora_fq``)."""
        from nncompress.backends.torch.lora_fq import to_fake_quantize

        to_fake_quantize(model, original, compression_format, rank, mode)
        return model

    def export(self, model: nn.Module, path: Path, format: str, example_input: Any, dynamic_axes=None) -> Path:
        """ONNX with QuantizeLinear/DequantizeLinear, or OpenVINO IR converted from it."""
        from nncompress.backends.torch.export import export_onnx

        if format == "onnx":
            return export_onnx(model, path, example_input, dynamic_axes=dynamic_axes)
        import tempfile

        import openvino as ov

        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = export_onnx(model, Path(tmp) / "model.onnx", example_input, dynamic_axes=dynamic_axes)
            ov.save_model(ov.convert_model(str(onnx_path)), str(path), compress_to_fp16=False)
        return path

    def prepare_for_validation(self, model: nn.Module) -> nn.Module:
        """The model itself: a PyTorch model needs no compilation before a user's validation function."""
        return model

    def infer(self, model: nn.Module, item: Any) -> list[np.ndarray]:
        """The model's output tensors for one item, as numpy arrays in flattening order."""
        args, kwargs = split_item(model, item)
        with torch.no_grad(), eval_mode(model):
            return output_arrays(model(*args, **kwargs))

    def check_inputs(self, model: nn.Module, item: Any) -> None:
        """Raise CalibrationError unless ``model`` runs on ``item`` (nothing is remembered)."""
        check_model_readable(model)
        args, kwargs = split_item(model, item)
        try:
            with torch.no_grad(), eval_mode(model):
                model(*args, **kwargs)
        except Exception as exc:
            raise CalibrationError(
                f"{type(model).__name__}.forward raised {type(exc).__name__} on the calibration item "
                f"({_describe(item)}): {exc}"
            ) from exc


def _describe(item: Any) -> str:
    if isinstance(item, torch.Tensor):
        return f"tensor {tuple(item.shape)} {item.dtype}"
    if isinstance(item, dict):
        return "dict with keys " + ", ".join(repr(k) for k in item)
    return f"{type(item).__name__} of {len(item)} values"
