"""One tiny torch model in the three backends, run and calibrated from the same test code.

The contract templates (``tests/contract/test_*.py``) take the ``backend`` fixture (``conftest.py``) and
build their model with ``as_backend``; ``record_edits`` captures what an algorithm hands to ``adapter.apply``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import nncompress as nncf
from nncompress.backends import registry
from nncompress.graph.edits import EditStream
from nncompress.graph.ir import Graph, Node
from tests.contract.models import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")

BACKENDS = ("openvino", "onnx", "torch")
MLP_INPUT = (1, 8, 64)


class MLP(nn.Module):
    """x [batch, tokens, 64] -> Linear -> ReLU -> Linear -> ReLU -> Linear: AWQ's Activation->Linear pattern."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 128), nn.Linear(128, 128), nn.Linear(128, 32)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def as_backend(module: nn.Module, example: torch.Tensor, backend: str, tmp_path):
    """``module`` itself (torch), or its ONNX export as an ``onnx.ModelProto`` or an ``openvino.Model``."""
    if backend == "torch":
        return module
    path = export_onnx(module, example, tmp_path / "model.onnx")
    return onnx.load(path) if backend == "onnx" else ov.convert_model(path)


def run(model, x: np.ndarray, exact: bool = False) -> np.ndarray:
    """The first output of ``model`` (any backend) on ``x``, in float32.

    ``exact``: no runtime rewrites that change numbers (ONNX Runtime's and OpenVINO's integer kernels quantize
    the activations of a MatMul with a quantized weight on the fly), so an edit's effect is seen as written.
    """
    if isinstance(model, nn.Module):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()
    if isinstance(model, onnx.ModelProto):
        options = ort.SessionOptions()
        if exact:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0]
    config = {"INFERENCE_PRECISION_HINT": "f32"} | ({"DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"} if exact else {})
    return ov.Core().compile_model(model, "CPU", config)(x)[0]


def dataset(items: list[np.ndarray], backend: str) -> nncf.Dataset:
    """``items`` as calibration data of ``backend`` (tensors for torch, arrays otherwise)."""
    return nncf.Dataset(items, torch.from_numpy if backend == "torch" else None)


def items(shape: tuple[int, ...], count: int = 16, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype(np.float32) for _ in range(count)]


@dataclass
class Tiny:
    """The MLP in one backend, with its adapter and neutral graph."""

    backend: str
    module: nn.Module
    model: Any
    adapter: Any
    graph: Graph
    layers: dict[str, Node] = field(default_factory=dict)  # "fc1" -> its weighted node

    def layer_of(self, node: str) -> str:
        """The torch module ("fc1") of a weighted node or of its bias node, whatever the backend names it."""
        for name, layer in self.layers.items():
            if node == layer.name or (layer.bias is not None and node == layer.bias.node):
                return name
        raise KeyError(f"{node!r} is no weighted node or bias of {sorted(self.layers)}")

    def weight(self, layer: str) -> np.ndarray:
        """The layer's weight in torch layout [out, in], read through the adapter."""
        node = self.layers[layer]
        value = self.adapter.get_constant(self.model, node.name, node.weight.port)
        return value if node.weight.out_axis == 0 else value.T

    def input_of(self, layer: str):
        """The tensor read on input 0 of ``layer``'s node (e.g. the ReLU output before fc2)."""
        return self.graph.producer(_input(self.layers[layer], 0))


def _input(node: Node, port: int):
    from nncompress.graph.ir import InputRef

    return InputRef(node.name, port)


def tiny(backend: str, tmp_path) -> Tiny:
    module = MLP().eval()
    example = torch.zeros(*MLP_INPUT)
    model = as_backend(module, example, backend, tmp_path)
    adapter = registry.get_adapter(model, example_input=example if backend == "torch" else example.numpy())
    graph = adapter.build_graph(model)
    # weighted nodes in graph (topological) order are the Linear modules in definition order
    modules = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    layers = dict(zip(modules, [n for n in graph if n.weight is not None], strict=True))
    return Tiny(backend, module, model, adapter, graph, layers)


class EditRecorder:
    """The edits of every ``adapter.apply`` call of one backend, in the order given (streams materialised)."""

    def __init__(self):
        self.calls: list[list] = []

    @property
    def edits(self) -> list:
        return [edit for call in self.calls for edit in call]

    def of(self, kind: type) -> list:
        return [edit for edit in self.edits if isinstance(edit, kind)]


@contextmanager
def record_edits(backend: str) -> Iterator[EditRecorder]:
    """Within the block, every edit that ``backend``'s adapter class receives in ``apply`` is recorded."""
    module_name, class_name, _ = registry._ADAPTERS[backend]
    cls = getattr(importlib.import_module(module_name), class_name)
    original = cls.apply
    recorder = EditRecorder()

    def apply(self, model, edits):
        options = edits.options if isinstance(edits, EditStream) else None
        edits = list(edits)
        recorder.calls.append(edits)
        return original(self, model, EditStream(edits, options) if options is not None else edits)

    cls.apply = apply
    try:
        yield recorder
    finally:
        cls.apply = original
