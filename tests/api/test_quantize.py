"""quantize on ONNX and OpenVINO: accuracy, input untouched, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

import nncompress as nncf
from nncompress.errors import CalibrationError, UnsupportedModelError, ValidationError

onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def calib(digits_data):
    return nncf.Dataset(list(digits_data.x_train[:100]), lambda image: image[None])


def test_onnx_int8_keeps_accuracy_and_leaves_input_untouched(digits_onnx, digits_data, calib):
    from examples.digits_cnn import accuracy_onnx

    before = digits_onnx.SerializeToString()
    int8 = nncf.quantize(digits_onnx, calib)
    assert digits_onnx.SerializeToString() == before
    ops = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    fp32_acc = accuracy_onnx(digits_onnx, digits_data.x_test, digits_data.y_test)
    int8_acc = accuracy_onnx(int8, digits_data.x_test, digits_data.y_test)
    assert int8_acc >= fp32_acc - 0.002
    report = nncf.last_report()
    assert report.backend == "onnx" and report.quantized and report.calibration_items == 100


def test_openvino_int8_keeps_accuracy_and_round_trips(digits_openvino, digits_data, calib, tmp_path):
    ov = pytest.importorskip("openvino")
    from examples.digits_cnn import accuracy_openvino, predict_openvino

    int8 = nncf.quantize(digits_openvino, calib)
    assert any(op.get_type_name() == "FakeQuantize" for op in int8.get_ops())
    assert not any(op.get_type_name() == "FakeQuantize" for op in digits_openvino.get_ops())
    fp32_acc = accuracy_openvino(digits_openvino, digits_data.x_test, digits_data.y_test)
    assert accuracy_openvino(int8, digits_data.x_test, digits_data.y_test) >= fp32_acc - 0.002
    ov.save_model(int8, tmp_path / "int8.xml")
    loaded = ov.Core().read_model(tmp_path / "int8.xml")
    x = digits_data.x_test[:64]
    np.testing.assert_array_equal(predict_openvino(loaded, x), predict_openvino(int8, x))


def test_wrong_model_type_is_rejected():
    with pytest.raises(UnsupportedModelError, match="openvino.Model, onnx.ModelProto, torch.nn.Module"):
        nncf.quantize("model.onnx", nncf.Dataset([1]))


def test_dataset_must_be_wrapped(digits_onnx, digits_data):
    with pytest.raises(ValidationError, match="nncompress.Dataset"):
        nncf.quantize(digits_onnx, list(digits_data.x_train[:4]))


@pytest.mark.parametrize("subset_size", [0, -3, 2.5, True])
def test_subset_size_must_be_positive_int(digits_onnx, calib, subset_size):
    with pytest.raises(ValidationError, match="subset_size"):
        nncf.quantize(digits_onnx, calib, subset_size=subset_size)


def test_unknown_enum_values_list_valid_ones(digits_onnx, calib):
    with pytest.raises(ValidationError, match="preset must be one of 'performance', 'mixed'"):
        nncf.quantize(digits_onnx, calib, preset="turbo")
    with pytest.raises(ValidationError, match="target_device"):
        nncf.quantize(digits_onnx, calib, target_device="TPU")
    with pytest.raises(ValidationError, match="model_type"):
        nncf.quantize(digits_onnx, calib, model_type="cnn")


def test_empty_dataset_is_a_calibration_error(digits_onnx):
    with pytest.raises(CalibrationError, match="empty"):
        nncf.quantize(digits_onnx, nncf.Dataset([]))


def test_short_dataset_uses_every_item_and_says_so(digits_onnx, digits_data):
    nncf.quantize(digits_onnx, nncf.Dataset(list(digits_data.x_train[:3]), lambda image: image[None]))
    report = nncf.last_report()
    assert report.calibration_items == 3
    assert any("fewer than subset_size=300" in note for note in report.notes)


def test_transform_fn_that_raises_names_the_item(digits_onnx, digits_data):
    def broken(image):
        raise KeyError("pixels")

    with pytest.raises(CalibrationError, match="transform_fn raised KeyError on dataset item 0"):
        nncf.quantize(digits_onnx, nncf.Dataset(list(digits_data.x_train[:4]), broken))


def test_transform_fn_with_wrong_inputs_names_expected_inputs(digits_onnx, digits_data):
    wrong_rank = nncf.Dataset(list(digits_data.x_train[:4]))  # [1,16,16] instead of [N,1,16,16]
    with pytest.raises(CalibrationError, match="input"):
        nncf.quantize(digits_onnx, wrong_rank)
    wrong_name = nncf.Dataset([{"pixels": digits_data.x_train[:1]}])
    with pytest.raises(CalibrationError, match="input"):
        nncf.quantize(digits_onnx, wrong_name)


def test_ignored_scope_that_matches_nothing_is_an_error(digits_onnx, calib):
    with pytest.raises(ValidationError, match="matched no operation: name 'no_such_op'"):
        nncf.quantize(digits_onnx, calib, ignored_scope=nncf.IgnoredScope(names=["no_such_op"]))


def test_ignored_scope_keeps_layers_in_float(digits_onnx, calib):
    convs = [n.name for n in digits_onnx.graph.node if n.op_type == "Conv"]
    int8 = nncf.quantize(digits_onnx, calib, ignored_scope=nncf.IgnoredScope(names=convs[:1]))
    assert convs[0] in nncf.last_report().skipped
    first = next(n for n in int8.graph.node if n.name == convs[0])
    producers = {o: n.op_type for n in int8.graph.node for o in n.output}
    assert all(producers.get(i) != "DequantizeLinear" for i in first.input)


@pytest.mark.parametrize("mode", [nncf.QuantizationMode.FP8_E4M3, nncf.QuantizationMode.FP8_E5M2])
def test_fp8_modes_keep_accuracy(digits_onnx, digits_data, calib, mode):
    from examples.digits_cnn import accuracy_onnx

    fp8 = nncf.quantize(digits_onnx, calib, mode=mode)
    fp32_acc = accuracy_onnx(digits_onnx, digits_data.x_test, digits_data.y_test)
    assert accuracy_onnx(fp8, digits_data.x_test, digits_data.y_test) >= fp32_acc - 0.01


def test_range_estimator_parameters_change_activation_ranges(digits_onnx, calib):
    import onnx.numpy_helper as nh

    def activation_scales(model):
        inits = {i.name: nh.to_array(i) for i in model.graph.initializer}
        return {n.name: float(inits[n.input[1]]) for n in model.graph.node
                if n.op_type == "QuantizeLinear" and inits[n.input[1]].ndim == 0}

    default = activation_scales(nncf.quantize(digits_onnx, calib))
    minmax = nncf.RangeEstimatorParametersSet.MINMAX
    params = nncf.AdvancedQuantizationParameters(activations_range_estimator_params=minmax)
    widest = activation_scales(nncf.quantize(digits_onnx, calib, advanced_parameters=params))
    assert default.keys() == widest.keys()
    assert all(widest[k] >= default[k] - 1e-9 for k in default)  # global extremes >= mean of extremes
    assert any(widest[k] > default[k] * 1.05 for k in default)
