"""run_steps feeds each step's job to the next; jobs are immutable."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nncompress.algorithms.weights.job import LayerJob, run_steps

from .helpers import linear_layer


def test_steps_run_in_order_on_each_others_results():
    seen = []

    def add(value):
        def step(job):
            seen.append(job.edits)
            return job.but(edits=(*job.edits, value))
        return step

    start = LayerJob(linear_layer())
    done = run_steps(start, [add("a"), add("b"), add("c")])
    assert done.edits == ("a", "b", "c") and seen == [(), ("a",), ("a", "b")]
    assert start.edits == ()


def test_job_is_frozen_and_but_copies():
    job = LayerJob(linear_layer())
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.stats = None
    other = job.but(scale=np.ones(3))
    assert job.scale is None and other.layer is job.layer and other.config is job.layer.config
