"""The neutral graph of a model's weighted layers, read from its module tree (no forward run).

Data-free weight compression needs only the weights, so a PyTorch model can be compressed without
an example input: every ``nn.Linear``, Hugging Face ``Conv1D``, ``nn.Embedding`` and convolution
module whose weight is a plain parameter becomes one node, in module registration order (a language
model's head comes last). Nodes are named as a capture names them (``mode.op_name``: ``"{module path}/linear/0"``,
``".../addmm/0"`` for ``Conv1D``, ``".../embedding/0"``, ``".../conv2d/0"``), with the same weight and
bias ports, so both graphs address the same weights. Activation inputs are unknown (``None``):
statistics, AWQ patterns and activation edits need the captured graph.

A parameter shared by several layers (a language-model head tied to the input embedding) maps to
one name in ``Capture.port_params`` for every node reading it, and ``param_uses`` counts them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from nncompress.graph.ir import BiasInfo, Graph, Node, TensorRef, WeightInfo
from nncompress.graph.ops import OpKind as K

from .capture import Capture, model_constants
from .hooks import is_storage_path
from .mode import op_name


@dataclass(frozen=True)
class LayerSpec:
    """How a layer module calls its op: op name, kind, weight port/axes, bias port, port count."""

    op: str
    kind: K
    port: int
    out_axis: int
    in_axis: int
    bias_port: int | None
    ports: int
    groups: int = 1


def is_hf_conv1d(module: nn.Module) -> bool:
    """Hugging Face ``Conv1D`` (a Linear with its weight stored ``[in, out]``), without importing it."""
    cls = type(module)
    return cls.__name__ == "Conv1D" and (cls.__module__ or "").startswith("transformers")


def is_linear_like(module: nn.Module) -> bool:
    """Modules whose forward output is their op's output for input 0 (``nn.Linear``, ``Conv1D``)."""
    return isinstance(module, nn.Linear) or is_hf_conv1d(module)


def _conv_spec(module: nn.Module) -> LayerSpec | None:
    dims = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3, nn.ConvTranspose1d: 1, nn.ConvTranspose2d: 2,
            nn.ConvTranspose3d: 3}
    n = next((d for cls, d in dims.items() if isinstance(module, cls)), None)
    if n is None:
        return None
    bias = 2 if module.bias is not None else None
    ports = 3 if bias is not None else 2
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return LayerSpec(f"conv_transpose{n}d", K.CONV_TRANSPOSE, 1, 1, 0, bias, ports, module.groups)
    depthwise = 1 < module.groups == module.in_channels == module.out_channels
    kind = K.DEPTHWISE_CONV if depthwise else K.CONV
    return LayerSpec(f"conv{n}d", kind, 1, 0, 1, bias, ports, module.groups)


def layer_spec(module: nn.Module) -> LayerSpec | None:
    """The op a weighted layer module makes, or None for other modules (or a weight that is not a
    plain floating-point parameter, e.g. parametrized or already compressed)."""
    weight = module._parameters.get("weight")
    if weight is None or not weight.is_floating_point():
        return None
    has_bias = getattr(module, "bias", None) is not None
    if isinstance(module, nn.Linear):
        return LayerSpec("linear", K.LINEAR, 1, 0, 1, 2 if has_bias else None, 3 if has_bias else 2)
    if is_hf_conv1d(module):
        return LayerSpec("addmm", K.LINEAR, 2, 1, 0, 0, 3)
    if isinstance(module, nn.Embedding):
        return LayerSpec("embedding", K.EMBEDDING, 1, 0, 1, None, 2)
    return _conv_spec(module)


def _bypassed(model: nn.Module) -> set[str]:
    """Paths of modules whose forward is never called (their parent reads the weights itself)."""
    skipped: set[str] = set()
    for path, module in model.named_modules():
        if is_storage_path(path):
            skipped.add(path)
        elif isinstance(module, nn.MultiheadAttention):
            skipped.update(f"{path}.{child}" if path else child for child, _ in module.named_modules() if child)
    return skipped


def module_capture(model: nn.Module) -> Capture:
    """The weighted layers of ``model`` as a ``Capture`` (graph plus where each constant lives)."""
    constants = model_constants(model)
    capture = Capture(Graph([]))
    nodes: list[Node] = []
    skipped = _bypassed(model)
    for path, module in model.named_modules():
        spec = layer_spec(module)
        if spec is None or path in skipped:
            continue
        name = op_name(path, spec.op, 0)
        weight = module._parameters["weight"]
        const_ports = {spec.port: tuple(weight.shape)}
        node = Node(
            name=name,
            kind=spec.kind,
            op_type=spec.op,
            inputs=[None] * spec.ports,
            output_shapes=[None],
            output_dtypes=["float"],
            const_ports=const_ports,
            weight=WeightInfo(spec.port, tuple(weight.shape), spec.out_axis, spec.in_axis, spec.groups),
            attrs={"module": path, "module_type": type(module).__name__, "groups": spec.groups},
        )
        tensors = {spec.port: weight}
        if spec.bias_port is not None:
            bias = module.bias
            const_ports[spec.bias_port] = tuple(bias.shape)
            node.bias = BiasInfo(name, spec.bias_port, tuple(bias.shape), TensorRef(name, 0))
            tensors[spec.bias_port] = bias
        for port, tensor in tensors.items():
            pname = constants.get(id(tensor))
            if pname is not None:
                capture.port_params[(name, port)] = pname
                capture.param_uses[pname] += 1
        nodes.append(node)
    capture.graph = Graph(nodes, has_dataflow=False)
    return capture
