"""The binarization builder: selected convolutions -> placeholder edits -> binarizer hook modules.

Each binarized convolution gets a weight edit (``QuantizeWeight`` on its weight, stage WEIGHT_QUANTIZER:
after sparsity/pruning masks) and an activation edit (``QuantizeActivation`` on its input 0 only). The
torch adapter applies them with every other algorithm's edits in one copy; then each placeholder hook is
swapped for a ``WeightBinarizer`` / ``ActivationBinarizer``. Hook names are ``<node>|weights_binarizer``
and ``<node>|activations_binarizer``, so state-dict keys are stable.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nncompress.errors import ValidationError
from nncompress.graph.edits import FakeQuantParams, QuantizeActivation, QuantizeWeight
from nncompress.graph.ir import InputRef, TensorRef
from nncompress.training.binarization.controller import BinarizationController
from nncompress.training.binarization.setup import BinarizationSpec, BinarizedLayer, binarization_spec, select_layers

_PLACEHOLDER = FakeQuantParams(np.float32(-1.0), np.float32(1.0), 256, None, True, False)


class BinarizationBuilder:
    name = "binarization"

    def __init__(self, spec: Any, builder_state: dict | None = None):
        self.spec = spec if isinstance(spec, BinarizationSpec) else binarization_spec(_section(spec))
        self.builder_state = builder_state
        self.layers: list[BinarizedLayer] = []

    def edits(self, graph, names: dict, capabilities: Any) -> list:
        """The binarizer edits for ``graph``; a saved builder state wins over the selection."""
        if not getattr(capabilities, "trainable", False):
            raise ValidationError(f"binarization trains its binarizers; the {capabilities.name} backend cannot train")
        if self.builder_state is not None:
            saved = self.builder_state.get("layers")
            mode = self.builder_state.get("mode")
            if not isinstance(saved, list) or mode != self.spec.mode:
                raise ValidationError(
                    f"the binarization builder state (mode {mode!r}) does not fit the config (mode {self.spec.mode!r}) "
                    "or has no 'layers' list; resume with the config the state was saved with"
                )
            self.layers = [BinarizedLayer.from_dict(d) for d in saved]
        else:
            self.layers = select_layers(graph, names, self.spec)
        result = []
        for layer in self.layers:
            result.append(QuantizeWeight(layer.node, layer.port, _PLACEHOLDER, layer.weight_hook))
            consumer = (InputRef(layer.node, 0),)
            result.append(QuantizeActivation(TensorRef(*layer.tensor), consumer, _PLACEHOLDER, layer.activation_hook))
        return result

    def build_controller(self, model: Any) -> BinarizationController:
        """Swap the placeholders of ``model`` (the applied copy) for binarizers."""
        weights, activations = swap_binarizers(model, self.layers, self.spec.mode)
        if self.spec.compression_lr_multiplier is not None:
            from nncompress.training.quantization.builder import scale_gradients

            scale_gradients(activations, float(self.spec.compression_lr_multiplier))
        return BinarizationController(model, self.spec, self.layers, weights, activations)


def _section(spec: Any) -> dict:
    section = getattr(spec, "section", None)
    if not isinstance(section, dict):
        raise ValidationError(f"the binarization builder needs the config's binarization section; got {spec!r}")
    return section


def swap_binarizers(model: Any, layers: list[BinarizedLayer], mode: str) -> tuple[list[Any], list[Any]]:
    """Replace each layer's placeholder hooks by a ``WeightBinarizer`` and an ``ActivationBinarizer``
    (on the weight's device). Returns (weight binarizers, activation binarizers) in ``layers`` order."""
    from nncompress.backends.torch.binarization import ActivationBinarizer, WeightBinarizer
    from nncompress.backends.torch.hooks import storage_of
    from nncompress.backends.torch.inputs import model_device

    storage = storage_of(model)
    device = model_device(model)
    weights, activations = [], []
    for layer in layers:
        pair = (WeightBinarizer(mode), ActivationBinarizer(layer.in_channels))
        for hook, module in zip((layer.weight_hook, layer.activation_hook), pair):
            if storage is None or hook not in storage.keys:
                raise ValidationError(f"the compressed model has no hook {hook!r}; its graph does not fit the state")
            if device is not None:
                module.to(device)
            storage.hooks[storage.keys[hook]] = module
        weights.append(pair[0])
        activations.append(pair[1])
    return weights, activations


def strip_binarization(model: Any, do_copy: bool = True) -> Any:
    """``model`` with each enabled binarizer turned into its fixed form (``BinarizedWeight``,
    ``BinarizedActivation``) and each disabled one removed."""
    from nncompress.backends.torch.binarization import ActivationBinarizer, BinarizedWeight, WeightBinarizer
    from nncompress.backends.torch.hooks import detach_storage, storage_of
    from nncompress.backends.torch.inputs import copy_model

    result = copy_model(model) if do_copy else model
    storage = storage_of(result)
    if storage is None:
        return result
    for hook in list(storage.keys):
        module = storage.module(hook)
        if not isinstance(module, (WeightBinarizer, ActivationBinarizer)):
            continue
        if not module.is_enabled:
            storage.remove(hook)
            continue
        new = BinarizedWeight(module.mode) if isinstance(module, WeightBinarizer) else module.stripped()
        new.to(next(iter(module.buffers())).device)
        storage.hooks[storage.keys[hook]] = new
    if len(storage) == 0:
        detach_storage(result)
    return result
