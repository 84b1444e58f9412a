"""Range initialisation of QAT quantizers from an init data loader (§2.6).

The model runs in eval mode under ``no_grad`` (training flags restored) with every quantizer passing
its input through: the quantizers being initialised feed their collectors, the others are disabled
for the run, so statistics are those of the float model (as NNCF collects them). Activation quantizers
see ``ceil(num_init_samples / batch_size)`` batches (their own ``num_init_samples``), weight quantizers
one batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from nncompress.backends.torch.inputs import eval_mode
from nncompress.errors import CalibrationError
from nncompress.log import logger
from nncompress.training.bn_adaptation import loader_batches
from nncompress.training.quantization.setup import WEIGHTS, QuantizerConfig


def batches_for(config: QuantizerConfig, batch_size: int | None) -> int:
    """How many init batches the quantizer collects over (0: not initialised from data)."""
    samples = config.range_init.num_init_samples
    if samples <= 0:
        return 0
    return 1 if config.group == WEIGHTS else math.ceil(samples / max(int(batch_size or 1), 1))


def _collector(config: QuantizerConfig):
    from nncompress.statistics.range_init import make_range_collector

    ri = config.range_init
    return make_range_collector(
        ri.type, per_channel_axis=config.axis if config.per_channel else None, min_percentile=ri.min_percentile,
        max_percentile=ri.max_percentile, is_weights=config.group == WEIGHTS, symmetric=config.mode == "symmetric",
    )


def initialize_ranges(model: torch.nn.Module, quantizers: list[tuple[QuantizerConfig, Any]], all_modules: list,
                      loader: Any) -> int:
    """Initialise ``quantizers`` ((config, module) pairs, one per module) from ``loader`` (an
    ``InitializingDataLoader``); ``all_modules``: every quantizer module of the model. Returns the number
    of batches run."""
    quotas = {id(m): batches_for(c, getattr(loader, "batch_size", None)) for c, m in quantizers}
    active = [(c, m) for c, m in quantizers if quotas[id(m)] > 0]
    if not active:
        return 0
    enabled = {id(m): is_enabled(m) for m in all_modules}
    for m in all_modules:
        m.disable()
    pending = {}
    for config, module in active:
        module.enable()
        module.begin_range_init(_collector(config))
        pending[id(module)] = (config, module)
    done = 0
    ok = False
    try:
        with torch.no_grad(), eval_mode(model):
            for args, kwargs in loader_batches(loader, model):
                model(*args, **kwargs)
                done += 1
                for key in [k for k in pending if quotas[k] <= done]:
                    pending.pop(key)[1].end_range_init()
                if not pending:
                    break
        if done == 0:
            raise CalibrationError("range initialisation got no batch from its data loader; give a non-empty loader")
        if pending:
            logger.warning(
                "range initialisation: the loader ran out after %d batches, fewer than num_init_samples asks for; "
                "%d quantizers use what was collected", done, len(pending),
            )
            for key in list(pending):
                pending.pop(key)[1].end_range_init()
        ok = True
    finally:
        if not ok:  # leave no quantizer collecting; the original error propagates
            for _, module in pending.values():
                try:
                    module.end_range_init()
                except Exception:  # noqa: BLE001
                    logger.debug("range initialisation of %s left unfinished", module)
        for m in all_modules:
            m.enable() if enabled[id(m)] else m.disable()
    return done


def is_enabled(module: Any) -> bool:
    """A quantizer's enabled flag (``is_enabled`` as a property or a method)."""
    value = module.is_enabled
    return bool(value() if callable(value) else value)
