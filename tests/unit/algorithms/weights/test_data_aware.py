"""Data-aware weight compression: mixed precision metrics, AWQ patterns, scale estimation, GPTQ, LoRA."""

from __future__ import annotations

import numpy as np
import pytest

import nncompress as nncf
from nncompress.algorithms.weights import gptq, lora, scale_estimation
from nncompress.algorithms.weights.activations import ActivationStats, StatsNeeds
from nncompress.algorithms.weights.config import LayerConfig
from nncompress.algorithms.weights.selection import WeightLayer
from nncompress.graph.ir import WeightInfo
from nncompress.graph.ops import OpKind
from nncompress.numerics.encoding import encode
from nncompress.parameters import CompressWeightsMode as M
from tests.weights.models import inputs, onnx_model, openvino_model

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def _dataset(count: int = 12) -> nncf.Dataset:
    return nncf.Dataset([inputs(seed=i, batch=1, seq=8) for i in range(count)])


def _layer(out: int, channels: int, mode=M.INT4_SYM, group: int = 32) -> WeightLayer:
    return WeightLayer("fc", OpKind.LINEAR, WeightInfo(1, (out, channels), 0, 1), LayerConfig(mode, group), True)


def _stats(x: np.ndarray, hessian: bool = False) -> ActivationStats:
    stats = ActivationStats(StatsNeeds(means=True, hessian=hessian), 10**6)
    for sample in x:
        stats.update(sample[None])
    return stats


def _problem(seed: int = 0, out: int = 48, channels: int = 128, samples: int = 64, tokens: int = 16):
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((out, channels)).astype(np.float32)
    mixing = np.eye(channels, dtype=np.float32) + 0.3 * rng.standard_normal((channels, channels)).astype(np.float32)
    x = rng.standard_normal((samples, tokens, channels)).astype(np.float32) @ mixing
    return weight, x * rng.uniform(0.2, 4.0, channels).astype(np.float32)


def _output_error(x: np.ndarray, weight: np.ndarray, approx: np.ndarray) -> float:
    flat = x.reshape(-1, x.shape[-1])
    return float(np.mean((flat @ (weight - approx).T) ** 2))


def test_gptq_lowers_output_error_and_reproduces_its_codes():
    weight, x = _problem()
    layer = _layer(*weight.shape)
    stats = _stats(x, hessian=True)
    updated, scale, zero_point = gptq.run(weight, stats, layer, nncf.AdvancedCompressionParameters())
    compressed = encode(updated, M.INT4_SYM, 1, 32, 0, scale, zero_point)
    np.testing.assert_array_equal(compressed.decompress(), updated)  # encoding keeps GPTQ's integers
    rtn = encode(weight, M.INT4_SYM, 1, 32, 0).decompress()
    assert _output_error(x, weight, updated) < 0.8 * _output_error(x, weight, rtn)


@pytest.mark.parametrize("mode", [M.INT4_SYM, M.INT4_ASYM, M.NF4])
def test_scale_estimation_never_worse_than_round_to_nearest(mode):
    weight, x = _problem(1)
    stats = _stats(x)
    means = stats.mean_matrix()
    layer = _layer(*weight.shape, mode=mode)
    scale, zero_point = scale_estimation.estimate(weight, means, stats.channel_max(), layer,
                                                  nncf.AdvancedCompressionParameters())
    estimated = encode(weight, mode, 1, 32, 0, scale.reshape(48, 4, 1), None if zero_point is None else
                       zero_point.reshape(48, 4, 1)).decompress()
    rtn = encode(weight, mode, 1, 32, 0).decompress()
    assert _output_error(means[:, None], weight, estimated) <= _output_error(means[:, None], weight, rtn) * 1.0001


def test_lora_factors_absorb_the_residual():
    weight, x = _problem(2)
    compressed = encode(weight, M.INT4_SYM, 1, 32, 0)
    residual = (weight - compressed.decompress()).T  # [in, out]
    means = _stats(x).mean_matrix()
    u, v = lora.low_rank_factors(residual, means, np.abs(means).max(0), 32, 8, 3, True)
    before = np.mean((means @ residual) ** 2)
    after = np.mean((means @ residual - means @ u @ v) ** 2)
    assert after < 0.7 * before


@pytest.mark.parametrize("metric", list(nncf.SensitivityMetric))
def test_mixed_precision_metrics(metric):
    data = None if metric is nncf.SensitivityMetric.WEIGHT_QUANTIZATION_ERROR else _dataset()
    nncf.compress_weights(onnx_model(), mode="int4_sym", group_size=16, ratio=0.5, all_layers=True,
                          sensitivity_metric=metric, dataset=data)
    report = nncf.last_report()
    note = next(n for n in report.notes if n.startswith("mixed precision"))
    assert metric.value in note
    four = next(r for r in report.distribution if r.config.startswith("int4"))
    assert 0 < four.ratio_params <= 0.5 * report.ratio_params
    if data is not None:  # data-aware criteria send embeddings to 4 bits first
        assert report.layers["embedding"].startswith("int4_sym")


def _run_onnx(model, item):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, item)[0]


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
@pytest.mark.parametrize(
    "kwargs",
    [{"awq": True}, {"scale_estimation": True}, {"gptq": True}, {"lora_correction": True},
     {"awq": True, "scale_estimation": True}],
)
def test_data_aware_methods_run_on_every_backend(backend, kwargs):
    model = onnx_model() if backend == "onnx" else openvino_model()
    compressed = nncf.compress_weights(model, mode="int4_asym", group_size=16, dataset=_dataset(), **kwargs)
    report = nncf.last_report()
    assert report.calibration_items == 12
    if kwargs.get("awq"):
        assert any(n.startswith("AWQ applied to 1 of 2") and "Activation->Linear" in n for n in report.notes)
    item = inputs(seed=50, batch=1, seq=8)
    if backend == "onnx":
        got, want = _run_onnx(compressed, item), _run_onnx(model, item)
        if kwargs.get("lora_correction"):
            assert sum(n.op_type == "MatMul" and n.name.endswith("lora_B") for n in compressed.graph.node) == 2
    else:
        from nncompress.backends.openvino.adapter import OpenVINOAdapter

        adapter = OpenVINOAdapter()
        got, want = adapter.infer(compressed, item)[0], adapter.infer(model, item)[0]
    assert np.abs(got - want).max() < 0.25 * np.abs(want).max()


def _swiglu_model():
    """x -> up, gate -> sigmoid(gate) * up -> down -> head: the Linear->Multiply->Linear pattern."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {name: rng.standard_normal(shape).astype(np.float32) / 8 for name, shape in
               (("up", (64, 96)), ("gate", (64, 96)), ("down", (96, 64)), ("head", (64, 16)))}
    nodes = [
        helper.make_node("MatMul", ["x", "up"], ["u"], name="up_proj"),
        helper.make_node("MatMul", ["x", "gate"], ["g"], name="gate_proj"),
        helper.make_node("Sigmoid", ["g"], ["s"], name="act"),
        helper.make_node("Mul", ["s", "u"], ["h"], name="mul"),
        helper.make_node("MatMul", ["h", "down"], ["d"], name="down_proj"),
        helper.make_node("MatMul", ["d", "head"], ["y"], name="head"),
    ]
    graph = helper.make_graph(
        nodes, "swiglu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_awq_folds_into_the_previous_linear():
    model = _swiglu_model()
    rng = np.random.default_rng(1)
    data = nncf.Dataset([{"x": (rng.standard_normal((8, 64)) * rng.uniform(0.1, 5, 64)).astype(np.float32)}
                         for _ in range(16)])
    compressed = nncf.compress_weights(model, mode="int4_sym", group_size=32, dataset=data, awq=True)
    notes = nncf.last_report().notes
    assert any("Linear->Multiply->Linear: 1" in n for n in notes), notes
    assert not any(n.op_type == "Mul" and "awq" in n.name for n in compressed.graph.node)  # folded, no Mul
    item = {"x": rng.standard_normal((4, 64)).astype(np.float32)}
    want = _run_onnx(model, item)
    assert np.abs(_run_onnx(compressed, item) - want).max() < 0.2 * np.abs(want).max()


def test_awq_reports_when_no_pattern_matches():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("MatMul", ["h", "w2"], ["y"], name="fc2")]
    graph = helper.make_graph(
        nodes, "plain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])],
        [numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), n) for n in ("w1", "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = nncf.Dataset([{"x": rng.standard_normal((4, 64)).astype(np.float32)} for _ in range(4)])
    nncf.compress_weights(model, mode="int4_sym", group_size=32, dataset=data, awq=True)
    assert any(n.startswith("AWQ: no pattern matched") for n in nncf.last_report().notes)


def test_data_free_awq_needs_no_dataset():
    nncf.compress_weights(onnx_model(), mode="int4_sym", group_size=16, awq=True)
    assert any(n.startswith("AWQ applied") for n in nncf.last_report().notes)


# --------------------------------------------------------------------------- statistics caching


class _CountingDataset(nncf.Dataset):
    """A dataset that counts how many items were read."""

    def __init__(self, items):
        super().__init__(items)
        self.reads = 0

    def get_inference_data(self, indices=None):
        for item in super().get_inference_data(indices):
            self.reads += 1
            yield item


def _outputs(model):
    return _run_onnx(model, inputs(seed=50, batch=1, seq=8))


@pytest.mark.parametrize("backend", ["onnx", pytest.param("openvino", marks=pytest.mark.slow)])
def test_statistics_cache_reproduces_a_fresh_run_without_running_the_model(backend, tmp_path):
    make = onnx_model if backend == "onnx" else openvino_model
    kwargs = {"mode": "int4_asym", "group_size": 16, "ratio": 0.5, "all_layers": True, "awq": True,
              "scale_estimation": True, "sensitivity_metric": nncf.SensitivityMetric.MEAN_ACTIVATION_MAGNITUDE}
    # a fresh whole-model collection (a statistics path keeps that path; block-wise runs see compressed inputs)
    fresh_path = nncf.AdvancedCompressionParameters(statistics_path=tmp_path / "fresh")
    fresh = nncf.compress_weights(make(), dataset=_dataset(), advanced_parameters=fresh_path, **kwargs)
    fresh_layers = dict(nncf.last_report().layers)
    cached_path = nncf.AdvancedCompressionParameters(statistics_path=tmp_path / "stats")
    first = _CountingDataset([inputs(seed=i, batch=1, seq=8) for i in range(12)])
    # the first run collects a superset (other metrics too) and saves it
    nncf.compress_weights(make(), dataset=first, advanced_parameters=cached_path,
                          **{**kwargs, "sensitivity_metric": nncf.SensitivityMetric.MAX_ACTIVATION_VARIANCE})
    assert any(n.startswith("statistics of 12 calibration items saved") for n in nncf.last_report().notes)
    second = _CountingDataset([inputs(seed=i, batch=1, seq=8) for i in range(12)])
    cached = nncf.compress_weights(make(), dataset=second, advanced_parameters=cached_path, **kwargs)
    report = nncf.last_report()
    assert any(n.startswith("statistics loaded from") for n in report.notes)
    assert second.reads <= 1  # at most the first item, read to check the inputs; the model never ran on it
    assert report.layers == fresh_layers
    if backend == "onnx":
        np.testing.assert_allclose(_outputs(cached), _outputs(fresh), rtol=1e-6, atol=1e-6)
    else:
        from nncompress.backends.openvino.adapter import OpenVINOAdapter

        item = inputs(seed=50, batch=1, seq=8)
        np.testing.assert_allclose(OpenVINOAdapter().infer(cached, item)[0], OpenVINOAdapter().infer(fresh, item)[0],
                                   rtol=1e-6, atol=1e-6)


def test_statistics_cache_is_refreshed_when_it_cannot_serve(tmp_path):
    advanced = nncf.AdvancedCompressionParameters(statistics_path=str(tmp_path))
    nncf.compress_weights(onnx_model(), mode="int4_sym", group_size=16, dataset=_dataset(), awq=True,
                          subset_size=6, advanced_parameters=advanced)
    assert nncf.last_report().calibration_items == 6
    # more samples than saved, then a Hessian that was not saved: each needs a new pass; then a cache hit
    for extra, outcome in (({"subset_size": 12, "awq": True}, "statistics of 12 calibration items saved"),
                           ({"gptq": True}, "statistics of 12 calibration items saved"),
                           ({"gptq": True}, "statistics loaded from")):
        nncf.compress_weights(onnx_model(), mode="int4_sym", group_size=16, dataset=_dataset(),
                              advanced_parameters=advanced, **extra)
        assert any(n.startswith(outcome) for n in nncf.last_report().notes), (extra, nncf.last_report().notes)
    with pytest.raises(nncf.errors.ValidationError, match="directory"):
        file = tmp_path / "a_file"
        file.write_text("x")
        nncf.compress_weights(onnx_model(), mode="int4_sym", group_size=16, dataset=_dataset(), awq=True,
                              advanced_parameters=nncf.AdvancedCompressionParameters(statistics_path=file))


def test_the_regularized_solve_equals_the_dense_one():
    x = np.random.default_rng(5).standard_normal((6, 40))
    b = np.random.default_rng(6).standard_normal((40, 3))
    dense = np.linalg.solve(np.eye(40) + x.T @ x, b)
    np.testing.assert_allclose(lora._regularized_solver(x)(b), dense, rtol=1e-10, atol=1e-12)
