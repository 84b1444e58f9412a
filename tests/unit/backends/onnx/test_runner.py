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


def _early_output_then_a_failing_tail() -> onnx.ModelProto:
    """x -> MatMul(w1) -> h -> Reshape to [7] (fails at run time for every input) -> y; w2 read by the tail only."""
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm"),
             helper.make_node("MatMul", ["h", "w2"], ["t"], name="tail"),
             helper.make_node("Reshape", ["t", "bad_shape"], ["y"], name="bad")]
    initializers = [numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "w1"),
                    numpy_helper.from_array(rng.standard_normal((32, 8)).astype(np.float32), "w2"),
                    numpy_helper.from_array(np.array([7], np.int64), "bad_shape")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("feed_weights", [False, True])
def test_a_session_of_only_the_extra_outputs_runs_just_the_nodes_they_need(monkeypatch, feed_weights):
    model = _early_output_then_a_failing_tail()
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    with pytest.raises(Exception, match="(?i)reshape"):  # the whole model fails in its tail
        runner.create_session(model, ["h"], feed_weights=feed_weights).run(["h"], {"x": x})
    monkeypatch.setattr(runner, "FED_WEIGHT_MIN_BYTES", 1024)  # w1 (8 KB) and w2 (1 KB) would be fed
    session = runner.create_session(model, ["h"], feed_weights=feed_weights, only=True)
    (h,) = session.run(["h"], {"x": x})
    w1 = onnx.numpy_helper.to_array(model.graph.initializer[0])
    np.testing.assert_allclose(h, x @ w1, rtol=1e-5, atol=1e-4)
    assert [o.name for o in session.get_outputs()] == ["h"]
    if feed_weights:
        assert set(session.weights) == {"w1"}  # w2 is read by the dropped tail only
    assert [n.name for n in model.graph.node] == ["mm", "tail", "bad"] and len(model.graph.output) == 1


def test_needed_nodes_follow_subgraph_reads():
    then = helper.make_graph([helper.make_node("Neg", ["a"], ["o"])], "then", [],
                             [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Identity", ["b"], ["o2"])], "else", [],
                              [helper.make_tensor_value_info("o2", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="ra"), helper.make_node("Abs", ["x"], ["b"], name="rb"),
             helper.make_node("Sigmoid", ["x"], ["unused"], name="rc"),
             helper.make_node("If", ["cond"], ["z"], name="branch", then_branch=then, else_branch=other)]
    graph = helper.make_graph(nodes, "g", [], [])
    kept, names = runner.needed_nodes(graph.node, ["z"])
    assert [n.name for n in kept] == ["ra", "rb", "branch"] and {"a", "b", "cond", "x"} <= names
