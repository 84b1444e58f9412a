"""Helpers shared by the subcommands: ``module:attr`` references, number lists, option groups."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from nncompress.errors import InvalidPathError, ValidationError
from nncompress.scopes import IgnoredScope


def resolve_reference(ref: str, what: str) -> Any:
    """The object named by ``pkg.module:attr`` or ``path/to/file.py:attr`` (``what`` names the option)."""
    module_part, sep, attr = ref.rpartition(":")
    if not sep or not module_part or not attr or not attr.replace("_", "a").replace(".", "a").isalnum():
        raise ValidationError(f"{what} must look like 'package.module:Name' or 'path/to/file.py:Name'; got {ref!r}")
    if module_part.endswith(".py"):
        module = _load_file(Path(module_part), what)
    else:
        try:
            module = importlib.import_module(module_part)
        except ImportError as exc:
            raise ValidationError(f"{what}: cannot import module {module_part!r} ({exc}); "
                                  "put its folder on PYTHONPATH or give a file path like path/to/file.py:Name") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in dir(module) if not n.startswith("_"))
            raise ValidationError(f"{what}: {module_part!r} has no attribute {attr!r}; it defines: {', '.join(names)}")
        obj = getattr(obj, part)
    return obj


def _load_file(path: Path, what: str) -> Any:
    if not path.is_file():
        raise InvalidPathError(f"{what}: file {str(path)!r} does not exist")
    name = f"_nncompress_cli_{path.stem}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    sys.path.insert(0, str(path.resolve().parent))  # the script may import its neighbours
    spec.loader.exec_module(module)
    return module


def float_list(text: str) -> list[float]:
    """``"0.5"`` or ``"123.7,116.3,103.5"`` as floats (argparse type)."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, e.g. 0.5 or 0.485,0.456,0.406; "
                                         f"got {text!r}") from None


def size_pair(text: str) -> tuple[int, int]:
    """``"224"`` or ``"224,192"`` (height, width) as a pair of positive ints (argparse type)."""
    try:
        values = [int(v) for v in text.replace("x", ",").split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected a size like 224 or 224,192 (height,width); got {text!r}")
    return values[0], values[1]


def add_ignored_scope(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ignored scope (operations to leave uncompressed)")
    group.add_argument("--ignored-name", action="append", default=[], metavar="NAME",
                       help="an operation name as the report lists it (repeatable)")
    group.add_argument("--ignored-pattern", action="append", default=[], metavar="REGEX",
                       help="a regular expression matched against operation names (repeatable)")
    group.add_argument("--ignored-type", action="append", default=[], metavar="TYPE",
                       help="a backend operation type, e.g. MatMul (repeatable)")
    group.add_argument("--no-validate-ignored-scope", action="store_true",
                       help="do not fail when a name, pattern or type matches nothing")


def ignored_scope(args: argparse.Namespace) -> IgnoredScope | None:
    if not (args.ignored_name or args.ignored_pattern or args.ignored_type):
        return None
    return IgnoredScope(names=list(args.ignored_name), patterns=list(args.ignored_pattern),
                        types=list(args.ignored_type), validate=not args.no_validate_ignored_scope)


def add_quantize_options(parser: argparse.ArgumentParser) -> None:
    """Options of ``quantize`` shared with ``accuracy-control`` (values are checked by the API)."""
    group = parser.add_argument_group("quantization")
    group.add_argument("--preset", help="performance (symmetric) or mixed (asymmetric activations)")
    group.add_argument("--target-device", default="ANY", help="ANY, CPU, GPU, NPU, CPU_SPR (default ANY)")
    group.add_argument("--model-type", help="'transformer' for transformer models (SmoothQuant, float attention)")
    group.add_argument("--subset-size", type=int, default=300, help="calibration items used (default 300)")
    group.add_argument("--no-fast-bias-correction", action="store_true", help="turn fast bias correction off")
    add_ignored_scope(parser)


def quantize_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "preset": args.preset, "target_device": args.target_device, "model_type": args.model_type,
        "subset_size": args.subset_size, "fast_bias_correction": not args.no_fast_bias_correction,
        "ignored_scope": ignored_scope(args),
    }


def enum_values(enum_cls: Any) -> str:
    return ", ".join(m.value for m in enum_cls)
