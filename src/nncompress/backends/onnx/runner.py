"""onnxruntime sessions and model-input checking."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from nncompress.backends.onnx.naming import resolve_node_names
from nncompress.errors import CalibrationError, UnsupportedModelError

Dim = int | str | None


@dataclass(frozen=True)
class InputSpec:
    """A model input: its name, numpy dtype (None if unknown) and dims (None if the rank is unknown)."""

    name: str
    dtype: np.dtype | None
    dims: tuple[Dim, ...] | None

    def describe(self) -> str:
        dtype = "?" if self.dtype is None else str(self.dtype)
        if self.dims is None:
            return f"{self.name}: {dtype} (any shape)"
        dims = ", ".join("?" if d is None else str(d) for d in self.dims)
        return f"{self.name}: {dtype} [{dims}]"


def _dim(d: onnx.TensorShapeProto.Dimension) -> Dim:
    if d.HasField("dim_value"):
        return int(d.dim_value)
    return d.dim_param or None


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The inputs a caller must feed (initializers listed as inputs excluded)."""
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tensor_type = vi.type.tensor_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        except Exception:  # noqa: BLE001 - undefined or exotic element type
            dtype = None
        dims = tuple(_dim(d) for d in tensor_type.shape.dim) if tensor_type.HasField("shape") else None
        specs.append(InputSpec(vi.name, dtype, dims))
    return specs


def to_array(value: Any) -> np.ndarray:
    """``value`` as a numpy array (torch tensors included, without importing torch)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _error(specs: Sequence[InputSpec], problem: str) -> CalibrationError:
    expected = "; ".join(s.describe() for s in specs)
    return CalibrationError(
        f"{problem}. The model expects {len(specs)} input(s): {expected}. Give each item as a dict "
        "name -> array, a tuple/list in this order, or one array for a one-input model."
    )


def _arrays(specs: Sequence[InputSpec], item: Any) -> dict[str, Any]:
    names = [s.name for s in specs]
    if isinstance(item, Mapping):
        missing = [n for n in names if n not in item]
        extra = [str(k) for k in item if k not in names]
        if missing or extra:
            raise _error(specs, f"the item's keys do not match: missing {missing}, unexpected {extra}")
        return {n: item[n] for n in names}
    if isinstance(item, (tuple, list)):
        if len(item) != len(specs):
            raise _error(specs, f"the item is a {type(item).__name__} of {len(item)} values")
        return dict(zip(names, item))
    if len(specs) != 1:
        raise _error(specs, f"the item is a single {type(item).__name__}")
    return {names[0]: item}


def _check(specs: Sequence[InputSpec], spec: InputSpec, value: np.ndarray) -> None:
    if spec.dtype is not None and value.dtype != spec.dtype:
        raise _error(specs, f"input {spec.name!r} has dtype {value.dtype}, expected {spec.dtype}")
    if spec.dims is None:
        return
    if value.ndim != len(spec.dims):
        raise _error(
            specs,
            f"input {spec.name!r} has shape {list(value.shape)} (rank {value.ndim}), expected rank {len(spec.dims)}",
        )
    for axis, (want, got) in enumerate(zip(spec.dims, value.shape)):
        if isinstance(want, int) and want != got:
            raise _error(specs, f"input {spec.name!r} has size {got} on axis {axis}, expected {want}")


def make_feeds(specs: Sequence[InputSpec], item: Any) -> dict[str, np.ndarray]:
    """Session feeds for one item; CalibrationError when the item does not fit ``specs``."""
    feeds = {}
    for name, value in _arrays(specs, item).items():
        try:
            feeds[name] = to_array(value)
        except Exception as exc:  # noqa: BLE001
            raise _error(specs, f"input {name!r} cannot be made an array ({exc})") from exc
    for spec in specs:
        _check(specs, spec, feeds[spec.name])
    return feeds


def _check_external(model: onnx.ModelProto) -> None:
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL and not init.raw_data:
            raise UnsupportedModelError(
                f"initializer {init.name!r} keeps its data in an external file; load the model with "
                "onnx.load(path) (external data loaded) before compressing it"
            )


def _with_unique_names(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    inits = {t.name for t in copy.graph.initializer}
    inputs = [i.name for i in copy.graph.input if i.name not in inits]
    for node, name in zip(copy.graph.node, resolve_node_names(list(copy.graph.node), inputs)):
        node.name = name
    return copy


FED_WEIGHT_MIN_BYTES = 1 << 20  # initializers at least this large are fed as inputs by a WeightFedSession
FED_MODEL_MIN_BYTES = 64 << 20  # models with more initializer data than this get a WeightFedSession


def create_session(
    model: onnx.ModelProto, extra_outputs: Sequence[str] = (), feed_weights: bool | None = None, only: bool = False
):
    """A CPU session of ``model`` that also returns ``extra_outputs``; ``only``: that computes ``extra_outputs``
    alone (the nodes they depend on, the model's own outputs dropped: onnxruntime runs every node of its
    graph on each run, whatever outputs are asked for).

    Large models (``feed_weights`` None: more than 64 MB of initializers) get a :class:`WeightFedSession`:
    a serialized model plus onnxruntime's own copy plus its transient parse buffer would hold the weights
    three times (1.9 GB for a 620 MB model); fed as inputs they are held once. Otherwise the outputs are
    added to ``model`` only while it is serialized, then removed again.
    """
    _check_external(model)
    if feed_weights is None:
        feed_weights = sum(len(t.raw_data) for t in model.graph.initializer) > FED_MODEL_MIN_BYTES
    if feed_weights:
        return WeightFedSession(model, extra_outputs, only)
    if only:
        lean = _lean_model(model, _skeleton(model.graph, extra_outputs, True, set()))
        return _session(lean.SerializeToString(), True)
    names = [n.name for n in model.graph.node if n.name]
    if len(set(names)) != len(names):  # onnxruntime rejects repeated node names
        model = _with_unique_names(model)
    outputs = model.graph.output
    count = len(outputs)
    _add_outputs(model.graph, extra_outputs)
    try:
        data = model.SerializeToString()
    finally:
        del outputs[count:]
    return _session(data, bool(extra_outputs))


def needed_nodes(nodes: Sequence[onnx.NodeProto], outputs: Sequence[str]) -> tuple[list[onnx.NodeProto], set[str]]:
    """The ``nodes`` that ``outputs`` depend on (in order) and every tensor name those nodes read or give."""
    producer = {name: i for i, node in enumerate(nodes) for name in node.output if name}
    keep: set[int] = set()
    names: set[str] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if name in names:
            continue
        names.add(name)
        index = producer.get(name)
        if index is not None and index not in keep:
            keep.add(index)
            stack.extend(_names_read(nodes[index]))
    return [node for i, node in enumerate(nodes) if i in keep], names


def _names_read(node: onnx.NodeProto) -> list[str]:
    """The tensors ``node`` reads, those its subgraphs (If, Loop, Scan) read from the outer scope included."""
    names = [name for name in node.input if name]
    for attribute in node.attribute:
        for sub in [attribute.g] * attribute.HasField("g") + list(attribute.graphs):
            names += [name for inner in sub.node for name in _names_read(inner)]
    return names


def _skeleton(graph: onnx.GraphProto, extra_outputs: Sequence[str], only: bool, fed: set[str]) -> onnx.GraphProto:
    """``graph`` with ``extra_outputs`` added (``only``: as its only outputs, the unneeded nodes dropped),
    without the initializers named in ``fed`` (graph inputs then), node names made unique."""
    if only:
        nodes, needed = needed_nodes(graph.node, extra_outputs)
        keep, outputs = needed.__contains__, []
    else:
        nodes, keep, outputs = list(graph.node), (lambda name: True), list(graph.output)
    initializers = {t.name for t in graph.initializer}
    skeleton = onnx.helper.make_graph(
        nodes, graph.name, [i for i in graph.input if i.name not in initializers or keep(i.name)], outputs,
        [t for t in graph.initializer if t.name not in fed and keep(t.name)],
        value_info=[v for v in graph.value_info if keep(v.name)],
    )
    skeleton.sparse_initializer.extend(t for t in graph.sparse_initializer if keep(t.values.name))
    declared = {i.name for i in skeleton.input}
    for tensor in graph.initializer:
        if tensor.name in fed and tensor.name not in declared and keep(tensor.name):
            skeleton.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
    inputs = [i.name for i in skeleton.input if i.name not in fed]
    for node, name in zip(skeleton.node, resolve_node_names(list(skeleton.node), inputs)):
        node.name = name
    _add_outputs(skeleton, extra_outputs)
    return skeleton


def _lean_model(model: onnx.ModelProto, graph: onnx.GraphProto) -> onnx.ModelProto:
    lean = onnx.ModelProto()
    lean.ir_version, lean.producer_name = model.ir_version, model.producer_name
    lean.opset_import.extend(model.opset_import)
    lean.functions.extend(model.functions)
    lean.graph.CopyFrom(graph)
    return lean


def _session(data: bytes, extra_outputs: bool, arena: bool = True) -> ort.InferenceSession:
    """A session of the serialized model; with extra outputs, a retry without layout optimizations.

    onnxruntime's ORT_ENABLE_ALL level (layout transformations) can drop an intermediate tensor that is
    also a graph output ("Failed to find node output or a constant initializer producing output", seen on a
    partly quantized ResNet whose Conv output feeds a residual Add): the extended level keeps it.
    """
    try:
        return ort.InferenceSession(data, _session_options(arena=arena), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/RuntimeError types
        if not extra_outputs or "Failed to find node output" not in str(error):
            raise
    options = _session_options(ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, arena)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _session_options(level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL, arena: bool = True) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.enable_cpu_mem_arena = arena
    options.log_severity_level = 3
    return options


def _add_outputs(graph: onnx.GraphProto, names: Sequence[str]) -> None:
    existing = {o.name for o in graph.output}
    for name in dict.fromkeys(names):
        if name not in existing:
            graph.output.add().name = name


class WeightFedSession:
    """An onnxruntime session whose large float initializers are graph inputs fed on every run.

    The model is rebuilt without their data (a few MB to serialize), each weight is held once as an
    array, and onnxruntime reads the arrays in place. Runs as ``InferenceSession.run``.
    """

    def __init__(self, model: onnx.ModelProto, extra_outputs: Sequence[str] = (), only: bool = False):
        from onnx import numpy_helper

        large = {t.name for t in model.graph.initializer if len(t.raw_data) >= FED_WEIGHT_MIN_BYTES}
        skeleton = _skeleton(model.graph, extra_outputs, only, large)
        declared = {i.name for i in skeleton.input}  # with ``only``: the large weights the kept nodes read
        self.weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
                        if t.name in large and t.name in declared}
        # activations are freed after each run, not pooled
        self._session = _session(_lean_model(model, skeleton).SerializeToString(), bool(extra_outputs), arena=False)

    def run(self, output_names, feeds: Mapping[str, Any]) -> list:
        return self._session.run(output_names, {**feeds, **self.weights})

    def get_outputs(self):
        return self._session.get_outputs()

    def get_inputs(self):
        return [i for i in self._session.get_inputs() if i.name not in self.weights]


class ModelCache:
    """A small LRU of values derived from models (ModelProto cannot be weakly referenced).

    Entries are keyed by object identity and the graph's node/initializer counts (serializing to
    measure the size costs 0.1 s per call on a 90 MB model), and hold the model so ids stay valid.
    """

    def __init__(self, size: int = 4):
        self.size = size
        self._entries: OrderedDict[tuple, tuple[onnx.ModelProto, Any]] = OrderedDict()

    def get(self, model: onnx.ModelProto, factory: Callable[[], Any]) -> Any:
        graph = model.graph
        key = (id(model), len(graph.node), len(graph.initializer), len(graph.input))
        entry = self._entries.get(key)
        if entry is not None and entry[0] is model:
            self._entries.move_to_end(key)
            return entry[1]
        value = factory()
        self._entries[key] = (model, value)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value
