"""OpenVINO decompression subgraphs compute ``CompressedWeight.decompress()`` whatever the arrays' memory order."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.numerics.encoding import encode
from nncompress.parameters import CompressWeightsMode as Mode

ov = pytest.importorskip("openvino")


@pytest.mark.parametrize("mode", [Mode.INT4_SYM, Mode.INT4_ASYM])
def test_transposed_estimated_scales_decompress_exactly(mode):
    """Scales handed over as a transposed view (as the data-aware steps produce for an ``[in, out]`` weight)
    must not be read as if they were C-ordered (``ops.constant`` reads the raw buffer)."""
    import openvino.opset13 as ops

    from nncompress.backends.openvino.runner import compile_model
    from nncompress.backends.openvino.weight_storage import decompression

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(64, 48)).astype(np.float32)  # [in, out]: groups along axis 0
    plain = encode(weight, mode, 0, 32, 1)
    scale = np.ascontiguousarray(plain.scale.transpose(2, 0, 1)).transpose(1, 2, 0) * np.float32(2.0)  # fp16 still
    assert scale.shape == plain.scale.shape and not scale.flags["C_CONTIGUOUS"]
    zero_point = None if plain.zero_point is None else plain.zero_point.transpose(2, 0, 1).copy().transpose(1, 2, 0)
    estimated = encode(weight, mode, 0, 32, 1, scale, zero_point)
    assert estimated.scale_dtype == "float16"  # stored as float16 (the astype that kept the strides)
    x = rng.normal(size=(3, 64)).astype(np.float32)
    param = ops.parameter([3, 64], ov.Type.f32)
    model = ov.Model([ops.matmul(param, decompression(estimated, ov.Type.f32, "w"), False, False)], [param], "m")
    got = compile_model(model)(x)[0]  # float32, no dynamic quantization of the activations
    np.testing.assert_allclose(got, x @ estimated.decompress(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(estimated.decompress(), plain.decompress())  # the given scales are the ones used
