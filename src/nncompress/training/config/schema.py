"""Validate an NNCF 2.x training config against ``schema.json``; errors name the key path.

The root is validated first (unknown root keys are allowed: training scripts keep ``model``,
``batch_size``, ... there), then every ``compression`` entry against its own algorithm's sub-schema,
so a mistake inside one algorithm is reported with that algorithm's valid keys and values.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from nncompress.errors import ConfigError

SCHEMA_PATH = Path(__file__).with_name("schema.json")
# Unknown root keys are kept, except ones this close to a known key: those are typos.
_ROOT_TYPO_CUTOFF = 0.85


@lru_cache(maxsize=1)
def load_schema() -> dict:
    """The whole schema document (read once)."""
    with SCHEMA_PATH.open(encoding="utf-8") as f:
        return json.load(f)


def algorithm_names() -> tuple[str, ...]:
    """Algorithm names the schema knows, in the schema's order."""
    return tuple(load_schema()["x-algorithms"])


@cache
def _validator(definition: str):
    import jsonschema

    doc = load_schema()
    return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{definition}", "$defs": doc["$defs"]})


def validate_config(config: dict) -> None:
    """Raise ``ConfigError`` naming the first bad key path of ``config``; return None when it is valid."""
    if not isinstance(config, dict):
        raise ConfigError(f"a config must be a JSON object (dict); got {type(config).__name__}")
    _check(_validator("root"), config, "")
    _check_root_typos(config)
    for path, section in iter_algorithm_sections(config):
        validate_algorithm(section, path)


def iter_algorithm_sections(config: dict) -> Iterable[tuple[str, dict]]:
    """(key path, section) of every ``compression`` entry; an object counts as a one-entry list."""
    compression = config.get("compression")
    if compression is None:
        return []
    if isinstance(compression, dict):
        return [("compression", compression)]
    return [(f"compression[{i}]", section) for i, section in enumerate(compression)]


def validate_algorithm(section: dict, path: str) -> None:
    """Validate one algorithm section (``path`` is its key path, e.g. ``compression[1]``)."""
    name = section.get("algorithm")
    names = algorithm_names()
    if name not in names:
        raise ConfigError(
            f"{path}.algorithm: unknown algorithm {name!r}{_did_you_mean(name, names)}; "
            f"valid algorithms: {_listing(names)}"
        )
    _check(_validator(f"algorithm:{name}"), section, path)


def validate_definition(definition: str, instance: Any, path: str) -> None:
    """Validate ``instance`` against ``#/$defs/<definition>`` (e.g. ``input_info_entry``) at key ``path``."""
    _check(_validator(definition), instance, path)


def _check_root_typos(config: dict) -> None:
    known = tuple(load_schema()["$defs"]["root"]["properties"])
    for key in config:
        if key in known or not isinstance(key, str):
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=_ROOT_TYPO_CUTOFF)
        if close:
            raise ConfigError(
                f"{key}: unknown config key {key!r}; did you mean {close[0]!r}? Valid keys: {_listing(known)} "
                "(other root keys are kept for the training script, but this one looks like a misspelling)"
            )


def _check(validator, instance: Any, prefix: str) -> None:
    errors = list(validator.iter_errors(instance))
    if not errors:
        return
    error = _most_relevant(min(errors, key=_error_order))
    raise ConfigError(_describe(error, prefix))


def _error_order(error) -> tuple:
    # Deterministic: the first error in document order, shallowest first.
    return (len(error.absolute_path), [str(p) for p in error.absolute_path])


def _most_relevant(error):
    """Descend into ``oneOf``/``anyOf`` to the branch that matches the instance's JSON type."""
    while error.validator in ("oneOf", "anyOf") and error.context:
        branches: dict[int, list] = {}
        for sub in error.context:
            branches.setdefault(sub.schema_path[0], []).append(sub)
        typed = [errs for errs in branches.values() if not any(e.validator == "type" and not e.path for e in errs)]
        if len(typed) != 1:
            return error
        error = min(typed[0], key=_error_order)
    return error


def format_path(prefix: str, parts: Sequence) -> str:
    """``compression[1]`` + ``["initializer", "range", 0, "type"]`` -> ``compression[1].initializer.range[0].type``."""
    path = prefix
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path or "<root>"


def _describe(error, prefix: str) -> str:
    path = format_path(prefix, list(error.absolute_path))
    schema = error.schema if isinstance(error.schema, dict) else {}
    kind = error.validator
    if "x-message" in schema:
        return f"{path}: {schema['x-message']}"
    if kind == "additionalProperties":
        valid = tuple(schema.get("properties", ()))
        unknown = [k for k in error.instance if k not in valid]
        key = unknown[0] if unknown else "?"
        where = format_path(path if path != "<root>" else "", [key])
        return f"{where}: unknown key {key!r}{_did_you_mean(key, valid)}; valid keys here: {_listing(valid)}"
    if kind == "enum":
        valid = error.validator_value
        hint = _did_you_mean(error.instance, valid)
        return f"{path}: {error.instance!r} is not valid{hint}; valid values: {_listing(valid)}"
    if kind == "const":
        return f"{path}: must be {error.validator_value!r}; got {error.instance!r}"
    if kind == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{path}: must be of type {expected}; got {error.instance!r} ({_json_type(error.instance)})"
    if kind == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return f"{path}: the required key {missing[0]!r} is missing; keys here: {_listing(error.instance)}"
    if kind in ("oneOf", "anyOf"):
        shapes = [_shape(s) for s in error.validator_value]
        return f"{path}: {_short(error.instance)} is not valid; expected {' or '.join(shapes)}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        words = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
        return f"{path}: must be {words[kind]} {error.validator_value}; got {error.instance!r}"
    if kind in ("minItems", "maxItems"):
        words = {"minItems": "at least", "maxItems": "at most"}
        return f"{path}: must have {words[kind]} {error.validator_value} items; got {_short(error.instance)}"
    return f"{path}: {_short(error.instance)} is not valid ({error.message})"


def _shape(schema: dict) -> str:
    if "$ref" in schema:
        return f"an object ({schema['$ref'].rsplit('/', 1)[-1]})"
    if schema.get("type") == "array":
        return "a list of those"
    return f"a {schema.get('type', 'value')}"


def _json_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _listing(values: Iterable) -> str:
    return ", ".join(repr(v) for v in values) or "(none)"


def _did_you_mean(value: Any, valid: Iterable) -> str:
    if not isinstance(value, str):
        return ""
    candidates = {str(v): v for v in valid}
    close = difflib.get_close_matches(value, list(candidates), n=1, cutoff=0.6)
    if not close:
        lowered = {k.lower(): k for k in candidates}
        close = [lowered[value.lower()]] if value.lower() in lowered else []
    return f" (did you mean {candidates[close[0]]!r}?)" if close else ""
