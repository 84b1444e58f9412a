"""The QAT quantizer setup: where each quantizer goes and how it is configured, as JSON-able data.

Placement is post-training quantization's (``find_quantization_setup`` with the device rules); this
module turns the config's ``QuantizationSpec`` (modes, bits, per-channel, scopes, ``scope_overrides``,
overflow fix, range-init lists) into one ``QuantizerConfig`` per quantizer. The list is the builder
state saved in checkpoints, so a resumed model gets exactly the same quantizers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from nncompress.algorithms.quantization.placement import PlacementOptions, find_quantization_setup
from nncompress.errors import UnsupportedBackendError, ValidationError
from nncompress.graph.ir import Graph
from nncompress.graph.ops import OpKind
from nncompress.hardware.rules import ASYM, SYM, Trait, rule_for, rules_for_device
from nncompress.training.quantization.scopes import check_scopes, matching_nodes, scope_matches

ACTIVATIONS, WEIGHTS = "activations", "weights"
_HALF_RANGE_DEVICES = ("CPU", "ANY")


@dataclass
class RangeInit:
    type: str = "mixed_min_max"
    num_init_samples: int = 256
    min_percentile: float = 0.1
    max_percentile: float = 99.9


@dataclass
class QuantizerConfig:
    """One trainable quantizer (``make_qat_quantizer`` arguments plus where it goes)."""

    name: str
    group: str  # "activations" | "weights"
    mode: str
    bits: int
    signed: bool | None
    per_channel: bool
    axis: int | None
    channels: int | None
    ndim: int
    narrow_range: bool
    half_range: bool
    logarithm_scale: bool
    nodes: list[str]  # weights: [node]; activations: [producer, *quantized ops]
    tensor: list | None = None  # activations: [node, port]
    consumers: list | None = None  # activations: [[node, port], ...] or None (every consumer)
    port: int | None = None  # weights: the constant input port
    unified: int | None = None
    enabled: bool = True
    range_init: RangeInit = field(default_factory=RangeInit)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantizerConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValidationError(
                f"a saved quantizer setup has unknown fields {sorted(unknown)}; valid: {sorted(names)}"
            )
        data = dict(data)
        data["range_init"] = RangeInit(**data.get("range_init", {}))
        return cls(**data)


def placement_options(spec: Any, capabilities: Any) -> PlacementOptions:
    device = spec.target_device
    if device == "CPU_SPR":
        raise UnsupportedBackendError(
            "target_device 'CPU_SPR' is not supported by PyTorch quantization-aware training (as in NNCF); "
            "use 'CPU', 'ANY', 'GPU', 'NPU' or 'TRIAL'"
        )
    rules = rules_for_device("ANY" if device == "TRIAL" else device)
    fix = spec.overflow_fix if device in _HALF_RANGE_DEVICES else "disable"
    return PlacementOptions(
        rules=rules,
        quantize_outputs=spec.quantize_outputs,
        overflow_fix_all=fix == "enable",
        overflow_fix_first_layer=fix == "first_layer_only",
        fuse_linear_arithmetic=capabilities.fuse_linear_arithmetic,
        per_channel_activations=False,
    )


def build_setup(graph: Graph, names: dict[str, tuple[str, ...]], spec: Any, capabilities: Any) -> list[QuantizerConfig]:
    """The quantizers for ``graph`` under ``spec`` (``names``: each node's scope names)."""
    _refuse_unimplemented(spec)
    _validate_all_scopes(spec, names)
    ignored = {n: f"ignored scope {s!r}" for n, s in matching_nodes(spec.ignored_scopes, names).items()}
    options = placement_options(spec, capabilities)
    if spec.target_scopes:  # ops outside the targets take no quantizer; quantizers still move through them
        targets = matching_nodes(spec.target_scopes, names)
        movable = (Trait.AGNOSTIC, Trait.CONCAT)
        ignored.update({
            n.name: "not in target_scopes" for n in graph
            if n.name not in targets and n.name not in ignored and rule_for(n.kind, options.rules).trait not in movable
        })
    setup = find_quantization_setup(graph, ignored, options)
    configs: list[QuantizerConfig] = []
    for q in setup.activations:
        if not spec.quantize_inputs and graph.node(q.tensor.node).kind is OpKind.INPUT:
            continue
        nodes = [q.tensor.node, *q.targets]
        if not _in_group_scope(spec.activations, nodes, names):
            continue
        shape = graph.tensor_shape(q.tensor) or ()
        configs.append(_activation_config(q, nodes, shape, spec))
    for w in setup.weights:
        if not _in_group_scope(spec.weights, [w.node], names):
            continue
        configs.append(_weight_config(w, graph.node(w.node).weight.shape, spec))
    for config in configs:
        _apply_overrides(config, spec, names)
        config.range_init = _range_init_for(config, spec.range_init, names)
    if spec.precision is not None and spec.precision["type"] == "manual":
        from nncompress.training.quantization.precision import apply_manual

        apply_manual(configs, spec.precision, names, spec.target_device)
    for config in configs:
        finish_config(config)
    return configs


def _refuse_unimplemented(spec: Any) -> None:
    if spec.precision is not None and spec.precision["type"] not in ("hawq", "manual"):
        raise UnsupportedBackendError(
            f"initializer.precision type {spec.precision['type']!r} is not implemented yet; use 'hawq' or 'manual', "
            "or remove it to train with the bits given under weights/activations"
        )
    if spec.activations.unified_scale_ops:
        raise UnsupportedBackendError(
            "activations.unified_scale_ops is not implemented yet; nncompress already shares one quantizer among "
            "the inputs of Concat (remove the key)"
        )


def _validate_all_scopes(spec: Any, names: dict) -> None:
    if not spec.validate_scopes:
        return
    check_scopes(spec.ignored_scopes, names, "ignored_scopes")
    check_scopes(spec.target_scopes, names, "target_scopes")
    for group in (ACTIVATIONS, WEIGHTS):
        section = getattr(spec, group)
        check_scopes(section.ignored_scopes, names, f"{group}.ignored_scopes")
        check_scopes(section.target_scopes, names, f"{group}.target_scopes")
        check_scopes((spec.scope_overrides or {}).get(group, {}), names, f"scope_overrides.{group}")
    for index, ri in enumerate(spec.range_init):
        check_scopes(ri.target_scopes, names, f"initializer.range[{index}].target_scopes")
        check_scopes(ri.ignored_scopes, names, f"initializer.range[{index}].ignored_scopes")


def _matches_any(scopes, nodes: list[str], names: dict) -> bool:
    return any(scope_matches(s, names[n]) for s in scopes for n in nodes if n in names)


def _in_group_scope(group_spec: Any, nodes: list[str], names: dict) -> bool:
    if _matches_any(group_spec.ignored_scopes, nodes, names):
        return False
    return not group_spec.target_scopes or _matches_any(group_spec.target_scopes, nodes, names)


def _activation_config(q, nodes: list[str], shape: tuple, spec: Any) -> QuantizerConfig:
    act = spec.activations
    mode = act.mode  # the spec applies the preset ("mixed": asymmetric unless the config sets a mode)
    if mode not in q.modes:  # the device rules allow only the other mode here (e.g. attention Q/K: symmetric)
        mode = SYM if SYM in q.modes else ASYM
    per_channel = bool(act.per_channel) and len(shape) >= 3 and q.unified is None
    has_channels = len(shape) >= 2 and isinstance(shape[1], int)
    return QuantizerConfig(
        name=q.name, group=ACTIVATIONS, mode=mode, bits=act.bits, signed=act.signed, per_channel=per_channel,
        axis=1 if has_channels else None, channels=shape[1] if has_channels else None, ndim=len(shape),
        narrow_range=False, half_range=False, logarithm_scale=act.logarithm_scale, nodes=nodes,
        tensor=[q.tensor.node, q.tensor.port],
        consumers=None if q.consumers is None else [[c.node, c.port] for c in q.consumers],
        unified=q.unified,
    )


def _weight_config(w, shape: tuple, spec: Any) -> QuantizerConfig:
    wspec = spec.weights
    per_channel = wspec.per_channel
    if per_channel is None:  # unset: the hardware config's first choice (per-channel) unless TRIAL
        per_channel = spec.target_device != "TRIAL"
    axis = w.axis % len(shape)
    return QuantizerConfig(
        name=w.name, group=WEIGHTS, mode=wspec.mode, bits=wspec.bits,
        signed=True if wspec.mode == SYM else wspec.signed, per_channel=bool(per_channel),
        axis=axis, channels=shape[axis], ndim=len(shape),
        narrow_range=False, half_range=w.half_range, logarithm_scale=wspec.logarithm_scale, nodes=[w.node],
        port=w.port,
    )


_OVERRIDABLE = {"mode", "bits", "signed", "per_channel", "logarithm_scale"}


def _apply_overrides(config: QuantizerConfig, spec: Any, names: dict) -> None:
    for scope, override in ((spec.scope_overrides or {}).get(config.group) or {}).items():
        if not _matches_any([scope], config.nodes[:1] if config.group == WEIGHTS else config.nodes, names):
            continue
        unknown = set(override) - _OVERRIDABLE - {"initializer"}
        if unknown:
            raise ValidationError(
                f"scope_overrides.{config.group}[{scope!r}] has unsupported keys {sorted(unknown)}; valid: "
                f"{sorted(_OVERRIDABLE | {'initializer'})}"
            )
        for key in _OVERRIDABLE & set(override):
            setattr(config, key, override[key])
        if "per_channel" in override:
            wanted = bool(override["per_channel"])
            fits = config.channels is not None and (config.group == WEIGHTS or config.ndim >= 3)
            config.per_channel = wanted and fits
        rng = (override.get("initializer") or {}).get("range")
        if rng:
            config.range_init = _range_init(rng)
            config.__dict__["_range_overridden"] = True


def _range_init(section: dict) -> RangeInit:
    params = section.get("params") or {}
    return RangeInit(
        type=section.get("type", "mixed_min_max"), num_init_samples=int(section.get("num_init_samples", 256)),
        min_percentile=float(params.get("min_percentile", 0.1)),
        max_percentile=float(params.get("max_percentile", 99.9)),
    )


def _range_init_for(config: QuantizerConfig, specs, names: dict) -> RangeInit:
    """The first range-init entry whose group and scopes select ``config`` (an override wins)."""
    if config.__dict__.pop("_range_overridden", False):
        return config.range_init
    for ri in specs:
        if ri.target_quantizer_group not in (None, config.group):
            continue
        if ri.target_scopes and not _matches_any(ri.target_scopes, config.nodes, names):
            continue
        if ri.ignored_scopes and _matches_any(ri.ignored_scopes, config.nodes, names):
            continue
        return RangeInit(ri.type, ri.num_init_samples, ri.min_percentile, ri.max_percentile)
    if specs:
        raise ValidationError(
            f"no initializer.range entry selects the {config.group} quantizer {config.name!r}; add an entry "
            "without target_scopes or with a matching one"
        )
    return RangeInit()


def finish_config(config: QuantizerConfig) -> None:
    """Fields that follow from the others: axis/channels for per-channel, half and narrow range."""
    if config.unified is not None:
        config.per_channel = False  # one range shared by the group
    if not config.per_channel:
        config.axis, config.channels = None, None
    if config.mode == SYM and config.group == WEIGHTS:
        config.signed = True if config.signed is None else config.signed
    config.half_range = bool(config.half_range and config.bits == 8 and config.group == WEIGHTS)
    # NNCF: narrow range only for 8-bit symmetric weights without half range; activations never
    config.narrow_range = config.group == WEIGHTS and config.mode == SYM and config.bits == 8 and not config.half_range
