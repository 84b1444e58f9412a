"""NNCF's ``nncf.torch``: ``create_compressed_model``, ``register_default_init_args``, ``load_state``,
``strip``, ``disable_tracing`` and model-wrapping helpers.

Importing this module does not import torch; the functions that need it import it when called. The
PyTorch backend itself is ``nncompress.backends.torch``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from nncompress.api.export import strip
from nncompress.errors import UnsupportedBackendError
from nncompress.log import logger
from nncompress.training import create_compressed_model, load_state
from nncompress.training.accuracy_aware import create_accuracy_aware_training_loop
from nncompress.training.config import NNCFConfig
from nncompress.training.config.init_args import register_default_init_args

TModel = TypeVar("TModel")
_warned_tracing = False

__all__ = [
    "NNCFConfig",
    "create_accuracy_aware_training_loop",
    "create_compressed_model",
    "disable_tracing",
    "force_build_cpu_extensions",
    "force_build_cuda_extensions",
    "get_config",
    "is_wrapped_model",
    "load_from_config",
    "load_state",
    "lora_rank_choices",
    "register_default_init_args",
    "set_lora_rank",
    "strip",
    "wrap_model",
]


def disable_tracing(method: Callable[..., Any]) -> Callable[..., Any]:
    """Accepted for NNCF compatibility, but a no-op: nncompress' capture traces every torch call.

    NNCF stops tracing inside ``method``. nncompress' capture cannot honour that yet (the outputs of an
    untraced region would disconnect the graph), so the operations of ``method`` are captured and may be
    quantized like any other; exclude them with ``IgnoredScope`` if needed. Warns once per process.
    Returns ``method`` unchanged, so it also works as a decorator.
    """
    global _warned_tracing
    if not _warned_tracing:
        _warned_tracing = True
        name = getattr(method, "__qualname__", repr(method))
        logger.warning(
            "nncompress.torch.disable_tracing(%s) has no effect: nncompress traces every torch call; use "
            "IgnoredScope to keep operations out of compression", name,
        )
    return method


def force_build_cpu_extensions() -> None:
    """No-op: nncompress has no C++ extensions to build (its PyTorch kernels are pure PyTorch)."""


def force_build_cuda_extensions() -> None:
    """No-op: nncompress has no CUDA extensions to build (its PyTorch kernels are pure PyTorch)."""


def is_wrapped_model(model: Any) -> bool:
    """True for a PyTorch model that carries nncompress hooks (e.g. the result of ``quantize``)."""
    from torch import nn

    if not isinstance(model, nn.Module):
        return False
    from nncompress.backends.torch.hooks import storage_of

    return storage_of(model) is not None


def wrap_model(model: TModel, example_input: Any, trace_parameters: bool = False) -> Any:
    """Not available: nncompress has no separate wrapping step (the capture happens inside each entry point)."""
    raise UnsupportedBackendError(
        "nncompress.torch.wrap_model is not implemented: nncompress captures the model inside quantize(), "
        "compress_weights() and create_compressed_model(); pass the plain torch.nn.Module to them"
    )


def lora_rank_choices(model: Any) -> tuple[int, ...]:
    """The ranks ``set_lora_rank`` accepts for a ``compression_format=CompressionFormat.FQ_LORA_NLS`` model
    (``r, 3r/4, r/2`` of ``AdvancedCompressionParameters.lora_adapter_rank``), descending."""
    from nncompress.backends.torch.lora_fq import lora_rank_choices as choices

    return choices(model)


def set_lora_rank(model: Any, rank: int | None = None) -> int:
    """Choose the rank of the elastic LoRA adapters of a ``compress_weights(...,
    compression_format=CompressionFormat.FQ_LORA_NLS)`` model: ``rank`` (one of each adapter's choices
    ``r, 3r/4, r/2``) or the largest (None). Eval-mode forwards and ``strip`` use it; training samples a
    rank per forward. Returns how many adapters were set."""
    from nncompress.backends.torch.lora_fq import set_lora_rank as set_rank

    return set_rank(model, rank)


def get_config(model: Any) -> dict[str, Any]:
    """The structure of the compression applied to a PyTorch ``model`` as JSON-serialisable data (no tensor
    values): save it beside ``model.state_dict()`` and rebuild with ``load_from_config``."""
    from nncompress.backends.torch.config_io import get_config as describe

    return describe(model)


def load_from_config(
    model: TModel, config: dict[str, Any], example_input: Any = None, *, allowed_modules: tuple[str, ...] = ("nncf.*",)
) -> TModel:
    """A copy of the float ``model`` with the compression structure of ``config`` (from ``get_config``); load the
    compressed model's ``state_dict`` into it to get the compressed model back.

    ``example_input`` (NNCF 2.x's third argument) is accepted and not needed: the config names every hook.
    Only classes and functions in ``allowed_modules`` (``nncf.*`` means nncompress' own) and ``torch.nn.*`` are
    rebuilt from the config.
    """
    from nncompress.backends.torch.config_io import load_from_config as rebuild

    return rebuild(model, config, tuple(allowed_modules))
