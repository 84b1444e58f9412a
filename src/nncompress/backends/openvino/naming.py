"""Deterministic node names for OpenVINO models, shared by every adapter method.

Operations are named by their friendly names; the second and later operations that share a friendly
name get ``#k`` suffixes in topological order. Model outputs are ``output/<output tensor name>``.
"""

from __future__ import annotations

import openvino as ov

from nncompress.errors import ValidationError

OUTPUT_PREFIX = "output/"


def output_name(model: ov.Model, result: ov.Node) -> str:
    """The graph name of a Result: ``output/<first tensor name>`` (friendly name when unnamed)."""
    index = model.get_result_index(result.output(0))
    names = sorted(model.outputs[index].get_names()) if index >= 0 else []
    return OUTPUT_PREFIX + (names[0] if names else result.get_friendly_name())


def node_names(model: ov.Model) -> dict[ov.Node, str]:
    """Graph name of every operation of ``model`` (constants included, in topological order)."""
    names: dict[ov.Node, str] = {}
    taken: set[str] = set()
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Result":
            base = output_name(model, op)
        else:
            base = op.get_friendly_name()
        name, k = base, 1
        while name in taken:
            name, k = f"{base}#{k}", k + 1
        taken.add(name)
        names[op] = name
    return names


class NameIndex:
    """Lookup from graph names to the operations of one model."""

    def __init__(self, model: ov.Model):
        self.names = node_names(model)
        self.ops = {name: op for op, name in self.names.items()}

    def op(self, name: str) -> ov.Node:
        """The operation called ``name``; ValidationError when there is none."""
        try:
            return self.ops[name]
        except KeyError:
            raise ValidationError(f"the model has no operation named {name!r}") from None

    def name(self, op: ov.Node) -> str:
        return self.names[op]
