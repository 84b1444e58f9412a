"""``build_graph``: the neutral graph nncompress sees for a model (names and types for IgnoredScope)."""

from __future__ import annotations

from typing import Any

from nncompress.backends.registry import get_adapter
from nncompress.graph.ir import Graph


def build_graph(model: Any) -> Graph:
    """The operations of ``model`` as nncompress sees them; ``print(graph.dump())`` lists them."""
    return get_adapter(model).build_graph(model)
