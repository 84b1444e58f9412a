"""Mixed-precision initialisation of the QAT quantizers (``initializer.precision``, §3 of the brief).

- ``manual``: ``bitwidth_per_scope: [[bits, scope], ...]`` sets widths while the setup is built (no data);
  a scope ending ``|WEIGHT`` selects weight quantizers, ``|OUTPUT``/``|INPUT…`` activation ones, a bare
  scope both. A scope selects a quantizer when it is a substring of one of its operations' names (as in
  NNCF), a ``{re}`` pattern matching one, or the quantizer's own name.
- ``hawq``: after the model is built and before range init, the Hutchinson traces of the weights of the
  quantized layers (all quantizers off, criterion from ``register_default_init_args``), the weight noise per
  candidate width and each layer's FLOPs go to ``algorithms.hawq.search``; the chosen widths are written
  into the quantizer configs (the builder state), so a resumed model gets them without searching again.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from nncompress.algorithms import hawq
from nncompress.errors import ValidationError
from nncompress.training.quantization.scopes import REGEX_PREFIX, _normalise, scope_matches
from nncompress.training.quantization.setup import ACTIVATIONS, WEIGHTS, QuantizerConfig, finish_config

_GROUP_SUFFIXES = {"WEIGHT": WEIGHTS, "OUTPUT": ACTIVATIONS, "INPUT": ACTIVATIONS}


# --- manual ---------------------------------------------------------------------------------------
def _split_scope(scope: str) -> tuple[str, str | None, str | None]:
    """(scope without the point suffix, quantizer group or None, suffix kind or None)."""
    base, sep, suffix = scope.rpartition("|")
    kind = suffix.rstrip("0123456789") if sep else None
    if sep and kind in _GROUP_SUFFIXES:
        return base, _GROUP_SUFFIXES[kind], kind
    return scope, None, None


def _selects(scope: str, kind: str | None, config: QuantizerConfig, names: dict) -> bool:
    if scope == config.name:
        return True
    if config.group == WEIGHTS:
        nodes = config.nodes[:1]
    else:
        nodes = {"OUTPUT": config.nodes[:1], "INPUT": config.nodes[1:]}.get(kind, config.nodes)
    candidates = [name for node in nodes for name in names.get(node, (node,))]
    if scope_matches(scope, candidates) or scope.startswith(REGEX_PREFIX):
        return scope_matches(scope, candidates)
    wanted = _normalise(scope)  # NNCF matches a substring of the quantization point's id
    return any(wanted in name for name in candidates) or scope in config.name


def apply_manual(configs: list[QuantizerConfig], precision: dict, names: dict, device: str) -> None:
    """Set the widths ``bitwidth_per_scope`` asks for (later entries win); a scope that selects nothing,
    or a width ``device`` cannot run, is refused."""
    entries = precision.get("bitwidth_per_scope") or []
    if not entries:
        hawq.warn_loudly("initializer.precision type 'manual' has an empty bitwidth_per_scope: every quantizer keeps "
                         "the bits of its weights/activations section")
    for index, (bits, scope) in enumerate(entries):
        base, group, kind = _split_scope(scope)
        chosen = [c for c in configs if group in (None, c.group) and _selects(base, kind, c, names)]
        if not chosen:
            raise ValidationError(
                f"initializer.precision.bitwidth_per_scope[{index}]: scope {scope!r} selects no quantizer; "
                f"quantizers: {', '.join(c.name + ('|WEIGHT' if c.group == WEIGHTS else '') for c in configs[:10])}"
            )
        for config in chosen:
            if not hawq.is_allowed(device, config.group, int(bits)):
                raise ValidationError(
                    f"initializer.precision.bitwidth_per_scope[{index}]: target_device {device!r} cannot run "
                    f"{bits}-bit {config.group} (quantizer {config.name!r}); it runs "
                    f"{sorted(hawq.device_bits(device, config.group) or [])}. Use \"target_device\": \"TRIAL\" for "
                    "any width"
                )
            config.bits = int(bits)


# --- the HAWQ problem -------------------------------------------------------------------------------
def activation_groups(configs: list[QuantizerConfig], modules: list[Any]) -> list[tuple[hawq.Activation, list[int]]]:
    """One ``hawq.Activation`` per activation quantizer module (a unified group is one), with the indices
    of its configs. It follows the weighted layers it feeds (an op without weights it also feeds, such as a
    residual add, takes that width too: NNCF's "minimal width consistent with its consumers"); one that feeds
    no weighted layer keeps its configured width (``fixed_bits``)."""
    weight_of = {c.nodes[0]: c.name for c in configs if c.group == WEIGHTS}
    by_module: dict[int, list[int]] = {}
    for i, (config, module) in enumerate(zip(configs, modules)):
        if config.group == ACTIVATIONS:
            by_module.setdefault(id(module), []).append(i)
    result = []
    for indices in by_module.values():
        targets = [n for i in indices for n in configs[i].nodes[1:]]
        feeds = tuple(dict.fromkeys(weight_of[n] for n in targets if n in weight_of))
        fixed = None if feeds else configs[indices[0]].bits
        result.append((hawq.Activation(configs[indices[0]].name, feeds, fixed), indices))
    return result


def set_bits(config: QuantizerConfig, module: Any, bits: int) -> None:
    """Give ``config`` and its quantizer ``module`` the width ``bits`` (narrow/half range follow)."""
    config.bits = int(bits)
    finish_config(config)
    module.num_bits = int(bits)
    module._num_bits.fill_(int(bits))
    module.narrow_range, module.half_range = config.narrow_range, config.half_range


@contextmanager
def _estimation_mode(model: torch.nn.Module, modules: list[Any]):
    """Every quantizer off, every float parameter trainable, eval mode; all restored afterwards."""
    from nncompress.backends.torch.inputs import eval_mode
    from nncompress.training.quantization.range_init import is_enabled

    enabled = [(m, is_enabled(m)) for m in modules]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for m in modules:
            m.disable()
        for p, _ in grads:
            if p.is_floating_point():
                p.requires_grad_(True)
        with eval_mode(model):
            yield
    finally:
        for m, on in enabled:
            m.enable() if on else m.disable()
        for p, flag in grads:
            p.requires_grad_(flag)


class _Capture:
    """Forward pre-hooks recording the tensor each weight quantizer receives (the weight it quantizes)."""

    def __init__(self, modules: list[Any]):
        self.tensors: list[torch.Tensor | None] = [None] * len(modules)
        self.handles = [m.register_forward_pre_hook(self._hook(i)) for i, m in enumerate(modules)]

    def _hook(self, index: int):
        def hook(module, args):
            self.tensors[index] = args[0]
        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def weight_arrays(model: torch.nn.Module, modules: list[Any], all_modules: list[Any], example: Any) -> list:
    """The weights the weight quantizers ``modules`` receive, as numpy arrays (one forward of ``example``)."""
    from nncompress.backends.torch.inputs import split_item

    capture = _Capture(modules)
    try:
        with torch.no_grad(), _estimation_mode(model, all_modules):
            args, kwargs = split_item(model, example)
            model(*args, **kwargs)
    finally:
        capture.close()
    missing = [i for i, t in enumerate(capture.tensors) if t is None]
    if missing:
        raise ValidationError(f"mixed precision: {len(missing)} weight quantizers did not run in a forward pass")
    return [t.detach().float().cpu().numpy() for t in capture.tensors]


def estimate_traces(model: torch.nn.Module, modules: list[Any], all_modules: list[Any], init_args: Any,
                    precision: dict) -> tuple[list[float], int]:
    """(average Hessian trace of each weight quantizer's weight, iterations) by the Hutchinson estimator."""
    from nncompress.backends.torch.hessian import hutchinson_traces
    from nncompress.training.bn_adaptation import to_model_device

    loader = init_args.data_loader
    count = max(int(precision["num_data_points"]) // max(int(loader.batch_size), 1), 1)
    batches = []
    for batch in loader:
        args, kwargs = to_model_device(model, *loader.get_inputs(batch))
        target = to_model_device(model, (loader.get_target(batch),), {})[0][0]
        batches.append((args, kwargs, target))
        if len(batches) == count:
            break
    capture = _Capture(modules)

    def closure(index: int):
        args, kwargs, target = batches[index]
        outputs = model(*args, **kwargs)
        loss = init_args.criterion_fn(outputs, target, init_args.criterion)
        size = next((int(t.shape[0]) for t in (*args, *kwargs.values()) if hasattr(t, "shape") and t.dim()), 1)
        return loss, list(capture.tensors), size

    try:
        with _estimation_mode(model, all_modules):
            return hutchinson_traces(closure, len(batches), int(precision["iter_number"]),
                                     float(precision["tolerance"]))
    except torch.cuda.OutOfMemoryError as error:
        raise ValidationError("mixed precision: out of memory while estimating Hessian traces; register a "
                              "smaller init batch size or lower num_data_points") from error
    finally:
        capture.close()


def load_traces(path: str, names: list[str]) -> list[float]:
    """Traces saved by ``dump_init_precision_data`` (``traces_per_layer.json``: {quantizer name: trace})."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValidationError(
            f"initializer.precision.traces_per_layer_path {path!r} cannot be read: {error}"
        ) from error
    missing = [n for n in names if n not in data]
    if missing:
        raise ValidationError(
            f"traces_per_layer_path {path!r} has no trace for {missing[:5]}; it has {sorted(data)[:5]}"
        )
    return [float(data[n]) for n in names]


__all__ = ["activation_groups", "apply_manual", "estimate_traces", "load_traces", "set_bits", "weight_arrays"]
