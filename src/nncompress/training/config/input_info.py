"""Example model inputs built from ``input_info`` (for graph capture and export)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nncompress.errors import ConfigError
from nncompress.training.config.spec import InputInfo

_DTYPES = {
    "float": "float32", "float32": "float32", "float16": "float16", "half": "float16", "double": "float64",
    "float64": "float64", "bfloat16": "bfloat16", "long": "int64", "int64": "int64", "int": "int32",
    "int32": "int32", "short": "int16", "int16": "int16", "int8": "int8", "uint8": "uint8", "bool": "bool",
}  # fmt: skip
_FILLERS = ("ones", "zeros", "random")
RANDOM_SEED = 0  # "random" inputs are the same on every call and every rank


def create_example_input(infos: Sequence[InputInfo | dict], device: Any = None) -> tuple[tuple, dict]:
    """(positional args, keyword args) of torch tensors described by ``infos``.

    ``random`` fills floats uniformly in [0, 1), integers with 0 or 1 and bools with random bits, from a
    generator seeded with ``RANDOM_SEED``, so the inputs are reproducible.
    """
    import torch

    if not infos:
        raise ConfigError(
            "input_info is empty: set input_info in the config (e.g. {'sample_size': [1, 3, 224, 224]}) "
            "so that example inputs can be built"
        )
    generator = torch.Generator().manual_seed(RANDOM_SEED)
    args: list = []
    kwargs: dict = {}
    for i, info in enumerate(infos):
        path = f"input_info[{i}]" if len(infos) > 1 else "input_info"
        info = _as_info(info, path)
        tensor = _tensor(info, path, generator, torch)
        if device is not None:
            tensor = tensor.to(device)
        if info.keyword is None:
            args.append(tensor)
        elif info.keyword in kwargs:
            raise ConfigError(f"{path}.keyword: {info.keyword!r} is used by more than one input; keywords must differ")
        else:
            kwargs[info.keyword] = tensor
    return tuple(args), kwargs


def _as_info(info: InputInfo | dict, path: str) -> InputInfo:
    if isinstance(info, InputInfo):
        return info
    if isinstance(info, dict):
        from nncompress.training.config.schema import validate_definition

        validate_definition("input_info_entry", info, path)
        return InputInfo(tuple(info["sample_size"]), info.get("type", "float"), info.get("filler", "ones"),
                         info.get("keyword"))  # fmt: skip
    raise ConfigError(f"{path}: must be an InputInfo or a dict with sample_size; got {type(info).__name__}")


def _tensor(info: InputInfo, path: str, generator, torch):
    shape = tuple(info.sample_size)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
        raise ConfigError(f"{path}.sample_size: must be a list of positive integers; got {list(info.sample_size)!r}")
    if info.type not in _DTYPES:
        raise ConfigError(f"{path}.type: {info.type!r} is not valid; valid types: {', '.join(map(repr, _DTYPES))}")
    if info.filler not in _FILLERS:
        raise ConfigError(
            f"{path}.filler: {info.filler!r} is not valid; valid fillers: {', '.join(map(repr, _FILLERS))}"
        )
    dtype = getattr(torch, _DTYPES[info.type])
    if info.filler == "ones":
        return torch.ones(shape, dtype=dtype)
    if info.filler == "zeros":
        return torch.zeros(shape, dtype=dtype)
    if dtype.is_floating_point:
        return torch.rand(shape, generator=generator).to(dtype)
    return torch.randint(0, 2, shape, generator=generator).to(dtype)
