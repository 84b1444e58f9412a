"""quantize_with_accuracy_control: a drop equal to max_drop (up to float rounding) is within budget."""

from __future__ import annotations

import pytest

import nncompress as nncf

torch = pytest.importorskip("torch")


def _setup():
    from .tiny_models import tiny_mlp_and_items

    model, items = tiny_mlp_and_items()
    return model, nncf.Dataset(items), nncf.Dataset(items)


def _scripted(first: float, then: float):
    """validation_fn returning ``first`` on the first call (the float model) and ``then`` afterwards."""
    calls = []

    def validate(model, data):
        calls.append(model)
        return first if len(calls) == 1 else then

    return validate, calls


def test_drop_equal_to_max_drop_is_within_budget():
    model, calibration, validation = _setup()
    validate, calls = _scripted(0.9, 0.89)  # drop 0.9 - 0.89 = 0.010000000000000009 in floating point
    result = nncf.quantize_with_accuracy_control(model, calibration, validation, validate, max_drop=0.01)
    assert len(calls) == 2  # FP32 and INT8 only: no revert was needed
    assert calls[1] is result
    assert any("drop 0.01 " in note for note in nncf.last_report().notes)


def test_drop_above_max_drop_still_raises():
    model, calibration, validation = _setup()
    validate, calls = _scripted(0.9, 0.8899)
    with pytest.raises(nncf.AccuracyDropError, match="the best drop is 0.0101 ") as error:
        nncf.quantize_with_accuracy_control(model, calibration, validation, validate, max_drop=0.01)
    assert error.value.best_drop == pytest.approx(0.0101)
    assert len(calls) > 2  # reverts were tried


def test_num_ranking_workers_warns_once_that_it_has_no_effect(caplog):
    import logging

    from nncompress import log
    from nncompress.api.accuracy_control import _restorer_options

    log._warned.discard("num_ranking_workers")
    _, data, _ = _setup()
    advanced = nncf.AdvancedAccuracyRestorerParameters(num_ranking_workers=4)
    with caplog.at_level(logging.WARNING, logger="nncompress"):
        _restorer_options(data, lambda m, d: 0.0, advanced=nncf.AdvancedAccuracyRestorerParameters())
        plain = _restorer_options(data, lambda m, d: 0.0, max_drop=0.02)
        first = _restorer_options(data, lambda m, d: 0.0, max_drop=0.02, advanced=advanced)
        _restorer_options(data, lambda m, d: 0.0, advanced=advanced)
    (message,) = [r.getMessage() for r in caplog.records if "num_ranking_workers" in r.getMessage()]
    assert "num_ranking_workers=4 has no effect" in message
    assert first == plain


def test_unsupported_restorer_options_warn_once_per_process(caplog, monkeypatch):
    import logging

    from nncompress import log
    from nncompress.api.accuracy_control import _warn_unsupported

    monkeypatch.setattr(log, "_warned", set())
    advanced = nncf.AdvancedAccuracyRestorerParameters(tune_hyperparams=True, intermediate_model_dir="/tmp/x")
    with caplog.at_level(logging.WARNING, logger="nncompress"):
        for _ in range(3):
            _warn_unsupported(advanced)
    assert caplog.text.count("tune_hyperparams=True is not supported yet") == 1
    assert caplog.text.count("intermediate_model_dir is not supported yet") == 1
