"""Frozen specs the training builders read: a validated config section with every default filled in.

Defaults follow NNCF 2.x (``nncf/config/schemata/defaults.py``): range init ``mixed_min_max`` over 256
samples, percentiles 0.1/99.9, BatchNorm adaptation over 2000 samples when its section is present,
preset ``performance``, inputs quantized, outputs not, overflow fix ``enable``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from nncompress.errors import ConfigError

# Root keys that apply to every algorithm that does not set its own (NNCF's "redefinable global params").
REDEFINABLE_GLOBAL_PARAMS = ("ignored_scopes", "target_scopes", "validate_scopes", "compression_lr_multiplier")

PRECISION_DEFAULTS = {
    "hawq": {"bits": [2, 4, 8], "num_data_points": 100, "iter_number": 200, "tolerance": 1e-4,
             "compression_ratio": 1.5, "dump_init_precision_data": False, "bitwidth_assignment_mode": "liberal"},
    "autoq": {"bits": [2, 4, 8], "iter_number": 0, "compression_ratio": 0.15, "eval_subset_ratio": 1.0,
              "warmup_iter_number": 20, "dump_init_precision_data": False, "bitwidth_assignment_mode": "liberal"},
    "manual": {"bitwidth_per_scope": [], "bitwidth_assignment_mode": "liberal"},
}  # fmt: skip


@dataclass(frozen=True)
class InputInfo:
    """One dummy model input: shape (batch included), element type, filler, keyword (None: positional)."""

    sample_size: tuple[int, ...]
    type: str = "float"
    filler: str = "ones"
    keyword: str | None = None


@dataclass(frozen=True)
class RangeInitSpec:
    """One ``initializer.range`` entry; ``target_quantizer_group`` None means both groups."""

    type: str = "mixed_min_max"
    num_init_samples: int = 256
    min_percentile: float = 0.1
    max_percentile: float = 99.9
    target_scopes: tuple[str, ...] = ()
    ignored_scopes: tuple[str, ...] = ()
    target_quantizer_group: str | None = None


@dataclass(frozen=True)
class QuantizerGroupSpec:
    """``weights`` or ``activations`` of a quantization section; ``signed`` None: from init statistics;
    ``per_channel`` None (unset): per channel for weights (the hardware config's first choice; per tensor on
    TRIAL), per tensor for activations."""

    mode: str = "symmetric"
    bits: int = 8
    signed: bool | None = None
    per_channel: bool | None = None
    logarithm_scale: bool = False
    target_scopes: tuple = ()
    ignored_scopes: tuple = ()
    unified_scale_ops: tuple[tuple[str, ...], ...] = ()  # activations only


@dataclass(frozen=True)
class StagedParams:
    """``params`` of a quantization/binarization section: its presence selects the staged scheduler."""

    batch_multiplier: int = 1
    activations_quant_start_epoch: int = 1
    weights_quant_start_epoch: int = 1
    lr_poly_drop_start_epoch: int | None = None
    lr_poly_drop_duration_epochs: int = 30
    disable_wd_start_epoch: int | None = None
    base_lr: float = 1e-3
    base_wd: float = 1e-5


@dataclass(frozen=True)
class QuantizationSpec:
    """A ``quantization`` section with its defaults filled in."""

    weights: QuantizerGroupSpec
    activations: QuantizerGroupSpec
    range_init: tuple[RangeInitSpec, ...]
    num_bn_adaptation_samples: int | None  # None: no batchnorm_adaptation section (NNCF skips it); 0: off
    preset: str = "performance"
    quantize_inputs: bool = True
    quantize_outputs: bool = False
    scope_overrides: dict = field(default_factory=dict)  # {"weights"|"activations": {scope: override dict}}
    overflow_fix: str = "enable"
    staged: StagedParams | None = None
    ignored_scopes: tuple = ()
    target_scopes: tuple = ()
    validate_scopes: bool = True
    target_device: str = "ANY"
    compression_lr_multiplier: float | None = None
    precision: dict | None = None
    export_to_onnx_standard_ops: bool = False
    name: str = "quantization"


@dataclass(frozen=True)
class AlgorithmSpec:
    """Any other algorithm: its validated section (global params applied); builders come later."""

    name: str
    section: dict


def apply_global_params(section: dict, config: dict) -> dict:
    """A copy of ``section`` with the root's redefinable params filled in where the section has none."""
    merged = copy.deepcopy(section)
    for key in REDEFINABLE_GLOBAL_PARAMS:
        if key in config and key not in merged and _accepts(section.get("algorithm"), key):
            merged[key] = copy.deepcopy(config[key])
    return merged


def _accepts(algorithm: str | None, key: str) -> bool:
    from nncompress.training.config.schema import load_schema

    props = load_schema()["$defs"].get(f"algorithm:{algorithm}", {}).get("properties", {})
    return key in props


def scopes(value: Any, path: str) -> tuple[str, ...]:
    """A scope value (string or list) as a tuple; a ``{re}`` pattern must compile."""
    items = (value,) if isinstance(value, str) else tuple(value or ())
    for i, item in enumerate(items):
        if item.startswith("{re}"):
            try:
                re.compile(item[4:])
            except re.error as e:
                where = path if isinstance(value, str) else f"{path}[{i}]"
                raise ConfigError(f"{where}: {item!r} is not a valid regular expression ({e})") from None
    return items


def input_infos(config: dict) -> list[InputInfo]:
    """``input_info`` (object or list) as specs; [] when absent."""
    raw = config.get("input_info")
    if raw is None:
        return []
    entries = [raw] if isinstance(raw, dict) else raw
    return [
        InputInfo(tuple(e["sample_size"]), e.get("type", "float"), e.get("filler", "ones"), e.get("keyword"))
        for e in entries
    ]


def algorithm_specs(config: dict) -> list[QuantizationSpec | AlgorithmSpec]:
    """The ``compression`` entries of a validated config, in order, defaults filled in."""
    from nncompress.training.config.schema import iter_algorithm_sections

    specs: list[QuantizationSpec | AlgorithmSpec] = []
    for path, raw in iter_algorithm_sections(config):
        section = apply_global_params(raw, config)
        if section["algorithm"] == "quantization":
            specs.append(quantization_spec(section, path, config.get("target_device", "ANY")))
        else:
            specs.append(AlgorithmSpec(section["algorithm"], section))
    return specs


def quantization_spec(section: dict, path: str, target_device: str = "ANY") -> QuantizationSpec:
    """A validated ``quantization`` section (global params already applied) as a spec."""
    init = section.get("initializer", {})
    preset = section.get("preset", "performance")
    bn = init.get("batchnorm_adaptation")
    return QuantizationSpec(
        weights=_group(section.get("weights", {}), "symmetric", f"{path}.weights"),
        activations=_group(
            section.get("activations", {}), "asymmetric" if preset == "mixed" else "symmetric", f"{path}.activations"
        ),
        range_init=_range_init(init.get("range"), f"{path}.initializer.range"),
        num_bn_adaptation_samples=None if bn is None else bn.get("num_bn_adaptation_samples", 2000),
        preset=preset,
        quantize_inputs=section.get("quantize_inputs", True),
        quantize_outputs=section.get("quantize_outputs", False),
        scope_overrides=copy.deepcopy(section.get("scope_overrides", {})),
        overflow_fix=section.get("overflow_fix", "enable"),
        staged=StagedParams(**section["params"]) if "params" in section else None,
        ignored_scopes=scopes(section.get("ignored_scopes"), f"{path}.ignored_scopes"),
        target_scopes=scopes(section.get("target_scopes"), f"{path}.target_scopes"),
        validate_scopes=section.get("validate_scopes", True),
        target_device=target_device,
        compression_lr_multiplier=section.get("compression_lr_multiplier"),
        precision=_precision(init.get("precision")),
        export_to_onnx_standard_ops=section.get("export_to_onnx_standard_ops", False),
    )


def _group(raw: dict, default_mode: str, path: str) -> QuantizerGroupSpec:
    return QuantizerGroupSpec(
        mode=raw.get("mode", default_mode),
        bits=raw.get("bits", 8),
        signed=raw.get("signed"),
        per_channel=raw.get("per_channel"),
        logarithm_scale=raw.get("logarithm_scale", False),
        target_scopes=scopes(raw.get("target_scopes"), f"{path}.target_scopes"),
        ignored_scopes=scopes(raw.get("ignored_scopes"), f"{path}.ignored_scopes"),
        unified_scale_ops=tuple(tuple(ops) for ops in raw.get("unified_scale_ops", ())),
    )


def _range_init(raw: dict | list | None, path: str) -> tuple[RangeInitSpec, ...]:
    if raw is None:
        return (RangeInitSpec(),)
    entries = [(path, raw)] if isinstance(raw, dict) else [(f"{path}[{i}]", e) for i, e in enumerate(raw)]
    specs = []
    for where, entry in entries:
        params = entry.get("params", {})
        low, high = params.get("min_percentile", 0.1), params.get("max_percentile", 99.9)
        if low >= high:
            raise ConfigError(
                f"{where}.params: min_percentile ({low}) must be below max_percentile ({high}); "
                "both are percentages in [0, 100]"
            )
        specs.append(
            RangeInitSpec(
                type=entry.get("type", "mixed_min_max"),
                num_init_samples=entry.get("num_init_samples", 256),
                min_percentile=float(low),
                max_percentile=float(high),
                target_scopes=scopes(entry.get("target_scopes"), f"{where}.target_scopes"),
                ignored_scopes=scopes(entry.get("ignored_scopes"), f"{where}.ignored_scopes"),
                target_quantizer_group=entry.get("target_quantizer_group"),
            )
        )
    return tuple(specs)


def _precision(raw: dict | None) -> dict | None:
    if raw is None:
        return None
    return {"type": raw["type"], **copy.deepcopy(PRECISION_DEFAULTS[raw["type"]]), **copy.deepcopy(raw)}
