"""Write a compressed model where ``--output`` says: the suffix picks the format."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import nncompress
from nncompress.cli.models import CHECKPOINT_SUFFIXES, LoadedModel
from nncompress.errors import InvalidPathError, ValidationError

FORMATS = {".onnx": "onnx", ".xml": "openvino"}
OUTPUT_KINDS = ".onnx (ONNX), .xml (OpenVINO IR), a folder (Hugging Face input) or .pt/.pth (PyTorch state_dict)"


def check_output(loaded: LoadedModel, output: str, weights_only: bool) -> Path:
    """``output`` as a Path, checked before any work starts (``weights_only``: compress-weights)."""
    path = Path(output)
    suffix = path.suffix.lower()
    if suffix in FORMATS:
        pass
    elif suffix in (".pt", ".pth"):
        if loaded.backend != "torch" or not weights_only:
            raise ValidationError(f"--output {output!r}: a PyTorch state_dict is written for compress-weights of "
                                  "PyTorch models only; write .onnx or .xml instead")
    elif suffix == "":
        if loaded.hf_folder is None:
            raise ValidationError(f"--output {output!r} has no suffix; a folder is written for Hugging Face input "
                                  f"models only. Give {OUTPUT_KINDS}")
        if not weights_only:
            raise ValidationError(f"--output {output!r}: a quantized PyTorch model keeps activation quantizers that a "
                                  "Hugging Face folder cannot hold; write .onnx or .xml instead")
    else:
        raise ValidationError(f"--output {output!r} has suffix {suffix!r}; give {OUTPUT_KINDS}")
    if path.resolve() == loaded.path.resolve():
        raise ValidationError(f"--output {output!r} is the input model; the input model is never overwritten")
    if not path.parent.exists():
        raise InvalidPathError(f"--output {output!r}: folder {str(path.parent)!r} does not exist")
    return path


def dynamic_axes(example: Any) -> dict | None:
    """Batch and sequence axes of token inputs stay dynamic in an export (other inputs: batch only)."""
    if isinstance(example, dict) and all(getattr(v, "ndim", 0) == 2 for v in example.values()):
        return {name: {0: "batch", 1: "sequence"} for name in example}
    return None


def save_result(loaded: LoadedModel, result: Any, path: Path, example: Any) -> Path:
    """Write ``result`` (the compressed ``loaded.model``) to ``path``; returns what was written."""
    suffix = path.suffix.lower()
    if suffix in FORMATS:
        extra = {"example_input": example, "dynamic_axes": dynamic_axes(example)} if loaded.backend == "torch" else {}
        return nncompress.export(result, path, format=FORMATS[suffix], **extra)
    stripped = nncompress.strip(result, strip_format=nncompress.StripFormat.IN_PLACE)
    if suffix in CHECKPOINT_SUFFIXES:
        import torch

        torch.save(stripped.state_dict(), path)
        return path
    stripped.save_pretrained(path)
    _copy_tokenizer(loaded.hf_folder, path)
    return path


def _copy_tokenizer(source: Path, target: Path) -> None:
    """Files beside the weights that a Hugging Face folder needs to be used again (tokenizer, generation)."""
    for item in source.iterdir():
        if item.is_file() and (target / item.name).exists() is False and _is_side_file(item.name):
            shutil.copy2(item, target / item.name)


def _is_side_file(name: str) -> bool:
    weights = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt")
    return not name.endswith(weights) and not name.startswith(".") and name != "model.safetensors.index.json"
