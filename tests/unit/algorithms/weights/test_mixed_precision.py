"""Mixed precision returns new layer records and leaves the given ones as they were."""

from __future__ import annotations

import dataclasses

import numpy as np

from nncompress.algorithms.weights.mixed_precision import assign_mixed_precision
from nncompress.parameters import CompressWeightsMode as M

from .helpers import linear_layer
from .test_config import options


def test_demoted_layers_are_new_records():
    # weight_quantization_error scores 1 / INT8 error: the smooth "loud" weight scores high and is demoted
    quiet = linear_layer()
    loud = dataclasses.replace(linear_layer(), node="loud")
    smooth = np.tile(np.linspace(-1, 1, 8, dtype=np.float32), (32, 1))  # exact on the INT8 grid
    weights = {"fc": np.random.default_rng(0).standard_normal((32, 8)), "loud": smooth}
    opts = dataclasses.replace(options(M.INT4_SYM, 16), ratio=0.5)
    result, summary = assign_mixed_precision(
        [quiet, loud], opts, lambda layer: weights[layer.node].astype(np.float32), lambda layer: None
    )
    assert quiet.config.mode is M.INT4_SYM and loud.config.mode is M.INT4_SYM and loud.notes == ()
    kept, demoted = result
    assert kept is quiet
    assert demoted is not loud and demoted.config == opts.backup_for(32) and demoted.node == "loud"
    assert demoted.notes == ("mixed precision (weight_quantization_error): int8_asym, per-channel",)
    assert summary.startswith("mixed precision (weight_quantization_error, ratio 0.5): 1 of 2")
