"""The quantization-aware training builder: placement -> edits -> trainable quantizer modules.

Edits go in with placeholder ranges (post-training quantization's fake quantizers), the torch adapter
applies them with every other algorithm's edits in one copy, then each placeholder hook module is
swapped for B's trainable quantizer (``make_qat_quantizer``). Hook names are the placement's quantizer
names, so state-dict keys (``_nncompress_hooks.hooks.<name>.scale``) are stable and deterministic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nncompress.errors import ValidationError
from nncompress.graph.edits import FakeQuantParams, QuantizeActivation, QuantizeWeight
from nncompress.graph.ir import InputRef, TensorRef
from nncompress.training.quantization.controller import QuantizationController
from nncompress.training.quantization.setup import WEIGHTS, QuantizerConfig, build_setup

_PLACEHOLDER = FakeQuantParams(np.float32(-1.0), np.float32(1.0), 256, None, True, False)


class QuantizationBuilder:
    name = "quantization"

    def __init__(self, spec: Any, builder_state: dict | None = None):
        self.spec = spec
        self.builder_state = builder_state
        self.configs: list[QuantizerConfig] = []
        self.layer_flops: dict[str, int] = {}  # weight quantizer -> FLOPs of its layer (mixed precision)
        self.scope_of: dict[str, str] = {}  # weight quantizer -> NNCF-style scope of its layer

    def edits(self, graph, names: dict, capabilities: Any) -> list:
        """The quantizer edits (placeholder ranges) for ``graph``; a saved builder state wins over placement."""
        if self.builder_state is not None:
            setup = self.builder_state.get("quantizer_setup")
            if not isinstance(setup, list):
                raise ValidationError("the quantization builder state has no 'quantizer_setup' list; it is not a "
                                      "state made by get_compression_state()")
            self.configs = [QuantizerConfig.from_dict(d) for d in setup]
        else:
            self.configs = build_setup(graph, names, self.spec, capabilities)
        self._layer_info(graph, names)
        result = []
        for c in self.configs:
            if c.group == WEIGHTS:
                result.append(QuantizeWeight(c.nodes[0], c.port, _PLACEHOLDER, c.name))
            else:
                consumers = None if c.consumers is None else tuple(InputRef(n, p) for n, p in c.consumers)
                result.append(QuantizeActivation(TensorRef(*c.tensor), consumers, _PLACEHOLDER, c.name))
        return result

    def build_controller(self, model: Any) -> QuantizationController:
        """Swap the placeholders of ``model`` (the applied copy) for trainable quantizers."""
        modules = swap_quantizers(model, self.configs)
        if self.spec.compression_lr_multiplier is not None:
            scale_gradients(modules, float(self.spec.compression_lr_multiplier))
        ctrl = QuantizationController(model, self.spec, self.configs, modules)
        ctrl.layer_flops, ctrl.scope_of = self.layer_flops, self.scope_of
        if self.builder_state is not None:
            ctrl.precision_summary = self.builder_state.get("precision")
        return ctrl

    def _layer_info(self, graph, names: dict) -> None:
        from nncompress.algorithms.pruning.flops import COUNTED_KINDS, layer_cost

        for c in self.configs:
            if c.group == WEIGHTS:
                node = graph.node(c.nodes[0])
                counted = node.kind in COUNTED_KINDS and node.weight is not None
                self.layer_flops[c.name] = layer_cost(node).flops if counted else 0
                scopes = names.get(c.nodes[0], (c.nodes[0],))
                self.scope_of[c.name] = scopes[1] if len(scopes) > 1 else scopes[0]


def make_module(config: QuantizerConfig):
    from nncompress.backends.torch.qat import make_qat_quantizer

    return make_qat_quantizer(
        mode=config.mode, num_bits=config.bits, signed=config.signed, per_channel=config.per_channel,
        axis=config.axis, channels=config.channels, ndim=config.ndim, is_weights=config.group == WEIGHTS,
        narrow_range=config.narrow_range, half_range=config.half_range, logarithm_scale=config.logarithm_scale,
    )


def swap_quantizers(model: Any, configs: list[QuantizerConfig]) -> list[Any]:
    """Replace each config's placeholder hook (under every hook name it has) by a trainable quantizer;
    quantizers of one unified group share one module. Returns the modules in ``configs`` order."""
    from nncompress.backends.torch.hooks import storage_of
    from nncompress.backends.torch.inputs import model_device

    storage = storage_of(model)
    device = model_device(model)
    by_module: dict[int, list[str]] = {}
    for hook in storage.keys:
        by_module.setdefault(id(storage.module(hook)), []).append(hook)
    groups: dict[int, Any] = {}
    modules = []
    for config in configs:
        module = groups.get(config.unified) if config.unified is not None else None
        if module is None:
            module = make_module(config)
            if device is not None:
                module.to(device)
            if config.unified is not None:
                groups[config.unified] = module
        if not config.enabled:
            module.disable()
        placeholder = storage.module(config.name)
        for hook in by_module[id(placeholder)]:
            storage.hooks[storage.keys[hook]] = module
        modules.append(module)
    return modules


class GradientScale:
    """A tensor hook multiplying gradients by ``factor`` (``compression_lr_multiplier``; picklable)."""

    def __init__(self, factor: float):
        self.factor = factor

    def __call__(self, grad):
        return grad * self.factor


def scale_gradients(modules: list[Any], factor: float) -> None:
    seen = set()
    for module in modules:
        for param in module.parameters():
            if id(param) not in seen:
                seen.add(id(param))
                param.register_hook(GradientScale(factor))


def strip_qat(model: Any, do_copy: bool = True) -> Any:
    """``model`` with every trainable quantizer turned into the post-training fake quantizer of its trained
    range (disabled ones removed): what ``nncompress.quantize`` returns, so ``nncompress.strip`` (bakes the
    weights) and ``nncompress.export`` (int8 weights + DequantizeLinear) work on it.

    Weight quantizers keep their training grid (a half-range weight stays on 7 bits, inside int8): the
    exported int8 grid of §2.7 equals it only after clamping to the training range."""
    from nncompress.backends.torch.fake_quantize import quantizer_from_params
    from nncompress.backends.torch.hooks import detach_storage, storage_of
    from nncompress.backends.torch.inputs import copy_model, model_device
    from nncompress.backends.torch.qat import BaseQATQuantizer
    from nncompress.training.quantization.range_init import is_enabled

    result = copy_model(model) if do_copy else model
    storage = storage_of(result)
    if storage is None:
        return result
    device = model_device(result)
    replaced: dict[int, Any] = {}
    for hook in list(storage.keys):
        module = storage.module(hook)
        if not isinstance(module, BaseQATQuantizer):
            continue
        if id(module) not in replaced:
            fq = None
            if is_enabled(module):
                fq = quantizer_from_params(module.to_fake_quant_params(exported=not module.is_weights))
                fq.on_constant = bool(module.is_weights)
                if device is not None:
                    fq.to(device)
            replaced[id(module)] = fq
        new = replaced[id(module)]
        if new is None:
            storage.remove(hook)
        else:
            storage.hooks[storage.keys[hook]] = new
    if len(storage) == 0:
        detach_storage(result)  # nothing left: a plain model with its class's own forward
    return result
