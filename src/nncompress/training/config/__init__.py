"""The NNCF 2.x training-time compression config: ``NNCFConfig`` (alias ``Config``).

No torch import at module level: reading and validating a config needs only the standard library
and ``jsonschema``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from nncompress.errors import ConfigError
from nncompress.training.config import jsonc, schema
from nncompress.training.config import spec as _spec
from nncompress.training.config.spec import (
    AlgorithmSpec,
    InputInfo,
    QuantizationSpec,
    QuantizerGroupSpec,
    RangeInitSpec,
    StagedParams,
)


class NNCFConfig(dict):
    """A validated config: the parsed JSON as a dict, plus registered "extra structs" (init args)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._extra_structs: dict[type, Any] = {}

    @classmethod
    def from_dict(cls, nncf_dict: dict) -> NNCFConfig:
        """A validated config from a dict; the caller's dict is deep-copied, never modified."""
        data = copy.deepcopy(dict(nncf_dict)) if isinstance(nncf_dict, dict) else nncf_dict
        cls.validate(data)
        return cls(data)

    @classmethod
    def from_json(cls, path: str | Path) -> NNCFConfig:
        """A validated config from a JSON file; ``//`` and ``/* */`` comments and trailing commas allowed."""
        data = jsonc.load(path)
        try:
            cls.validate(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        return cls(data)

    @staticmethod
    def validate(loaded_json: dict) -> None:
        """Raise ``ConfigError`` naming the bad key path; also checks scopes' regexes and percentile order."""
        schema.validate_config(loaded_json)
        _spec.scopes(loaded_json.get("ignored_scopes"), "ignored_scopes")
        _spec.scopes(loaded_json.get("target_scopes"), "target_scopes")
        _spec.algorithm_specs(loaded_json)

    @staticmethod
    def schema() -> dict:
        """The JSON Schema document the config is validated against."""
        return copy.deepcopy(schema.load_schema())

    def __deepcopy__(self, memo: dict) -> NNCFConfig:
        # Registered structs hold data loaders: share them instead of copying datasets.
        new = type(self)(copy.deepcopy(dict(self), memo))
        new._extra_structs = dict(self._structs())
        return new

    def copy(self) -> NNCFConfig:
        new = type(self)(self)
        new._extra_structs = dict(self._structs())
        return new

    def _structs(self) -> dict[type, Any]:
        # Unpickling a dict subclass skips __init__.
        if "_extra_structs" not in self.__dict__:
            self._extra_structs = {}
        return self._extra_structs

    def register_extra_structs(self, struct_list: list) -> None:
        """Attach init-args structs (one per type; a later one replaces an earlier one of its type)."""
        for struct in struct_list:
            self._structs()[type(struct)] = struct

    def get_extra_struct(self, struct_cls: type) -> Any:
        """The registered struct of type ``struct_cls``; ``ConfigError`` saying how to register it if absent."""
        structs = self._structs()
        if struct_cls in structs:
            return structs[struct_cls]
        for struct in structs.values():
            if isinstance(struct, struct_cls):
                return struct
        registered = ", ".join(sorted(t.__name__ for t in structs)) or "none"
        raise ConfigError(
            f"no {struct_cls.__name__} is registered on the config (registered: {registered}); call "
            "nncompress.torch.register_default_init_args(config, train_loader, ...) or "
            f"config.register_extra_structs([{struct_cls.__name__}(...)]) first"
        )

    def has_extra_struct(self, struct_cls: type) -> bool:
        return any(isinstance(s, struct_cls) for s in self._structs().values())

    def get_all_extra_structs(self) -> list:
        return list(self._structs().values())

    def get_redefinable_global_param_value_for_algo(self, param_name: str, algo_name: str) -> Any:
        """``param_name`` of algorithm ``algo_name``: its own value, else the root's, else None."""
        for _, section in schema.iter_algorithm_sections(self):
            if section.get("algorithm") == algo_name and param_name in section:
                return section[param_name]
        return self.get(param_name)

    def algorithm_specs(self) -> list[QuantizationSpec | AlgorithmSpec]:
        """The ``compression`` entries in order (an object counts as one), defaults filled in."""
        schema.validate_config(self)
        return _spec.algorithm_specs(self)

    def input_infos(self) -> list[InputInfo]:
        """``input_info`` as specs; [] when absent."""
        schema.validate_config(self)
        return _spec.input_infos(self)

    def target_device(self) -> str:
        return self.get("target_device", "ANY")


Config = NNCFConfig

__all__ = [
    "AlgorithmSpec",
    "Config",
    "ConfigError",
    "InputInfo",
    "NNCFConfig",
    "QuantizationSpec",
    "QuantizerGroupSpec",
    "RangeInitSpec",
    "StagedParams",
]
