"""Training-time compression (NNCF 2.x's ``create_compressed_model`` API), PyTorch only.

Importing this package does not import torch: the functions below import what they need when called.
"""

from __future__ import annotations

from typing import Any

from nncompress.training.controller import (
    CompositeCompressionAlgorithmController,
    CompressionAlgorithmController,
    CompressionStage,
    Statistics,
)


def create_compressed_model(
    model: Any,
    config: Any,
    compression_state: dict | None = None,
    dummy_forward_fn: Any = None,
    wrap_inputs_fn: Any = None,
    wrap_outputs_fn: Any = None,
    dump_graphs: bool = False,
):
    """(compression controller, compressed model): see ``nncompress.training.builder``."""
    from nncompress.training.builder import create_compressed_model as create

    return create(model, config, compression_state, dummy_forward_fn, wrap_inputs_fn, wrap_outputs_fn, dump_graphs)


def load_state(
    model: Any, state_dict_to_load: dict, is_resume: bool = False, keys_to_ignore: list | None = None
) -> int:
    """Load a checkpoint's state dict into a (compressed) model: see ``nncompress.training.state``."""
    from nncompress.training.state import load_state as load

    return load(model, state_dict_to_load, is_resume, keys_to_ignore)


__all__ = [
    "CompositeCompressionAlgorithmController",
    "CompressionAlgorithmController",
    "CompressionStage",
    "Statistics",
    "create_compressed_model",
    "load_state",
]
