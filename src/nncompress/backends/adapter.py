"""The one protocol every backend implements, and the record of what a backend can do."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nncompress.errors import UnsupportedBackendError, ValidationError
from nncompress.graph.edits import Edit, EditStream
from nncompress.graph.ir import Graph, TensorRef
from nncompress.graph.regions import Region


@dataclass(frozen=True)
class Capabilities:
    """What a backend supports. The API layer and algorithms read these flags, never a backend's name."""

    name: str  # for reports and messages only: no code branches on it
    # Per-channel activation quantizers are possible (placement may choose them for depthwise convs).
    per_channel_activations: bool = True
    # Keep a residual Add/Mul after a Conv/MatMul inside the fused chain (no quantizer between them).
    # True where the runtime fuses the pair in float-free kernels (OpenVINO); ONNX Runtime instead
    # needs Q/DQ on both Add inputs to run QLinearConv + QLinearAdd.
    fuse_linear_arithmetic: bool = True
    # The graph is built by running the model on one input item (PyTorch capture). A dataset is then
    # accepted by every compress_weights mode, 8-bit ones included, because it is also where that item
    # comes from (NNCF's PyTorch compress_weights asks for one); other backends reject a dataset that
    # an 8-bit mode would not read.
    graph_from_example_input: bool = False
    # Formats ``export`` writes; ``export_needs_example_input``: exporting traces the model on one item.
    export_formats: tuple[str, ...] = ("onnx", "openvino")
    export_needs_example_input: bool = False
    # Compressed models carry machinery (hooks, fake quantizers) that ``strip`` bakes in. False: they are
    # already plain runtime models (QDQ / FakeQuantize nodes), ``strip`` returns them as they are and
    # cannot remove activation quantizers.
    strippable: bool = False
    # Compressed models are framework modules that train: masks and quantizers are trainable parameters
    # (``prune`` and training-time compression need it; MaskWeight(trainable=True) is carried out; the
    # adapter has ``fake_quantize_weights`` for compress_weights' FQ / FQ_LORA / FQ_LORA_NLS formats).
    trainable: bool = False


def check_export(capabilities: Capabilities, format: str, example_input: Any) -> None:
    """Raise unless a backend with ``capabilities`` can export in ``format`` with ``example_input``."""
    if format not in capabilities.export_formats:
        raise UnsupportedBackendError(
            f"a {capabilities.name} model cannot be exported with format={format!r}; it can be exported as: "
            f"{', '.join(repr(f) for f in capabilities.export_formats)}"
        )
    if capabilities.export_needs_example_input and example_input is None:
        raise ValidationError(
            f"exporting a {capabilities.name} model traces it: pass example_input (one model input item)"
        )


def check_strip(capabilities: Capabilities, keep_activation_quantizers: bool) -> bool:
    """Whether ``strip`` must call the adapter (False: the model is returned as it is); raises when it cannot."""
    if capabilities.strippable:
        return True
    if not keep_activation_quantizers:
        raise UnsupportedBackendError(
            f"a compressed {capabilities.name} model holds its activation quantizers as graph nodes; strip cannot "
            "remove them (keep_activation_quantizers=False works for PyTorch models): quantize with an "
            "IgnoredScope instead to keep layers in float"
        )
    return False


Constants = dict[tuple[str, int], np.ndarray]  # (node, port) -> float value of a weight constant


class RegionRunner(Protocol):
    """One region of one model, prepared (compiled, extracted, bound) once; ``run`` serves every call.

    ``context``: extra values the backend's runner reads besides ``region.inputs``, read per item by
    ``Adapter.region_inputs``. PyTorch: tensor arguments of the region's module that are not graph tensors
    (rotary cos/sin, position ids computed from shapes), keyed ``TensorRef("@arg/<argument path>")`` -- the
    same keys for every block called alike; when ``run`` lacks one, the value seen on the example input is
    used (valid for items shaped like it). ONNX/OpenVINO: the dynamic shapes of tensors outside the region
    that it reads (shape ops), keyed by the shape op's TensorRef; ``run`` raises when one is missing.
    Empty where the region reads nothing else.

    ``shapes``: the ``context`` values that are shapes of batch-leading tensors (a vector whose first entry
    is the batch size): a caller running several items in one call scales that entry.
    """

    region: Region
    fetch: tuple[TensorRef, ...]
    context: tuple[TensorRef, ...]
    shapes: tuple[TensorRef, ...]

    def run(
        self, values: dict[TensorRef, np.ndarray], constants: Constants | None = None
    ) -> dict[TensorRef, np.ndarray]:
        """The region's outputs and the ``fetch`` tensors for one calibration item.

        ``values`` holds every ``region.inputs`` tensor (and ``context`` values; other keys are ignored);
        ``constants`` replaces weight constants (node, port) of nodes inside the region for this call only
        (float values, the layout ``get_constant`` returns): on ONNX/OpenVINO the weight and bias inputs of
        the region's layers, on PyTorch parameters of the region's module. The model is never modified.
        """


class Adapter(Protocol):
    """Backend operations the algorithms need. Models are never modified in place.

    These are every method the API layer and the algorithms call. An adapter serves one API call
    (``registry.get_adapter`` makes it, ``Adapter(example_input=None)``):
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

    def region_runner(
        self, model: Any, region: Region, fetch: Sequence[TensorRef] = (), constants: Constants | None = None,
        outputs: bool = True,
    ) -> RegionRunner:
        """A runner of ``region`` of ``model`` (see ``RegionRunner``), prepared once.

        ``fetch``: tensors inside the region (e.g. the inputs of its Linear/Conv layers) returned by every
        ``run`` besides the outputs. ``constants`` (optional): weight/bias values fixed for every run of this
        runner, prepared with the region (ONNX initializers, OpenVINO Constants: the runtime folds and
        prepacks them -- much faster for convolutions); such a runner takes no per-run overrides. Without it,
        every weight and bias of the region's layers can be overridden per ``run``. ``outputs=False``: ``run``
        returns the fetched tensors only, and the backend skips the work only the outputs need (a statistics
        run whose outputs nobody reads). UnsupportedModelError names what the backend cannot run on its own.
        """

    def region_inputs(
        self,
        model: Any,
        runner: RegionRunner,
        items: Iterable[Any],
        on_item: Callable[[dict[TensorRef, np.ndarray]], None],
        extra: Sequence[TensorRef] = (),
    ) -> None:
        """Run ``model`` on each model-input item and pass ``on_item`` the values ``runner.run`` reads:
        ``runner.region.inputs`` plus ``runner.context`` (a pipeline's first block; later blocks reuse
        the context and the inputs shared by every block, such as the attention mask), and the ``extra``
        tensors where the same run computes them (a backend that stops the forward early may leave them
        out: the pipeline collects what is missing later)."""

    def apply(self, model: Any, edits: Sequence[Edit] | EditStream) -> Any:
        """A new model with ``edits`` carried out in ``graph.edits.ordered`` order; ``model`` is untouched.

        An ``EditStream`` (weight compression) is consumed one edit at a time, each stored as it arrives.
        """

    def prepare_for_validation(self, model: Any) -> Any:
        """``model`` ready to run in a user's validation function (compiled once where the backend compiles)."""

    def infer(self, model: Any, item: Any) -> list[np.ndarray]:
        """The model's outputs for one model-input item (for tests and validation)."""

    def check_inputs(self, model: Any, item: Any) -> None:
        """Raise CalibrationError when ``item`` is not a valid input of ``model`` (no other effect)."""

    def strip(self, model: Any, keep_activation_quantizers: bool, do_copy: bool, strip_format: str = "native") -> Any:
        """``model`` with its compression machinery baked in (a copy unless ``do_copy`` is False);
        ``strip_format`` is a ``StripFormat`` value.

        Called only when ``capabilities.strippable``; otherwise ``nncompress.strip`` returns the model.
        """

    def fake_quantize_weights(self, model: Any, original: Any, compression_format: str, rank: int, mode: Any) -> Any:
        """``model`` (a ``compress_weights`` result of ``original``) with its ``mode`` weights made trainable
        fake-quantized weights (``compression_format`` FQ / FQ_LORA / FQ_LORA_NLS, LoRA adapters of ``rank``).

        Called only when ``capabilities.trainable``.
        """

    def export(self, model: Any, path: Path, format: str, example_input: Any, dynamic_axes: dict | None) -> Path:
        """Write ``model`` to ``path`` in ``format`` (one of ``capabilities.export_formats``); the path written.

        ``example_input`` is not None where ``capabilities.export_needs_example_input``.
        """
