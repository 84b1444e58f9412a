"""The quantization-aware training controller."""

from __future__ import annotations

from collections import Counter
from typing import Any

from nncompress.log import logger
from nncompress.training.controller import CompressionAlgorithmController, CompressionStage, Statistics
from nncompress.training.quantization.range_init import initialize_ranges, is_enabled
from nncompress.training.quantization.setup import ACTIVATIONS, WEIGHTS, QuantizerConfig
from nncompress.training.schedulers import StagedQuantizationScheduler, StubCompressionScheduler


class QuantizationController(CompressionAlgorithmController):
    """Controls the trainable quantizers of one model (``configs[i]`` made ``modules[i]``)."""

    name = "quantization"

    def __init__(self, model: Any, spec: Any, configs: list[QuantizerConfig], modules: list[Any]):
        self.spec = spec
        self.configs = configs
        self.modules = modules
        self._distributed = False
        self._init_loader: Any = None  # the range-init loader, for the staged scheduler's re-initialisation
        self.layer_flops: dict[str, int] = {}  # set by the builder (mixed precision)
        self.scope_of: dict[str, str] = {}
        self.precision_summary: dict | None = None  # the HAWQ search result (saved in the builder state)
        if spec.staged is not None:
            scheduler = StagedQuantizationScheduler(spec.staged, self._set_group_enabled, self._reinit_group)
        else:
            scheduler = StubCompressionScheduler()
        super().__init__(model, scheduler)

    # --- quantizers -------------------------------------------------------------------------------
    def _unique(self, group: str | None = None) -> list[tuple[QuantizerConfig, Any]]:
        seen, result = set(), []
        for config, module in zip(self.configs, self.modules):
            if id(module) in seen or group not in (None, config.group):
                continue
            seen.add(id(module))
            result.append((config, module))
        return result

    def quantizers(self) -> dict[str, Any]:
        """{name: trainable quantizer module}, one entry per module (unified groups share one)."""
        return {config.name: module for config, module in self._unique()}

    def _set_group_enabled(self, group: str, on: bool) -> None:
        for config, module in self._unique(group):
            module.enable() if on else module.disable()
            config.enabled = on

    def _reinit_group(self, group: str) -> None:
        if self._init_loader is None:
            logger.warning("the staged scheduler enabled the %s quantizers but no range-init loader is registered; "
                           "their ranges stay as they are", group)
            return
        self._init_ranges(self._init_loader, group)

    # --- initialisation ---------------------------------------------------------------------------
    def _init_ranges(self, loader: Any, group: str | None = None) -> int:
        from nncompress.training.config.init_args import wrap_dataloader_for_init

        loader = wrap_dataloader_for_init(loader)
        done = initialize_ranges(self.model, self._unique(group), [m for _, m in self._unique()], loader)
        self._broadcast_if_distributed()
        return done

    def initialize(self, data_loader: Any) -> None:
        """Initialise every quantizer's range from ``data_loader`` (as the registered init args would)."""
        self._init_loader = data_loader
        self._init_ranges(data_loader)

    def initialize_from_config(self, nncf_config: Any) -> None:
        """Range init, then BatchNorm adaptation, with the loaders registered on ``nncf_config``."""
        from nncompress.training.bn_adaptation import bn_adaptation_loader
        from nncompress.training.config.init_args import QuantizationRangeInitArgs

        if self.spec.precision is not None and self.spec.precision["type"] == "hawq":
            from nncompress.training.quantization.hawq_init import run_hawq

            self.precision_summary = run_hawq(self, nncf_config)
        if nncf_config.has_extra_struct(QuantizationRangeInitArgs):
            self._init_loader = nncf_config.get_extra_struct(QuantizationRangeInitArgs).data_loader
            self._init_ranges(self._init_loader)
        elif any(c.range_init.num_init_samples > 0 for c in self.configs):
            logger.warning(
                "quantizer ranges are not initialised: no range-init data loader is registered. Call "
                "nncompress.register_default_init_args(config, train_loader) before create_compressed_model, or "
                "compression_ctrl.initialize(train_loader)"
            )
        samples = self.spec.num_bn_adaptation_samples
        loader = bn_adaptation_loader(nncf_config, samples)
        if loader is not None:
            self.adapt_batchnorm(loader, samples)

    def adapt_batchnorm(self, data_loader: Any, num_samples: int) -> int:
        from nncompress.training.bn_adaptation import adapt_batchnorm

        return adapt_batchnorm(self.model, data_loader, num_samples)

    def distributed(self) -> None:
        """Broadcast every quantizer's parameters and buffers from rank 0 (call after the DDP wrap)."""
        self._distributed = True
        self._broadcast_if_distributed()

    def _broadcast_if_distributed(self) -> None:
        try:
            from nncompress.training import distributed as dist
        except ImportError:
            return
        if dist.is_distributed():
            dist.broadcast_modules(dict(sorted(self.quantizers().items())))
            for module in self.quantizers().values():
                _resync(module)

    # --- state ------------------------------------------------------------------------------------
    def builder_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"quantizer_setup": [c.to_dict() for c in self.configs]}
        if self.precision_summary is not None:
            state["precision"] = self.precision_summary
        return state

    def compression_stage(self) -> CompressionStage:
        if isinstance(self.scheduler, StagedQuantizationScheduler):
            return CompressionStage(self.scheduler.stage())
        return CompressionStage.FULLY_COMPRESSED

    def statistics(self, quickly_collected_only: bool = False) -> Statistics:
        pairs = self._unique()
        total = len(pairs) or 1
        weights = sum(c.group == WEIGHTS for c, _ in pairs)
        bits = Counter(c.bits for c, _ in pairs)
        rows = [
            ("Quantizers (weights / activations)", f"{len(pairs)} ({weights} / {len(pairs) - weights})"),
            ("Bit widths", ", ".join(f"{b}-bit: {n}" for b, n in sorted(bits.items())) or "-"),
            ("Symmetric / asymmetric", f"{sum(c.mode == 'symmetric' for c, _ in pairs)} / "
                                       f"{sum(c.mode != 'symmetric' for c, _ in pairs)}"),
            ("Per-channel share", f"{100 * sum(c.per_channel for c, _ in pairs) / total:.1f} %"),
            ("Half-range weights (overflow fix)", str(sum(c.half_range for c, _ in pairs))),
            ("Enabled share", f"{100 * sum(is_enabled(m) for _, m in pairs) / total:.1f} %"),
            ("Ranges initialised", f"{sum(bool(getattr(m, 'initialized', False)) for _, m in pairs)} of {len(pairs)}"),
            ("Compression stage", self.compression_stage().name),
        ]
        if self.precision_summary is not None:
            ratio = self.precision_summary["compression_ratio"]
            rows.append(("Mixed precision (HAWQ) compression ratio", f"{ratio:.3f}"))
        per_layer = [(c.name if c.group != WEIGHTS else f"{c.name} (weights)", f"{c.bits}-bit") for c, _ in pairs]
        return Statistics([(self.name, rows), (f"{self.name} bit widths per quantizer", per_layer)])

    # --- strip / export ---------------------------------------------------------------------------
    def strip_model(self, model: Any, do_copy: bool = True) -> Any:
        from nncompress.training.quantization.builder import strip_qat

        return strip_qat(model, do_copy)


def _resync(module: Any) -> None:
    """Refresh a quantizer's Python-side flags (signedness, enabled, bits) from its broadcast buffers."""
    initialized = module.initialized
    module.load_state_dict(module.state_dict())
    module.initialized = initialized


__all__ = ["ACTIVATIONS", "WEIGHTS", "QuantizationController"]
