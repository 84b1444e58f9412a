"""``create_compressed_model``: one capture, every algorithm's edits, one apply, one controller.

Unlike NNCF, which wraps the given model in place, the result is a NEW model (a deep copy carrying
the compression hooks, as ``nncompress.quantize`` returns); the input model is never modified. The
copy keeps the user's class (``isinstance``, attributes, methods such as Hugging Face ``generate``).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from nncompress.errors import UnsupportedBackendError, UnsupportedModelError, ValidationError
from nncompress.log import logger
from nncompress.training.controller import (
    CompositeCompressionAlgorithmController,
    CompressionAlgorithmController,
    CompressionStage,
)


def create_compressed_model(
    model: Any,
    config: Any,
    compression_state: dict[str, Any] | None = None,
    dummy_forward_fn: Any = None,
    wrap_inputs_fn: Any = None,
    wrap_outputs_fn: Any = None,
    dump_graphs: bool = False,
) -> tuple[CompressionAlgorithmController, Any]:
    """(controller, compressed model) for ``model`` under the NNCF ``config``.

    With ``compression_state`` (from ``controller.get_compression_state()``) the exact saved quantizer
    setup is rebuilt and no data-driven initialisation runs; load the weights with ``load_state``.
    """
    from nncompress.backends.registry import get_adapter
    from nncompress.training.quantization.scopes import node_names

    _check_arguments(model, dummy_forward_fn, wrap_inputs_fn, wrap_outputs_fn)
    config = _as_config(config)
    builder_state, ctrl_state, legacy_state_dict = _split_state(compression_state)
    builders = [_make_builder(spec, builder_state) for spec in config.algorithm_specs()]
    if not builders:
        from nncompress.backends.torch.inputs import copy_model

        plain = copy_model(model)
        return NoCompressionController(plain), plain
    example = example_input(config, model)
    adapter = get_adapter(model, example_input=example)
    graph = adapter.build_graph(model)
    names = node_names(graph, model)
    edits = []
    for builder in builders:
        if hasattr(builder, "bind_model"):  # builders that need the float model and its capture (filter pruning)
            builder.bind_model(model, adapter)
        edits.extend(builder.edits(graph, names, adapter.capabilities))
    compressed = adapter.apply(model, edits)
    controllers = [builder.build_controller(compressed) for builder in builders]
    ctrl = controllers[0] if len(controllers) == 1 else CompositeCompressionAlgorithmController(compressed, controllers)
    for c in [ctrl, *controllers]:
        c.example_input = example
    _initialize(ctrl, controllers, config, builder_state, ctrl_state)
    if legacy_state_dict is not None:
        from nncompress.training.state import load_state

        load_state(compressed, legacy_state_dict, is_resume=True)
    if dump_graphs:
        _dump(config, graph)
    _barrier()
    return ctrl, compressed


def _check_arguments(model: Any, dummy_forward_fn: Any, wrap_inputs_fn: Any, wrap_outputs_fn: Any) -> None:
    from torch import nn

    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"create_compressed_model needs a torch.nn.Module; got {type(model).__name__}")
    _refuse_compressed(model)
    if dummy_forward_fn is not None:
        raise UnsupportedBackendError(
            "dummy_forward_fn is not supported: nncompress captures the graph by running the model on the inputs "
            "described by the config's \"input_info\" (or the first batch of the registered init loader)"
        )
    for name, fn in (("wrap_inputs_fn", wrap_inputs_fn), ("wrap_outputs_fn", wrap_outputs_fn)):
        if fn is not None:
            logger.warning("create_compressed_model(%s=...) has no effect: every tensor input and output of forward "
                           "is traced without marking", name)


def _initialize(ctrl, controllers: list, config: Any, builder_state, ctrl_state) -> None:
    """Restore the saved controller state, or (no saved state) run the data-driven initialisation."""
    if ctrl_state is not None:
        ctrl.load_state(ctrl_state)
    elif builder_state is None:
        for c in controllers:
            if hasattr(c, "initialize_from_config"):
                c.initialize_from_config(config)


class NoCompressionController(CompressionAlgorithmController):
    """The controller of a config without algorithms (an FP32 run): the model is a plain copy."""

    name = "no_compression"

    def compression_stage(self) -> CompressionStage:
        return CompressionStage.UNCOMPRESSED


def _refuse_compressed(model: Any) -> None:
    from nncompress.backends.torch.hooks import storage_of

    inner = getattr(model, "module", None)
    for candidate in (model, inner):
        if candidate is not None and hasattr(candidate, "_modules") and storage_of(candidate) is not None:
            raise ValidationError(
                f"the {type(model).__name__} given to create_compressed_model is already compressed (it carries "
                "nncompress hooks); pass the original float model, and resume with compression_state=..."
            )


def _as_config(config: Any):
    from nncompress.training.config import NNCFConfig

    if isinstance(config, NNCFConfig):
        return config
    if isinstance(config, dict):
        return NNCFConfig.from_dict(config)
    raise ValidationError(f"config must be an NNCFConfig (or a dict); got {type(config).__name__}")


def _split_state(state: Any) -> tuple[dict | None, dict | None, dict | None]:
    """(builder_state, ctrl_state, legacy state dict) of a ``compression_state`` argument."""
    if state is None:
        return None, None, None
    if not isinstance(state, dict):
        raise ValidationError(f"compression_state must be the dict get_compression_state() returns; got "
                              f"{type(state).__name__}")
    if "builder_state" in state:
        return state["builder_state"] or {}, state.get("ctrl_state"), None
    if state and all(hasattr(v, "shape") for v in state.values()):
        logger.warning("compression_state is a plain state dict (NNCF 1.x style): it is loaded with "
                       "load_state(is_resume=True) after building the model from the config")
        return None, None, state
    raise ValidationError(
        f"compression_state has no 'builder_state' (keys: {sorted(state)[:8]}); pass the dict from "
        "compression_ctrl.get_compression_state()"
    )


# algorithm name -> "module:Builder". A builder is constructed as Builder(spec, saved_state_or_None) and gives
# ``edits(graph, names, capabilities)`` and ``build_controller(compressed_model)``; an optional
# ``bind_model(model, adapter)`` is called first (the float model, and the adapter holding its capture).
# An algorithm whose module is not present yet is refused as not implemented.
BUILDERS = {
    "quantization": "nncompress.training.quantization.builder:QuantizationBuilder",
    "magnitude_sparsity": "nncompress.training.sparsity.builder:MagnitudeSparsityBuilder",
    "rb_sparsity": "nncompress.training.sparsity.builder:RBSparsityBuilder",
    "const_sparsity": "nncompress.training.sparsity.builder:ConstSparsityBuilder",
    "filter_pruning": "nncompress.training.pruning.builder:FilterPruningBuilder",
    "binarization": "nncompress.training.binarization.builder:BinarizationBuilder",
    "knowledge_distillation": "nncompress.training.knowledge_distillation.builder:KnowledgeDistillationBuilder",
}


def builder_class(name: str):
    """The builder class registered for algorithm ``name``; UnsupportedBackendError when absent."""
    import importlib

    target = BUILDERS.get(name)
    cls = None
    if target is not None:
        module_name, _, attr = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr, None)
        except ModuleNotFoundError as error:
            if error.name != module_name and not module_name.startswith(f"{error.name}."):
                raise
    if cls is None:
        raise UnsupportedBackendError(
            f"the {name!r} algorithm is not implemented yet in nncompress' training-time API; implemented: "
            f"{', '.join(implemented_algorithms())}"
        )
    return cls


def implemented_algorithms() -> list[str]:
    """The registered algorithms whose builder module is present."""
    import importlib.util

    names = []
    for name, target in BUILDERS.items():
        try:
            present = importlib.util.find_spec(target.partition(":")[0]) is not None
        except ModuleNotFoundError:
            present = False
        if present:
            names.append(name)
    return names


def _make_builder(spec: Any, builder_state: dict | None):
    name = getattr(spec, "name", None) or getattr(spec, "algorithm", "?")
    cls = builder_class(name)
    state = None
    if builder_state is not None:
        if name not in builder_state:
            raise ValidationError(
                f"compression_state has no builder state for {name!r} (it has {sorted(builder_state)}); the config's "
                "algorithms must be those the state was saved with"
            )
        state = builder_state[name]
    return cls(spec, state)


def example_input(config: Any, model: Any) -> Any:
    """The model input item the graph is captured on: from ``input_info``, else the first batch (first
    sample) of the registered init loader."""
    infos = config.input_infos()
    if infos:
        from nncompress.backends.torch.inputs import model_device
        from nncompress.training.config.input_info import create_example_input

        args, kwargs = create_example_input(infos, device=model_device(model))
        return _as_item(model, tuple(args), dict(kwargs))
    loader = _init_loader(config)
    if loader is None:
        raise ValidationError(
            "the config has no \"input_info\" and no init data loader is registered: add \"input_info\": "
            "{\"sample_size\": [1, 3, 224, 224]} to the config, or call register_default_init_args(config, "
            "train_loader) first"
        )
    import torch
    from torch.utils import _pytree as pytree

    for batch in loader:
        args, kwargs = loader.get_inputs(batch)
        first = pytree.tree_map_only(torch.Tensor, lambda t: t[:1] if t.dim() > 0 else t, (tuple(args), dict(kwargs)))
        return _as_item(model, *first)
    raise ValidationError("the registered init data loader is empty; the graph capture needs one batch (or input_info)")


def _init_loader(config: Any):
    from nncompress.training.config.init_args import (
        BNAdaptationInitArgs,
        QuantizationRangeInitArgs,
        wrap_dataloader_for_init,
    )

    for struct in (QuantizationRangeInitArgs, BNAdaptationInitArgs):
        if config.has_extra_struct(struct):
            return wrap_dataloader_for_init(config.get_extra_struct(struct).data_loader)
    return None


def _as_item(model: Any, args: tuple, kwargs: dict) -> Any:
    """One input item for the adapter: a tuple of positional arguments or a dict of keyword arguments."""
    if not kwargs:
        return args
    if not args:
        return kwargs
    try:
        bound = inspect.signature(model.forward).bind_partial(*args, **kwargs)
    except TypeError as exc:
        raise ValidationError(f"input_info does not fit {type(model).__name__}.forward: {exc}") from exc
    return dict(bound.arguments)


def _dump(config: Any, graph: Any) -> None:
    log_dir = config.get("log_dir")
    if not log_dir:
        logger.warning("dump_graphs=True needs \"log_dir\" in the config; no graph written")
        return
    path = Path(log_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / "original_graph.txt").write_text(graph.dump())


def _barrier() -> None:
    try:
        from nncompress.training import distributed
    except ImportError:
        return
    if distributed.is_distributed():
        distributed.barrier()
