"""quantize_with_accuracy_control: ranking, drop types, budgets, metric kinds, every backend."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import nncompress as nncf
from nncompress.algorithms.accuracy_control import MetricScale, build_groups, nmse, parse_result, top_items
from nncompress.errors import AccuracyDropError, ValidationError
from tests import accuracy_control_models as acm

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

HARMFUL = {"onnx": "/conv3/conv3.0/Conv", "openvino": "/conv3/conv3.0/Conv/WithoutBiases", "torch": "conv3/0/conv2d/0"}
NUM_VALIDATION = 200


@pytest.fixture(scope="module")
def outlier_torch(digits_torch):
    return acm.outlier_digits_cnn(digits_torch)


@pytest.fixture(scope="module")
def outlier_onnx(outlier_torch, tmp_path_factory):
    path = acm.export_onnx(outlier_torch, tmp_path_factory.mktemp("ac") / "outlier.onnx")
    return onnx.load(path)


def _datasets(digits_data, backend: str, calibration: int = 50):
    if backend == "torch":
        import torch

        to_input = lambda image: torch.from_numpy(image[None])  # noqa: E731
    else:
        to_input = lambda image: image[None]  # noqa: E731
    calib = nncf.Dataset(list(digits_data.x_train[:calibration]), to_input)
    items = list(zip(digits_data.x_test[:NUM_VALIDATION], digits_data.y_test[:NUM_VALIDATION]))
    return calib, nncf.Dataset(items, lambda item: to_input(item[0]))


@pytest.fixture(scope="module")
def onnx_data(digits_data):
    return _datasets(digits_data, "onnx")


def _outlier_model(backend, request, tmp_path_factory):
    if backend == "onnx":
        return request.getfixturevalue("outlier_onnx")
    if backend == "openvino":
        ov = pytest.importorskip("openvino")
        path = tmp_path_factory.mktemp("ac_ov") / "outlier.onnx"
        onnx.save(request.getfixturevalue("outlier_onnx"), path)
        return ov.convert_model(str(path))
    try:
        import nncompress.backends.torch.adapter  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the PyTorch adapter is not available: {exc}")
    return request.getfixturevalue("outlier_torch")


@pytest.mark.parametrize("backend", ["onnx", *(pytest.param(b, marks=pytest.mark.slow) for b in ("openvino", "torch"))])
def test_ranking_reverts_the_harmful_layer_in_every_backend(backend, digits_data, request, tmp_path_factory):
    model = _outlier_model(backend, request, tmp_path_factory)
    calib, validation = _datasets(digits_data, backend, 30 if backend == "torch" else 50)
    seen = []

    def validate(ready, items):
        seen.append(type(ready).__name__)
        return acm.accuracy_with_values(ready, items)

    result = nncf.quantize_with_accuracy_control(model, calib, validation, validate, max_drop=0.01, subset_size=30)
    report = nncf.last_report()
    reverted = [op for op, why in report.skipped.items() if "by accuracy control" in why]
    assert reverted == [HARMFUL[backend]]
    assert "impact +" in report.skipped[HARMFUL[backend]]
    fp32 = acm.accuracy(_ready(model), validation.get_data())
    assert acm.accuracy(_ready(result), validation.get_data()) >= fp32 - 0.01
    if backend == "openvino":
        assert set(seen) == {"CompiledModel"}


def _two_pass_accuracy(metrics: list, totals: list):
    """A validation_fn that reads its data twice: once to count the items, once to predict in batches.
    It returns (accuracy, per-item correctness), so the ranking calls it on subsets too."""

    def validate(ready, data):
        total = sum(1 for _ in data)
        hits, chunk = [], []
        for item in data:
            chunk.append(item)
            if len(chunk) == 64:
                hits, chunk = hits + acm.correct(ready, chunk).tolist(), []
        if chunk:
            hits += acm.correct(ready, chunk).tolist()
        totals.append((total, len(data) if hasattr(data, "__len__") else None))
        metrics.append(sum(hits) / total)
        return metrics[-1], hits

    return validate


@pytest.mark.parametrize("backend", ["onnx", *(pytest.param(b, marks=pytest.mark.slow) for b in ("openvino", "torch"))])
def test_validation_fn_may_iterate_its_data_twice(backend, digits_data, request, tmp_path_factory):
    """NNCF's validation data is re-iterable: a second pass must see the items again, not nothing (which
    made both metrics 0, the drop 0 and returned plain INT8 without reverting anything)."""
    model = _outlier_model(backend, request, tmp_path_factory)
    calib, validation = _datasets(digits_data, backend, 30 if backend == "torch" else 50)
    metrics, totals = [], []
    result = nncf.quantize_with_accuracy_control(
        model, calib, validation, _two_pass_accuracy(metrics, totals), max_drop=0.01, subset_size=30
    )
    fp32 = acm.accuracy(_ready(model), validation.get_data())  # one pass, computed independently
    assert fp32 > 0.9 and metrics[0] == pytest.approx(fp32)
    assert 0 < metrics[1] < fp32 - 0.01  # the plain INT8 model, really evaluated: outside the budget
    assert totals[:2] == [(NUM_VALIDATION, NUM_VALIDATION)] * 2
    assert all(total == length for total, length in totals)
    assert {total for total, _ in totals} == {NUM_VALIDATION, 30}  # and the ranking subsets
    reverted = [op for op, why in nncf.last_report().skipped.items() if "by accuracy control" in why]
    assert reverted == [HARMFUL[backend]]
    assert metrics[-1] >= fp32 - 0.01
    assert acm.accuracy(_ready(result), validation.get_data()) == pytest.approx(metrics[-1])


def _ready(model):
    if type(model).__name__ == "Model":
        from nncompress.backends.openvino.runner import compile_model

        return compile_model(model)
    return model


@pytest.mark.slow
def test_scalar_validation_fn_ranks_by_outputs(outlier_onnx, onnx_data, caplog):
    before = outlier_onnx.SerializeToString()
    with caplog.at_level(logging.INFO, logger="nncompress"):
        nncf.quantize_with_accuracy_control(outlier_onnx, *onnx_data, acm.accuracy, max_drop=0.01)
    assert outlier_onnx.SerializeToString() == before
    report = nncf.last_report()
    assert [k for k, v in report.skipped.items() if "accuracy control" in v] == [HARMFUL["onnx"]]
    assert any("ranking by outputs" in note for note in report.notes)
    assert "iteration 1: reverted /conv3/conv3.0/Conv" in caplog.text


@pytest.mark.slow
def test_lower_is_better_metric(outlier_onnx, onnx_data):
    nncf.quantize_with_accuracy_control(outlier_onnx, *onnx_data, acm.error_rate, max_drop=0.01)
    report = nncf.last_report()
    assert [k for k, v in report.skipped.items() if "accuracy control" in v] == [HARMFUL["onnx"]]
    assert any("lower is better" in note for note in report.notes)


@pytest.mark.slow
def test_relative_vs_absolute_drop(outlier_onnx, onnx_data):
    """A 0-100 metric with weights kept INT8: RELATIVE 1% is met by one revert, ABSOLUTE 0.01 points is not."""

    def percent(model, items):
        return 100 * acm.accuracy(model, items)

    params = nncf.AdvancedAccuracyRestorerParameters(restore_mode="only_activations")
    relative = nncf.quantize_with_accuracy_control(
        outlier_onnx, *onnx_data, percent, max_drop=0.01, drop_type=nncf.DropType.RELATIVE,
        advanced_accuracy_restorer_parameters=params,
    )
    assert [k for k, v in nncf.last_report().skipped.items() if "accuracy control" in v] == [HARMFUL["onnx"]]
    fp32 = percent(outlier_onnx, onnx_data[1].get_data())
    relative_drop = (fp32 - percent(relative, onnx_data[1].get_data())) / fp32
    assert 0 < relative_drop <= 0.01  # one image in 300 is lost: 0.33 points, 0.34 %
    try:
        absolute = nncf.quantize_with_accuracy_control(
            outlier_onnx, *onnx_data, percent, max_drop=0.01, advanced_accuracy_restorer_parameters=params
        )
    except AccuracyDropError as error:
        assert error.best_drop == pytest.approx(relative_drop * fp32)
    else:
        assert len([v for v in nncf.last_report().skipped.values() if "accuracy control" in v]) > 1
        assert fp32 - percent(absolute, onnx_data[1].get_data()) <= 0.01


def test_metric_scale_drops():
    assert MetricScale(0.5, nncf.DropType.ABSOLUTE).drop(0.49) == pytest.approx(0.01)
    assert MetricScale(0.5, nncf.DropType.RELATIVE).drop(0.49) == pytest.approx(0.02)
    assert MetricScale(2.0, nncf.DropType.ABSOLUTE, sign=-1).drop(2.5) == pytest.approx(0.5)


@pytest.mark.slow
def test_unreachable_budget_raises_with_best_model(outlier_onnx, onnx_data):
    params = nncf.AdvancedAccuracyRestorerParameters(max_num_iterations=1, restore_mode="only_activations")
    message = r"best drop is .* with the input activations of 1 of \d+ operations reverted"
    with pytest.raises(AccuracyDropError, match=message) as info:
        nncf.quantize_with_accuracy_control(
            outlier_onnx, *onnx_data, acm.accuracy, max_drop=0.0, advanced_accuracy_restorer_parameters=params
        )
    error = info.value
    assert error.reverted == [HARMFUL["onnx"]]
    fp32 = acm.accuracy(outlier_onnx, onnx_data[1].get_data())
    assert fp32 - acm.accuracy(error.best_model, onnx_data[1].get_data()) == pytest.approx(error.best_drop)
    assert 0 < error.best_drop < 0.02
    assert HARMFUL["onnx"] in nncf.last_report().skipped


@pytest.mark.slow
def test_budget_no_revert_can_reach(outlier_onnx, onnx_data):
    def only_the_original(model, items):
        return 1.0 if model is outlier_onnx else 0.0

    with pytest.raises(AccuracyDropError, match="every quantizer group was tried") as info:
        nncf.quantize_with_accuracy_control(outlier_onnx, *onnx_data, only_the_original)
    assert info.value.best_drop == 1.0 and info.value.best_model is not None


def test_within_budget_returns_int8_after_two_validations(digits_onnx, onnx_data):
    calls = []

    def validate(model, items):
        calls.append(1)
        return acm.accuracy(model, items)

    int8 = nncf.quantize_with_accuracy_control(digits_onnx, *onnx_data, validate, max_drop=0.05)
    assert len(calls) == 2
    assert "QuantizeLinear" in {n.op_type for n in int8.graph.node}
    assert not [v for v in nncf.last_report().skipped.values() if "accuracy control" in v]


@pytest.mark.slow
def test_several_groups_per_step_and_reranking(outlier_onnx, onnx_data):
    params = nncf.AdvancedAccuracyRestorerParameters(
        num_reverted_per_step=2, rerank_every=1, max_num_iterations=2, restore_mode="only_activations"
    )
    with pytest.raises(AccuracyDropError) as info:
        nncf.quantize_with_accuracy_control(
            outlier_onnx, *onnx_data, acm.accuracy_with_values, max_drop=0.0,
            advanced_accuracy_restorer_parameters=params,
        )
    assert HARMFUL["onnx"] in info.value.reverted and len(info.value.reverted) >= 2
    notes = " ".join(nncf.last_report().notes)
    assert "max_num_iterations=2 was reached" in notes or "every quantizer group" in notes


def test_groups_tie_operations_that_share_a_quantizer(digits_onnx, onnx_data):
    from nncompress.algorithms.quantization.pipeline import PTQOptions, run_ptq
    from nncompress.backends.registry import get_adapter

    ptq = run_ptq(get_adapter(digits_onnx), digits_onnx, onnx_data[0], PTQOptions(subset_size=20))
    groups = build_groups(ptq.graph, ptq.setup, ptq.edits)
    operations = [op for g in groups for op in g.operations]
    assert len(operations) == len(set(operations))
    shared = next(g for g in groups if "/Add" in g.operations)
    assert "/conv4/conv4.0/Conv" in shared.operations
    assert sum(len(g.edit_ids) for g in groups) == len(ptq.edits)
    only_act = build_groups(ptq.graph, ptq.setup, ptq.edits, "only_activations")
    assert all(type(ptq.edits[i]).__name__ == "QuantizeActivation" for g in only_act for i in g.edit_ids)


def test_helpers():
    assert parse_result(0.5).values is None
    assert parse_result((np.float32(0.5), [1, 0])).values == [1.0, 0.0]
    assert parse_result((0.5, [np.zeros(3)])).values is None  # per-item outputs: not per-sample values
    assert nmse([np.ones(4)], [np.zeros(4)]) == 1.0
    assert top_items([0.1, 0.5, 0.3, 0.9], 2) == [1, 3]
    with pytest.raises(ValidationError, match="validation_fn must return"):
        parse_result("high")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"validation_fn": 3}, "validation_fn must be callable"),
        ({"max_drop": -0.1}, "max_drop must be a non-negative number"),
        ({"drop_type": "percent"}, "drop_type must be one of"),
        ({"validation_dataset": [1, 2]}, "validation_dataset must be an nncompress.Dataset"),
        ({"advanced_accuracy_restorer_parameters": {}}, "AdvancedAccuracyRestorerParameters"),
        ({"advanced_accuracy_restorer_parameters": nncf.AdvancedAccuracyRestorerParameters(
            num_reverted_per_step=0)}, "num_reverted_per_step must be an integer >= 1"),
        ({"advanced_accuracy_restorer_parameters": nncf.AdvancedAccuracyRestorerParameters(
            restore_mode="weights")}, "restore_mode must be one of"),
    ],
)
def test_bad_arguments_are_rejected(digits_onnx, onnx_data, kwargs, message):
    args = {"validation_dataset": onnx_data[1], "validation_fn": acm.accuracy} | kwargs
    with pytest.raises(ValidationError, match=message):
        nncf.quantize_with_accuracy_control(digits_onnx, onnx_data[0], **args)


def test_bad_validation_result_is_reported(digits_onnx, onnx_data):
    with pytest.raises(ValidationError, match="validation_fn must return a finite number"):
        nncf.quantize_with_accuracy_control(digits_onnx, *onnx_data, lambda model, items: float("nan"))
