"""The ``filter_pruning`` config section as a validated, typed object (NNCF 2.x keys and defaults)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from nncompress.errors import UnsupportedBackendError, ValidationError, one_of
from nncompress.training.sparsity.schedules import PRUNING_SCHEDULES, exponential_with_bias

IMPORTANCE = {"L2": "l2", "L1": "l1", "geometric_median": "geometric_median"}
DEFAULT_BN_SAMPLES = 2000


@dataclass(frozen=True)
class PruningParams:
    """What the section asks for. ``flops`` True: ``target`` is a FLOPs reduction, else a filter level."""

    init: float = 0.0
    target: float = 0.5
    flops: bool = False
    schedule: str = "exponential"
    num_init_steps: int = 0
    pruning_steps: int = 100
    importance: str = "l2"
    all_weights: bool = False
    prune_first_conv: bool = False
    prune_downsample_convs: bool = False
    prune_batch_norms: bool = True
    ignored_scopes: tuple[str, ...] = ()
    target_scopes: tuple[str, ...] = ()
    validate_scopes: bool = True
    bn_samples: int = 0  # initializer.batchnorm_adaptation.num_bn_adaptation_samples (0: no adaptation)

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["ignored_scopes"], result["target_scopes"] = list(self.ignored_scopes), list(self.target_scopes)
        return result


def parse_params(section: dict) -> PruningParams:
    """``PruningParams`` of a (schema-validated) ``filter_pruning`` section; refuses what is not built."""
    params = dict(section.get("params") or {})
    if params.get("interlayer_ranking_type", "unweighted_ranking") != "unweighted_ranking":
        raise UnsupportedBackendError(
            "filter_pruning: interlayer_ranking_type 'learned_ranking' (LeGR) is not implemented; use "
            "'unweighted_ranking' (the default)"
        )
    for key in ("legr_params", "save_ranking_coeffs_path", "load_ranking_coeffs_path"):
        if key in params:
            raise UnsupportedBackendError(f"filter_pruning: {key!r} belongs to LeGR, which is not implemented")
    if "pruning_target" in params and "pruning_flops_target" in params:
        raise ValidationError("filter_pruning: set one of 'pruning_target' and 'pruning_flops_target', not both")
    flops = "pruning_flops_target" in params
    target = float(params["pruning_flops_target"] if flops else params.get("pruning_target", 0.5))
    init = float(section.get("pruning_init", 0.0))
    schedule = params.get("schedule", "exponential")
    if schedule not in PRUNING_SCHEDULES:
        raise one_of(schedule, PRUNING_SCHEDULES, "filter_pruning schedule")
    importance = params.get("filter_importance", params.get("weight_importance", "L2"))
    if importance not in IMPORTANCE:
        raise one_of(importance, tuple(IMPORTANCE), "filter_importance")
    if not 0.0 <= init <= target < 1.0:
        key = "pruning_flops_target" if flops else "pruning_target"
        raise ValidationError(f"filter_pruning: needs 0 <= pruning_init ({init}) <= {key} ({target}) < 1")
    steps = int(params.get("pruning_steps", 100))
    if schedule == "exponential_with_bias" and steps >= 2 and target > 0:
        exponential_with_bias(init, target, steps - 1)  # refuses an init the curve cannot start from
    bn = (section.get("initializer") or {}).get("batchnorm_adaptation")
    return PruningParams(
        init=init, target=target, flops=flops, schedule=schedule,
        num_init_steps=int(params.get("num_init_steps", 0)), pruning_steps=steps,
        importance=IMPORTANCE[importance], all_weights=bool(params.get("all_weights", False)),
        prune_first_conv=bool(params.get("prune_first_conv", False)),
        prune_downsample_convs=bool(params.get("prune_downsample_convs", False)),
        prune_batch_norms=bool(params.get("prune_batch_norms", True)),
        ignored_scopes=_scopes(section.get("ignored_scopes")), target_scopes=_scopes(section.get("target_scopes")),
        validate_scopes=bool(section.get("validate_scopes", True)),
        bn_samples=0 if bn is None else int(bn.get("num_bn_adaptation_samples", DEFAULT_BN_SAMPLES)),
    )


def _scopes(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value or ())
