"""Each layer is a LayerJob passed through steps that return new jobs (weights, statistics and scales as
values); the steps give the same weight as encoding the AWQ-scaled weight directly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nncompress.algorithms.weights import data_aware, pipeline
from nncompress.algorithms.weights.awq import AWQPlan
from nncompress.algorithms.weights.config import LayerConfig
from nncompress.algorithms.weights.gptq import GPTQFactors
from nncompress.algorithms.weights.job import LayerJob, run_steps
from nncompress.algorithms.weights.scale_estimation import estimate
from nncompress.graph.edits import SetConstant
from nncompress.numerics.encoding import encode
from nncompress.parameters import CompressWeightsMode as M

from .helpers import assert_same, linear_layer, snapshot, statistics, weight
from .test_config import options


def _plan(scale: np.ndarray, stats=None) -> AWQPlan:
    return AWQPlan(input_scales={"fc": scale}, stats={"fc": stats} if stats is not None else {})


def _run(job: LayerJob, plan: AWQPlan, opts) -> LayerJob:
    return run_steps(job, pipeline.layer_steps(job.config, plan, lambda _: weight(), opts, GPTQFactors()))


def test_steps_return_new_jobs_and_leave_their_input_as_it_was():
    job = LayerJob(linear_layer(), statistics())
    read = pipeline.read_step(job, lambda _: weight())
    assert read is not job and job.weight is None and read.weight is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.weight = weight()
    scale = np.linspace(0.5, 2, 32).astype(np.float32)
    planned = pipeline.awq_step(read, _plan(scale))
    assert read.input_scale is None and planned.input_scale is scale
    scaled = pipeline.scale_step(planned)
    np.testing.assert_array_equal(planned.weight, weight())  # the scaled weight is a new array
    np.testing.assert_array_equal(scaled.weight, weight() * scale[:, None])


def test_rtn_job_flows_to_the_encoded_awq_scaled_weight():
    scale = np.linspace(0.5, 2, 32).astype(np.float32)
    done = _run(LayerJob(linear_layer()), _plan(scale), options(M.INT4_SYM, 16))
    expected = encode(weight() * scale[:, None], M.INT4_SYM, 0, 16, 1)
    np.testing.assert_array_equal(done.compressed.data, expected.data)
    np.testing.assert_array_equal(done.compressed.scale, expected.scale)
    assert done.edits == () and done.target is None


def test_scale_estimation_step_reads_the_statistics_awq_returned_not_the_collected_ones():
    collected, scaled_stats = statistics(seed=1), statistics(seed=7)
    before = snapshot(collected)
    scale = np.ones(32, np.float32)
    opts = options(M.INT4_SYM, 16, scale_estimation=True)
    done = _run(LayerJob(linear_layer(), collected), _plan(scale, scaled_stats), opts)
    assert_same(before, snapshot(collected))
    layer = linear_layer()
    w_oi = np.ascontiguousarray(weight().T)
    x = scaled_stats.mean_matrix(opts.advanced.scale_estimation_params.subset_size)
    se_scale, _ = estimate(w_oi, x, scaled_stats.channel_max(), layer, opts.advanced)
    np.testing.assert_array_equal(done.compressed.scale, data_aware.to_layout(se_scale, layer))
    other = _run(LayerJob(linear_layer(), collected), AWQPlan(), opts)
    assert not np.array_equal(other.compressed.scale, done.compressed.scale)


def test_lora_step_adds_its_edit_to_the_job():
    opts = options(M.INT4_SYM, 16, lora_correction=True)
    done = _run(LayerJob(linear_layer(), statistics()), AWQPlan(), opts)
    (edit,) = done.edits
    assert edit.node == "fc" and edit.name == "fc/lora"


def test_float_layer_gets_a_set_constant_only_when_awq_scaled_it():
    layer = dataclasses.replace(linear_layer(), config=LayerConfig(None))
    opts = options(M.INT4_SYM, 16)
    assert _run(LayerJob(layer), AWQPlan(), opts).edits == ()
    scale = np.full(8, 0.25, np.float32)
    (edit,) = _run(LayerJob(layer), AWQPlan(output_scales={"fc": scale}), opts).edits
    assert isinstance(edit, SetConstant)
    np.testing.assert_array_equal(edit.value, weight() * scale[None, :])


def test_gptq_factors_are_shared_without_writing_to_the_statistics():
    stats = statistics()
    factors = GPTQFactors()
    first = factors(stats, 0.1)
    assert factors(stats, 0.1).upper is first.upper
    assert "_gptq_factors" not in vars(stats)
