"""NNCF scope strings for the nodes of a captured graph, and matching of ``ignored_scopes``-style lists.

Every node answers to several names: nncompress' own (NNCF 3.x's form, ``layer1/0/conv1/conv2d/0``), NNCF
2.x's scope form (``ResNet/Sequential[layer1]/BasicBlock[0]/Conv2d[conv1]/conv2d_0``; the ``NNCF`` prefix of NNCF's
wrapped module classes, as in ``NNCFConv2d[conv1]``, is accepted too), and the module path
(``layer1.0.conv1``). A plain scope matches a name exactly or any operation inside a module scope
(NNCF itself only matches exactly); ``{re}`` scopes are regular expressions searched in every name
(``re.search``, as NNCF does).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from nncompress.backends.torch.mode import split_op_name
from nncompress.errors import ValidationError
from nncompress.graph.ir import Graph
from nncompress.graph.ops import OpKind

REGEX_PREFIX = "{re}"


def node_names(graph: Graph, model: Any) -> dict[str, tuple[str, ...]]:
    """{node name: every name the node answers to}."""
    root = type(model).__name__
    names: dict[str, tuple[str, ...]] = {}
    inputs = [n.name for n in graph if n.kind is OpKind.INPUT]
    outputs = [n.name for n in graph if n.kind is OpKind.OUTPUT]
    for node in graph:
        found = [node.name]
        if node.name in inputs:
            index = inputs.index(node.name)
            found += [f"/nncf_model_input_{index}", f"{root}/nncf_model_input_{index}"]
        elif node.name in outputs:
            found += [f"/nncf_model_output_{outputs.index(node.name)}"]
        else:
            path, op, index = split_op_name(node.name)
            found.append("/".join([root, *_module_scopes(model, path), f"{op}_{index}"]))
            if path:
                found.append(path)
        names[node.name] = tuple(found)
    return names


def _module_scopes(model: Any, path: str) -> list[str]:
    parts, prefix, module = [], "", model
    for part in path.split(".") if path else []:
        prefix = f"{prefix}.{part}" if prefix else part
        try:
            module = model.get_submodule(prefix)
        except AttributeError:
            return [p for p in path.split(".")]
        parts.append(f"{type(module).__name__}[{part}]")
    return parts


def _normalise(scope: str) -> str:
    return re.sub(r"(^|/)NNCF(\w+\[)", r"\1\2", scope)


def scope_matches(scope: str, names: Iterable[str]) -> bool:
    """Whether ``scope`` (plain or ``{re}``-prefixed) matches any of a node's ``names``."""
    names = tuple(names)
    if scope.startswith(REGEX_PREFIX):
        try:
            regex = re.compile(scope[len(REGEX_PREFIX):])
        except re.error as exc:
            raise ValidationError(f"scope {scope!r} is not a valid regular expression: {exc}") from exc
        return any(regex.search(n) for n in names)
    wanted = _normalise(scope)
    for name in names:
        if name == wanted or name.startswith(wanted + "/") or ("/" not in name and name.startswith(wanted + ".")):
            return True
    return False


def matching_nodes(scopes: Iterable[str], names: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """{node: first scope of ``scopes`` that matches it}."""
    found: dict[str, str] = {}
    for scope in scopes:
        for node, candidates in names.items():
            if node not in found and scope_matches(scope, candidates):
                found[node] = scope
    return found


def check_scopes(scopes: Iterable[str], names: dict[str, tuple[str, ...]], key: str) -> None:
    """ValidationError for a scope of ``key`` that matches no node (``validate_scopes``)."""
    for scope in scopes:
        if not any(scope_matches(scope, candidates) for candidates in names.values()):
            examples = [c[1] if len(c) > 1 else c[0] for c in list(names.values())[:8]]
            raise ValidationError(
                f"{key}: scope {scope!r} matches no operation of the model. Operation scopes look like: "
                f"{', '.join(examples)} (also nncompress names, module paths, or '{{re}}' regular expressions); "
                "set \"validate_scopes\": false to allow unmatched scopes"
            )
