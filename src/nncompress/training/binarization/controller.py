"""The binarization controller: the staged scheduler, scale initialisation, statistics, strip."""

from __future__ import annotations

import math
from typing import Any

from nncompress.log import logger
from nncompress.training.controller import CompressionAlgorithmController, CompressionStage, Statistics
from nncompress.training.schedulers import StagedQuantizationScheduler

ACTIVATIONS, WEIGHTS = "activations", "weights"


class BinarizationController(CompressionAlgorithmController):
    """Controls the binarizers of one model (``layers[i]`` has ``weights[i]`` and ``activations[i]``).

    The staged scheduler (reference §2.9) always runs: activations are binarized from
    ``activations_quant_start_epoch``, weights from ``weights_quant_start_epoch`` (both 1 by default);
    ``ctrl.scheduler.attach_optimizer(optimizer)`` lets it drive the learning rate and weight decay.
    """

    name = "binarization"
    strip_priority = 50

    def __init__(self, model: Any, spec: Any, layers: list, weights: list, activations: list):
        self.spec = spec
        self.layers = layers
        self.weight_binarizers = weights
        self.activation_binarizers = activations
        self._init_loader: Any = None
        scheduler = StagedQuantizationScheduler(spec.staged, self._set_group_enabled, self._reinit_group)
        super().__init__(model, scheduler)

    def _group(self, group: str) -> list:
        return self.activation_binarizers if group == ACTIVATIONS else self.weight_binarizers

    def _set_group_enabled(self, group: str, on: bool) -> None:
        for module in self._group(group):
            module.enable() if on else module.disable()

    def _reinit_group(self, group: str) -> None:
        """Activations enabled by ``epoch_step``: their scales start again from statistics (the init loader, or
        the first training forward when none is registered)."""
        if group != ACTIVATIONS:
            return
        for module in self.activation_binarizers:
            module.reset_initialization()
        if self._init_loader is not None:
            self._init_scales(self._init_loader)

    def quantizers(self) -> dict[str, Any]:
        """{hook name: binarizer module}."""
        found: dict[str, Any] = {}
        for layer, w, a in zip(self.layers, self.weight_binarizers, self.activation_binarizers):
            found[layer.weight_hook], found[layer.activation_hook] = w, a
        return found

    # --- initialisation ---------------------------------------------------------------------------
    def _init_scales(self, loader: Any) -> int:
        from nncompress.training.binarization.init import initialize_scales
        from nncompress.training.config.init_args import wrap_dataloader_for_init

        loader = wrap_dataloader_for_init(loader)
        batches = max(1, math.ceil(self.spec.num_init_samples / max(int(loader.batch_size or 1), 1)))
        done = initialize_scales(self.model, self.activation_binarizers, self.weight_binarizers, loader, batches)
        self._broadcast_if_distributed()
        return done

    def initialize(self, data_loader: Any) -> None:
        """Initialise every activation scale from ``data_loader``."""
        self._init_loader = data_loader
        self._init_scales(data_loader)

    def initialize_from_config(self, nncf_config: Any) -> None:
        """Scale init, then BatchNorm adaptation, with the loaders registered on ``nncf_config``."""
        from nncompress.training.bn_adaptation import bn_adaptation_loader
        from nncompress.training.config.init_args import QuantizationRangeInitArgs

        if nncf_config.has_extra_struct(QuantizationRangeInitArgs) and self.spec.num_init_samples > 0:
            self._init_loader = nncf_config.get_extra_struct(QuantizationRangeInitArgs).data_loader
            self._init_scales(self._init_loader)
        elif self.activation_binarizers and self.spec.num_init_samples > 0:
            logger.info("activation binarizer scales are set on the first training forward: no init data loader is "
                        "registered (nncompress.register_default_init_args)")
        samples = self.spec.num_bn_adaptation_samples
        loader = bn_adaptation_loader(nncf_config, samples)
        if loader is not None:
            self.adapt_batchnorm(loader, samples)

    def adapt_batchnorm(self, data_loader: Any, num_samples: int) -> int:
        from nncompress.training.bn_adaptation import adapt_batchnorm

        return adapt_batchnorm(self.model, data_loader, num_samples)

    def distributed(self) -> None:
        """Broadcast every binarizer's parameters and buffers from rank 0 (call after the DDP wrap)."""
        self._broadcast_if_distributed()

    def _broadcast_if_distributed(self) -> None:
        try:
            from nncompress.training import distributed as dist
        except ImportError:
            return
        if dist.is_distributed():
            dist.broadcast_modules(dict(sorted(self.quantizers().items())))
            for module in self.quantizers().values():
                module.refresh_flags()

    # --- state, statistics ------------------------------------------------------------------------
    def builder_state(self) -> dict[str, Any]:
        return {"mode": self.spec.mode, "layers": [layer.to_dict() for layer in self.layers]}

    def compression_stage(self) -> CompressionStage:
        return CompressionStage(self.scheduler.stage())

    def statistics(self, quickly_collected_only: bool = False) -> Statistics:
        total_macs = sum(layer.macs for layer in self.layers) or 1
        on = [(layer, w.is_enabled, a.is_enabled) for layer, w, a in
              zip(self.layers, self.weight_binarizers, self.activation_binarizers)]
        rows = [
            ("Mode", self.spec.mode),
            ("Binarized convolutions", str(len(self.layers))),
            ("Weights binarized (layers / MAC share)",
             f"{sum(w for _, w, _ in on)} / {100 * sum(lay.macs for lay, w, _ in on if w) / total_macs:.1f} %"),
            ("Activations binarized (layers / MAC share)",
             f"{sum(a for _, _, a in on)} / {100 * sum(lay.macs for lay, _, a in on if a) / total_macs:.1f} %"),
            ("Compression stage", self.compression_stage().name),
        ]
        for layer, w, a in zip(self.layers, self.weight_binarizers, self.activation_binarizers):
            rows.append((layer.node, _layer_state(w, a)))
        return Statistics([(self.name, rows)])

    # --- strip / export ---------------------------------------------------------------------------
    def strip_model(self, model: Any, do_copy: bool = True) -> Any:
        from nncompress.training.binarization.builder import strip_binarization

        return strip_binarization(model, do_copy)


def _layer_state(weights: Any, activations: Any) -> str:
    """'W xnor on, A on (S=0.812, T mean 0.503)' for one layer."""
    import torch

    with torch.no_grad():
        scale = float(activations.scale_value())
        threshold = float(activations.threshold_value().mean())
    w = f"W {weights.mode} {'on' if weights.is_enabled else 'off'}"
    init = "" if activations.is_initialized else ", scale not initialised"
    return f"{w}, A {'on' if activations.is_enabled else 'off'} (S={scale:.4g}, T mean {threshold:.3f}{init})"
