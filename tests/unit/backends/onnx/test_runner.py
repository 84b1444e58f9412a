"""Sessions of the ONNX backend."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from nncompress.backends.onnx import runner  # noqa: E402


def _two_relus() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="first"), helper.make_node("Neg", ["h"], ["y"], name="second")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_session_that_loses_an_extra_output_is_rebuilt_at_the_extended_level(monkeypatch):
    real, levels = ort.InferenceSession, []

    def session(data, options, providers):
        levels.append(options.graph_optimization_level)
        if options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL:
            raise RuntimeError("Failed to find node output or a constant initializer producing output: h.")
        return real(data, options, providers=providers)

    monkeypatch.setattr(runner.ort, "InferenceSession", session)
    s = runner.create_session(_two_relus(), ["h"])
    assert levels == [ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED]
    h, y = s.run(["h", "y"], {"x": np.array([-1.0, 2.0], np.float32)})
    np.testing.assert_array_equal(h, [0.0, 2.0])
    np.testing.assert_array_equal(y, [0.0, -2.0])


def test_other_session_errors_are_not_retried(monkeypatch):
    def session(data, options, providers):
        raise RuntimeError("some other failure")

    monkeypatch.setattr(runner.ort, "InferenceSession", session)
    with pytest.raises(RuntimeError, match="some other failure"):
        runner.create_session(_two_relus(), ["h"])
