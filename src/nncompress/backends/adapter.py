"""The one protocol every backend implements, and the record of what a backend can do."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from nncompress.graph.edits import Edit
from nncompress.graph.ir import Graph, TensorRef


@dataclass(frozen=True)
class Capabilities:
    """What a backend supports; checked in one place by the API layer."""

    name: str
    per_channel_activations: bool = True
    full_bias_correction: bool = True
    # Keep a residual Add/Mul after a Conv/MatMul inside the fused chain (no quantizer between them).
    # True where the runtime fuses the pair in float-free kernels (OpenVINO); ONNX Runtime instead
    # needs Q/DQ on both Add inputs to run QLinearConv + QLinearAdd.
    fuse_linear_arithmetic: bool = True


class Adapter(Protocol):
    """Backend operations the algorithms need. Models are never modified in place.

    An adapter serves one API call (``registry.get_adapter`` makes it, ``Adapter(example_input=None)``):
    its caches are per call and it keeps nothing after the call. ``example_input`` is one model-input
    item; backends that capture a graph by running the model (PyTorch) build their graphs from it.
    """

    capabilities: Capabilities

    def build_graph(self, model: Any) -> Graph:
        """The neutral graph of ``model``'s inference computation."""

    def get_constant(self, model: Any, node: str, port: int) -> np.ndarray:
        """The float32 value of the constant on input ``port`` of ``node``."""

    def collect(
        self,
        model: Any,
        tensors: Sequence[TensorRef],
        items: Iterable[Any],
        on_item: Callable[[dict[TensorRef, np.ndarray]], None],
    ) -> None:
        """Run ``model`` on each model-input item and pass the values of ``tensors`` to ``on_item``.

        One compiled model/session serves all items.
        """

    def apply(self, model: Any, edits: Sequence[Edit]) -> Any:
        """A new model with ``edits`` carried out; ``model`` itself is untouched."""

    def prepare_for_validation(self, model: Any) -> Any:
        """``model`` ready to run in a user's validation function (compiled once where the backend compiles)."""

    def infer(self, model: Any, item: Any) -> list[np.ndarray]:
        """The model's outputs for one model-input item (for tests and validation)."""

    def check_inputs(self, model: Any, item: Any) -> None:
        """Raise CalibrationError when ``item`` is not a valid input of ``model`` (no other effect)."""
