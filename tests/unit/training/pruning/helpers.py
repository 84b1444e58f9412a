"""Configs and models shared by the filter pruning training tests."""

from __future__ import annotations

import copy

import torch

from tests.unit.backends.torch.pruning_models import ResidualDW, randomize_norms

INPUT = [1, 3, 8, 8]


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_norms(ResidualDW())


def config(params: dict | None = None, **section) -> dict:
    base = {"prune_first_conv": True, "prune_downsample_convs": True}
    return {"input_info": {"sample_size": INPUT},
            "compression": {"algorithm": "filter_pruning", "params": base | (params or {}), **section}}


def example(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, *INPUT[1:], generator=torch.Generator().manual_seed(3))


def with_quantization(cfg: dict, first: bool) -> dict:
    cfg = copy.deepcopy(cfg)
    quant = {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 0}}}
    cfg["compression"] = [quant, cfg["compression"]] if first else [cfg["compression"], quant]
    return cfg
