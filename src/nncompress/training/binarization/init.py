"""Activation-scale initialisation of binarizers from an init data loader.

The model runs in eval mode under ``no_grad`` (training flags restored) with every binarizer passing its
input through, so the statistics are those of the float model (as for QAT range init): each activation
binarizer records the smallest of its input's top 0.1% values per batch and takes their mean.
"""

from __future__ import annotations

from typing import Any

import torch

from nncompress.backends.torch.inputs import eval_mode
from nncompress.errors import CalibrationError
from nncompress.training.bn_adaptation import loader_batches


def initialize_scales(model: torch.nn.Module, activations: list, weights: list, loader: Any, batches: int) -> int:
    """Set every activation binarizer's scale from up to ``batches`` batches of ``loader``; returns the
    number of batches run."""
    if not activations or batches <= 0:
        return 0
    modules = [*activations, *weights]
    enabled = [m.is_enabled for m in modules]
    for m in modules:
        m.disable()
    for m in activations:
        m.begin_init()
    done, ok = 0, False
    try:
        with torch.no_grad(), eval_mode(model):
            for args, kwargs in loader_batches(loader, model):
                model(*args, **kwargs)
                done += 1
                if done >= batches:
                    break
        if done == 0:
            raise CalibrationError("binarization scale init got no batch from its data loader; give a non-empty loader")
        ok = True
    finally:
        for m in activations:
            if ok:
                m.end_init()
            else:
                m._collected = None  # leave nothing collecting; the original error propagates
        for m, on in zip(modules, enabled):
            m.enable() if on else m.disable()
    return done
