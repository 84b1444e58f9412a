"""The value one weight carries through the compression steps, and how steps are chained.

Every step takes a ``LayerJob`` and returns a new one (``dataclasses.replace``); no step writes state
that another step reads, so the steps can be tested one by one and reordered only on purpose.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nncompress.algorithms.weights.activations import ActivationStats
from nncompress.algorithms.weights.config import LayerConfig
from nncompress.algorithms.weights.selection import WeightLayer
from nncompress.numerics.encoding import CompressedWeight


@dataclass(frozen=True, eq=False)
class LayerJob:
    """One weight on its way through the steps.

    ``stats``: the statistics of the layer's input as the layer sees it (after AWQ: of ``x / s``);
    ``input_scale`` / ``output_scale``: AWQ factors to multiply into the weight's input / output channels;
    ``weight``: the float weight in the layer's layout (AWQ scales applied once ``scale_step`` ran);
    ``target``: the weight to encode when a data-aware step changed it (GPTQ), else None (= ``weight``);
    ``scale`` / ``zero_point``: per-group parameters ``[out, groups, 1]`` from scale estimation or GPTQ;
    ``compressed`` and ``edits``: the results.
    """

    layer: WeightLayer
    stats: ActivationStats | None = None
    input_scale: np.ndarray | None = None
    output_scale: np.ndarray | None = None
    weight: np.ndarray | None = None
    target: np.ndarray | None = None
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    compressed: CompressedWeight | None = None
    edits: tuple[Any, ...] = ()

    @property
    def config(self) -> LayerConfig:
        return self.layer.config

    def but(self, **changes: Any) -> LayerJob:
        """A copy with ``changes`` (the job itself is never modified)."""
        return dataclasses.replace(self, **changes)


Step = Callable[[LayerJob], LayerJob]


def run_steps(job: LayerJob, steps: Iterable[Step]) -> LayerJob:
    """``job`` passed through ``steps`` in order, each step's result feeding the next."""
    for step in steps:
        job = step(job)
    return job
