"""Read the model a command compresses (ONNX, OpenVINO IR, Hugging Face folder, PyTorch checkpoint) and
write the result where ``--output`` says."""

from __future__ import annotations

import argparse
import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nncompress.cli.common import resolve_reference
from nncompress.errors import InvalidPathError, ModuleNotFoundError, UnsupportedModelError, ValidationError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
MODEL_KINDS = "an ONNX file (.onnx), an OpenVINO IR (.xml), a Hugging Face model folder or a PyTorch checkpoint"


@dataclass
class LoadedModel:
    model: Any
    backend: str  # "onnx", "openvino" or "torch"
    path: Path
    hf_folder: Path | None = None
    input_names: list[str] = field(default_factory=list)  # [] where any keyword is accepted
    input_shapes: dict[str, tuple] = field(default_factory=dict)  # static dims as ints, dynamic as None


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=f"the model: {MODEL_KINDS}")
    group = parser.add_argument_group("PyTorch and Hugging Face models")
    group.add_argument("--model-class", metavar="MODULE:CLASS",
                       help="class of a PyTorch checkpoint that holds a state_dict (pkg.module:Net or file.py:Net)")
    group.add_argument("--model-args", default="{}", metavar="JSON",
                       help="keyword arguments of --model-class, as a JSON object (default {})")
    group.add_argument("--unsafe-pickle", action="store_true",
                       help="load a checkpoint that pickles a whole nn.Module (torch.load weights_only=False runs "
                            "code from the file: only for files you trust)")
    group.add_argument("--hf-class", default=None, metavar="NAME",
                       help="transformers auto class for a Hugging Face folder (default AutoModelForCausalLM when "
                            "config.json names a *ForCausalLM architecture, else AutoModel)")


def load_model(args: argparse.Namespace) -> LoadedModel:
    path = Path(args.model)
    if not path.exists():
        raise InvalidPathError(f"model {str(path)!r} does not exist; give {MODEL_KINDS}")
    if path.is_dir():
        return _load_hf(path, args.hf_class)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _load_onnx(path)
    if suffix == ".xml":
        return _load_openvino(path)
    if suffix in CHECKPOINT_SUFFIXES:
        return _load_checkpoint(path, args)
    raise ValidationError(f"model {str(path)!r} has suffix {suffix!r}; give {MODEL_KINDS} "
                          f"(checkpoint suffixes: {', '.join(CHECKPOINT_SUFFIXES)})")


def _need(package: str, install: str) -> Any:
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ModuleNotFoundError(f"this model needs the {package!r} package ({exc}); {install}") from exc


def _load_onnx(path: Path) -> LoadedModel:
    onnx = _need("onnx", "pip install nncompress[onnx]")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 (protobuf raises its own types)
        raise UnsupportedModelError(f"{str(path)!r} is not a readable ONNX file: {exc}") from exc
    initializers = {i.name for i in model.graph.initializer}
    shapes = {}
    for value in model.graph.input:
        if value.name not in initializers:
            dims = value.type.tensor_type.shape.dim
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    return LoadedModel(model, "onnx", path, input_names=list(shapes), input_shapes=shapes)


def _load_openvino(path: Path) -> LoadedModel:
    ov = _need("openvino", "pip install nncompress[openvino]")
    if not path.with_suffix(".bin").exists():
        raise InvalidPathError(f"OpenVINO IR {str(path)!r} needs its weights file {str(path.with_suffix('.bin'))!r}")
    try:
        model = ov.Core().read_model(str(path))
    except Exception as exc:  # noqa: BLE001 (OpenVINO raises RuntimeError subclasses)
        raise UnsupportedModelError(f"{str(path)!r} is not a readable OpenVINO IR: {exc}") from exc
    shapes = {}
    for port in model.inputs:
        shape = port.get_partial_shape()
        name = port.get_any_name()
        shapes[name] = tuple(d.get_length() if d.is_static else None for d in shape) if shape.rank.is_static else ()
    return LoadedModel(model, "openvino", path, input_names=list(shapes), input_shapes=shapes)


def _load_hf(folder: Path, auto_class: str | None) -> LoadedModel:
    config_path = folder / "config.json"
    if not config_path.exists():
        raise InvalidPathError(f"folder {str(folder)!r} has no config.json, so it is not a Hugging Face model folder; "
                               f"give {MODEL_KINDS}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never reach for the hub
    transformers = _need("transformers", "pip install transformers")
    if auto_class is None:
        architectures = json.loads(config_path.read_text()).get("architectures") or []
        causal = any(a.endswith("ForCausalLM") for a in architectures)
        auto_class = "AutoModelForCausalLM" if causal else "AutoModel"
    if not auto_class.startswith("AutoModel") or not hasattr(transformers, auto_class):
        raise ValidationError(f"--hf-class must be a transformers AutoModel* class such as AutoModel or "
                              f"AutoModelForCausalLM; got {auto_class!r}")
    torch = _need("torch", "pip install nncompress[torch]")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # nncompress shows its own progress
    try:
        model = getattr(transformers, auto_class).from_pretrained(
            folder, local_files_only=True, dtype=torch.float32, attn_implementation="eager")
    except (OSError, ValueError) as exc:
        raise UnsupportedModelError(f"{auto_class} cannot load {str(folder)!r}: {exc}") from exc
    return LoadedModel(model.eval(), "torch", folder, hf_folder=folder, input_names=_forward_names(model))


def _load_checkpoint(path: Path, args: argparse.Namespace) -> LoadedModel:
    torch = _need("torch", "pip install nncompress[torch]")
    if args.model_class:
        cls = resolve_reference(args.model_class, "--model-class")
        try:
            kwargs = json.loads(args.model_args)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"--model-args must be a JSON object; got {args.model_args!r} ({exc})") from None
        if not isinstance(kwargs, dict):
            raise ValidationError(f"--model-args must be a JSON object; got {args.model_args!r}")
        model = cls(**kwargs)
        if not isinstance(model, torch.nn.Module):
            raise UnsupportedModelError(f"--model-class {args.model_class!r} made a {type(model).__name__}, "
                                        "not a torch.nn.Module")
        model.load_state_dict(_state_dict(torch.load(path, map_location="cpu", weights_only=True), path))
    elif args.unsafe_pickle:
        model = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(model, torch.nn.Module):
            raise UnsupportedModelError(f"{str(path)!r} holds a {type(model).__name__}, not a pickled torch.nn.Module; "
                                        "for a state_dict give --model-class pkg.module:ClassName")
    else:
        raise ValidationError(
            f"checkpoint {str(path)!r} needs --model-class pkg.module:ClassName (it then holds a state_dict, read with "
            "torch.load(weights_only=True)); a file that pickles a whole nn.Module needs --unsafe-pickle, because "
            "torch.load(weights_only=False) runs code from the file")
    return LoadedModel(model.eval(), "torch", path, input_names=_forward_names(model))


def _state_dict(obj: Any, path: Path) -> dict:
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key]
    if isinstance(obj, dict):
        return obj
    raise UnsupportedModelError(f"{str(path)!r} holds a {type(obj).__name__}, not a state_dict "
                                "(a dict of tensors, or one under 'state_dict' / 'model_state_dict' / 'model')")


def _forward_names(model: Any) -> list[str]:
    params = inspect.signature(model.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
