"""``get_config`` / ``load_from_config``: the structure of a compressed PyTorch model as JSON-serialisable data.

The config describes what compression added to the user's model, without tensor values:

- ``storage``: the hook storage (quantizers, masks, replaced constants and the chains they form), where
  it hangs (``host``);
- ``modules``: compression submodules added to the model's own layers (weights stored compressed by
  ``compress_weights`` or by ``strip(strip_format=DQ)``, low-rank corrections) with the forward hooks
  that read them and the float parameters they replaced.

Every module is described generically: its class (only ``nncompress.*`` and ``torch.nn.*`` classes are
rebuilt), its plain attributes, the shapes and dtypes of its parameters and buffers, its children. The
tensors come from the compressed model's ``state_dict``: ``load_from_config(float_model, config)`` gives
a model of the same structure into which that state dict loads (``strict=True``).
"""

from __future__ import annotations

import enum
import fnmatch
import functools
import importlib
from typing import Any

import torch
from torch import nn

from nncompress.errors import UnsupportedModelError, ValidationError

from .hooks import STORAGE_ATTR, HookedForward, is_storage_path, storage_host, storage_of
from .inputs import copy_model

FORMAT = "nncompress.torch.compression/1"
_BASE_ATTRS = set(nn.Module().__dict__) | {"_compiled_call_impl"}
_HOOK_KINDS = ("_forward_pre_hooks", "_forward_hooks")


def _path(obj: Any) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def _resolve(path: str, allowed: tuple[str, ...]) -> Any:
    module_name, _, qualname = path.partition(":")
    alias = "nncompress" + module_name[len("nncf"):] if module_name.split(".")[0] == "nncf" else module_name
    patterns = [("nncompress" + p[len("nncf"):] if p.startswith("nncf") else p) for p in allowed]
    if not any(fnmatch.fnmatch(alias, p) for p in (*patterns, "torch.nn.*")):
        raise ValidationError(f"config names {path!r}, outside allowed_modules {list(allowed)}; add its module pattern "
                              "to allowed_modules if you trust this config")
    obj: Any = importlib.import_module(alias)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


# ---------------------------------------------------------------------------------------------- values
def _encode(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return {"__enum__": _path(type(value)), "value": _encode(value.value, where)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, where) for v in value]}
    if isinstance(value, (set, frozenset)):
        return {"__set__": sorted((_encode(v, where) for v in value), key=repr)}
    if isinstance(value, list):
        return [_encode(v, where) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[_encode(k, where), _encode(v, where)] for k, v in value.items()]}
    if isinstance(value, torch.dtype):
        return {"__dtype__": str(value).removeprefix("torch.")}
    raise UnsupportedModelError(f"get_config: {where} holds a {type(value).__name__}, which a config cannot describe")


def _decode(value: Any, allowed: tuple[str, ...]) -> Any:
    if isinstance(value, list):
        return [_decode(v, allowed) for v in value]
    if not isinstance(value, dict):
        return value
    if "__enum__" in value:
        return _resolve(value["__enum__"], allowed)(_decode(value["value"], allowed))
    if "__tuple__" in value:
        return tuple(_decode(v, allowed) for v in value["__tuple__"])
    if "__set__" in value:
        return {_decode(v, allowed) for v in value["__set__"]}
    if "__dict__" in value:
        return {_decode(k, allowed): _decode(v, allowed) for k, v in value["__dict__"]}
    if "__dtype__" in value:
        return getattr(torch, value["__dtype__"])
    raise ValidationError(f"load_from_config: unknown value {value!r} in the config")


# --------------------------------------------------------------------------------------------- modules
def _tensor_spec(tensor: torch.Tensor | None, values: bool = False) -> Any:
    if tensor is None:
        return None
    spec = {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch."),
            "requires_grad": bool(tensor.requires_grad)}
    if values:  # not in the state dict: keep the (small) value itself
        spec["values"] = tensor.detach().cpu().tolist()
    return spec


def describe_module(module: nn.Module, where: str) -> dict:
    """Class, plain attributes, parameter/buffer shapes, load-state hooks and children of ``module``."""
    cls = type(module)
    if not (cls.__module__.startswith("nncompress.") or cls.__module__.startswith("torch.nn.")):
        raise UnsupportedModelError(f"get_config: {where} is a {cls.__name__} from {cls.__module__}; only nncompress' "
                                    "own compression modules can be described")
    attrs = {k: _encode(v, f"{where}.{k}") for k, v in module.__dict__.items() if k not in _BASE_ATTRS}
    hooks = [[_path(h.hook), bool(h.with_module)] for h in module._load_state_dict_pre_hooks.values()]
    return {
        "class": _path(cls),
        "attrs": attrs,
        "parameters": {k: _tensor_spec(v) for k, v in module._parameters.items()},
        "buffers": {k: _tensor_spec(v, k in module._non_persistent_buffers_set) for k, v in module._buffers.items()},
        "non_persistent": sorted(module._non_persistent_buffers_set),
        "load_hooks": hooks,
        "children": {k: describe_module(v, f"{where}.{k}") for k, v in module._modules.items()},
    }


def _empty(spec: dict) -> torch.Tensor:
    dtype = getattr(torch, spec["dtype"])
    if "values" in spec:
        return torch.tensor(spec["values"], dtype=dtype).reshape(spec["shape"])
    return torch.zeros(spec["shape"], dtype=dtype)


def build_module(spec: dict, allowed: tuple[str, ...]) -> nn.Module:
    """A module of ``spec``'s class and structure (tensor values zero until a state dict is loaded)."""
    cls = _resolve(spec["class"], allowed)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValidationError(f"load_from_config: {spec['class']!r} is not a torch.nn.Module class")
    module = cls.__new__(cls)
    nn.Module.__init__(module)
    for name, value in spec["attrs"].items():
        object.__setattr__(module, name, _decode(value, allowed))
    for name, tensor in spec["parameters"].items():
        module._parameters[name] = None if tensor is None else nn.Parameter(
            _empty(tensor), requires_grad=tensor["requires_grad"])
    for name, tensor in spec["buffers"].items():
        module._buffers[name] = None if tensor is None else _empty(tensor)
    module._non_persistent_buffers_set.update(spec["non_persistent"])
    for path, with_module in spec["load_hooks"]:
        module._register_load_state_dict_pre_hook(_resolve(path, allowed), with_module=with_module)
    for name, child in spec["children"].items():
        module._modules[name] = build_module(child, allowed)
    return module


# ------------------------------------------------------------------------------------- model-level hooks
def _layer_hooks(module: nn.Module) -> list[list]:
    """[kind, function path, keywords, always_call] of nncompress' forward hooks on one of the model's layers
    (the user's own hooks are part of the float model, not of the compression)."""
    found = []
    for kind in _HOOK_KINDS:
        for handle, hook in getattr(module, kind).items():
            if not isinstance(hook, functools.partial) or not hook.func.__module__.startswith("nncompress."):
                continue
            always = bool(module._forward_hooks_always_called.get(handle, False))
            found.append([kind, _path(hook.func), _encode(dict(hook.keywords), "hook"), always])
    return found


def get_config(model: nn.Module) -> dict[str, Any]:
    """JSON-serialisable structure of the compression applied to ``model`` (see the module docstring)."""
    if not isinstance(model, nn.Module):
        raise ValidationError(f"get_config needs a torch.nn.Module; got {type(model).__name__}")
    storage = storage_of(model)
    layers = []
    shared: dict[int, str] = {}
    for path, module in model.named_modules():
        if is_storage_path(path) or type(module).__module__.startswith("nncompress."):
            continue
        added = {k: v for k, v in module._modules.items() if type(v).__module__.startswith("nncompress.")}
        hooks = _layer_hooks(module)
        if not added and not hooks:
            continue
        children = {}
        for key, child in added.items():
            where = f"{path}.{key}" if path else key
            children[key] = {"same_as": shared[id(child)]} if id(child) in shared else describe_module(child, where)
            shared.setdefault(id(child), where)
        layers.append({"path": path, "children": children, "hooks": hooks})
    if storage is None and not layers:
        raise ValidationError("get_config: the model carries no nncompress compression (quantize, compress_weights "
                              "or create_compressed_model gives one)")
    return {
        "format": FORMAT,
        "host": storage_host(model) if storage is not None else None,
        "storage": describe_module(storage, STORAGE_ATTR) if storage is not None else None,
        "layers": layers,
    }


def load_from_config(model: nn.Module, config: dict[str, Any], allowed: tuple[str, ...] = ("nncf.*",)) -> nn.Module:
    """A copy of the float ``model`` with the compression structure of ``config`` (values from a state dict)."""
    if not isinstance(model, nn.Module):
        raise ValidationError(f"load_from_config needs a torch.nn.Module; got {type(model).__name__}")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ValidationError(f"load_from_config needs a config from nncompress.torch.get_config (format {FORMAT!r}); "
                              f"got {found!r}")
    if storage_of(model) is not None:
        raise ValidationError("load_from_config needs the float model; this one is already compressed")
    result = copy_model(model)
    built: dict[str, nn.Module] = {}
    for layer in config["layers"]:
        _rebuild_layer(result, layer, built, allowed)
    if config["storage"] is not None:
        host = config["host"]
        result.get_submodule(host).add_module(STORAGE_ATTR, build_module(config["storage"], allowed))
        result.forward = HookedForward(result, result.__dict__.get("forward"), host)
    return result


def _rebuild_layer(model: nn.Module, layer: dict, built: dict[str, nn.Module], allowed: tuple[str, ...]) -> None:
    try:
        module = model.get_submodule(layer["path"])
    except AttributeError as exc:
        raise ValidationError(f"load_from_config: the model has no submodule {layer['path']!r} named in the config; "
                              "pass the float model the config was made from") from exc
    for key, spec in layer["children"].items():
        child = built[spec["same_as"]] if "same_as" in spec else build_module(spec, allowed)
        built[f"{layer['path']}.{key}" if layer["path"] else key] = child
        module.add_module(key, child)
    for kind, func, keywords, always in layer["hooks"]:
        hook = functools.partial(_resolve(func, allowed), **_decode(keywords, allowed))
        attr = hook.keywords.get("attr")
        if attr is not None and attr in module._parameters:  # a weight now read from its compressed storage
            del module._parameters[attr]
            module.__dict__[attr] = module._modules[hook.keywords["key"]].placeholder
        if kind == "_forward_pre_hooks":
            module.register_forward_pre_hook(hook)
        else:
            module.register_forward_hook(hook, always_call=always)
