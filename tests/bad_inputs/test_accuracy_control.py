"""Bad inputs to ``quantize_with_accuracy_control`` on every backend: each gets a named error that names the bad
value before any work is done (issue 11's matrix). The double-reading validation_fn that must work is
``tests/api/test_accuracy_control.py::test_validation_fn_may_iterate_its_data_twice``."""

from __future__ import annotations

import numpy as np
import pytest

import nncompress as nncf
from nncompress.errors import OneShotDatasetError, ValidationError


def _mean_output(calls: list):
    """A validation_fn: the mean first output (a higher-is-better stand-in metric); counts its calls."""

    def validate(model, items) -> float:
        calls.append(model)
        return float(np.mean([np.mean(np.asarray(_first(model, item))) for item in items]))

    return validate


def _first(model, item):
    if hasattr(model, "forward"):
        import torch

        with torch.no_grad():
            return model(item).numpy()
    if hasattr(model, "SerializeToString"):
        import onnxruntime as ort

        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": item})[0]
    return model(item)[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"validation_fn": "accuracy"}, "validation_fn must be callable"),
        ({"max_drop": -0.1}, r"max_drop must be a non-negative number.*-0.1"),
        ({"drop_type": "percent"}, "drop_type must be one of.*'percent'"),
        ({"subset_size": -3}, r"subset_size.*-3"),
    ],
)
def test_bad_arguments_are_named_before_any_validation(case, kwargs, message):
    calls = []
    data = nncf.Dataset(case.items(4))
    args = {"validation_fn": _mean_output(calls)} | kwargs
    with pytest.raises(ValidationError, match=message):
        nncf.quantize_with_accuracy_control(case.model, data, data, **args)
    assert calls == []


def test_one_shot_validation_source_is_refused_before_any_work(case):
    calls, pulled = [], []

    def generator():
        for item in case.items(4):
            pulled.append(item)
            yield item

    calibration = nncf.Dataset(case.items(4))
    with pytest.raises(OneShotDatasetError, match=r"validation_dataset many times.*pass a list, or .*lambda"):
        nncf.quantize_with_accuracy_control(case.model, calibration, nncf.Dataset(generator()), _mean_output(calls))
    assert calls == [] and pulled == []


def test_a_one_shot_calibration_source_is_read_once_and_works(case):
    calls = []
    items = case.items(8)
    nncf.quantize_with_accuracy_control(
        case.model, nncf.Dataset(item for item in items), nncf.Dataset(items), _mean_output(calls), max_drop=1e9
    )
    assert len(calls) == 2  # FP32 and INT8: a drop within budget needs nothing else


def test_a_metric_that_is_not_a_number_is_named(case):
    data = nncf.Dataset(case.items(4))
    with pytest.raises(ValidationError, match="validation_fn must return"):
        nncf.quantize_with_accuracy_control(case.model, data, data, lambda model, items: "good")
