"""``load_state``: load a (compressed) model's state dict as NNCF's ``nncf.load_state`` does."""

from __future__ import annotations

from typing import Any

from nncompress.errors import ValidationError
from nncompress.log import logger

_PREFIXES = ("module.", "nncf_module.")
# buffers NNCF checkpoints may lack without harm (they are fixed by the quantizer setup)
_OPTIONAL = ("_num_bits", "enabled")


def _clean(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key.replace(".nncf_module.", ".")


def load_state(model: Any, state_dict_to_load: dict[str, Any], is_resume: bool = False,
               keys_to_ignore: list[str] | None = None) -> int:
    """Load ``state_dict_to_load`` into ``model``; returns how many tensors were loaded.

    ``module.`` (DataParallel) and ``nncf_module.`` (NNCF 2.0-2.4 wrapper) prefixes are ignored on both
    sides. With ``is_resume`` every key must match in name and shape (ValidationError listing the
    differences) except the optional quantizer buffers ``_num_bits``/``enabled`` (a warning); otherwise
    mismatches are warned about and the matching tensors loaded.
    """
    if not hasattr(model, "state_dict") or not isinstance(state_dict_to_load, dict):
        raise ValidationError(
            f"load_state needs a torch.nn.Module and a state dict; got {type(model).__name__} and "
            f"{type(state_dict_to_load).__name__}"
        )
    ignore = set(keys_to_ignore or ())
    own = model.state_dict()
    own_by_clean = {_clean(k): k for k in own}
    given = {_clean(k): v for k, v in state_dict_to_load.items() if _clean(k) not in ignore}
    missing = [k for k in own_by_clean if k not in given and k not in ignore]
    unexpected = [k for k in given if k not in own_by_clean]
    shape = [k for k in given if k in own_by_clean and tuple(getattr(given[k], "shape", ())) !=
             tuple(own[own_by_clean[k]].shape)]
    optional_missing = [k for k in missing if k.rsplit(".", 1)[-1] in _OPTIONAL]
    missing = [k for k in missing if k not in optional_missing]
    problems = _describe(missing, unexpected, shape, given, own, own_by_clean)
    if optional_missing:
        logger.warning("load_state: the checkpoint lacks %d optional quantizer buffers (%s); they keep their "
                       "values", len(optional_missing), ", ".join(optional_missing[:5]))
    if problems and is_resume:
        raise ValidationError("load_state(is_resume=True): the checkpoint does not match the model: " + problems)
    if problems:
        logger.warning("load_state: %s; the matching tensors are loaded", problems)
    to_load = {own_by_clean[k]: v for k, v in given.items() if k in own_by_clean and k not in shape}
    model.load_state_dict(to_load, strict=False)
    return len(to_load)


def _describe(missing, unexpected, shape, given, own, own_by_clean) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} model keys missing from the checkpoint ({', '.join(missing[:5])})")
    if unexpected:
        parts.append(f"{len(unexpected)} checkpoint keys not in the model ({', '.join(unexpected[:5])})")
    for k in shape[:5]:
        parts.append(f"{k}: checkpoint shape {tuple(given[k].shape)} vs model {tuple(own[own_by_clean[k]].shape)}")
    return "; ".join(parts)
