"""``build_graph``: the neutral graph nncompress sees for a model (names and types for IgnoredScope)."""

from __future__ import annotations

from typing import Any

from nncompress.backends.registry import get_adapter
from nncompress.graph.ir import Graph


def build_graph(model: Any, example_input: Any = None) -> Graph:
    """The operations of ``model`` as nncompress sees them; ``print(graph.dump())`` lists them.

    PyTorch models are captured by running ``example_input`` (one model input item).
    """
    adapter = get_adapter(model, example_input=example_input)
    if example_input is not None:
        adapter.check_inputs(model, example_input)
    return adapter.build_graph(model)
