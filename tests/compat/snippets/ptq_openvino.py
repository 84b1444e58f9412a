"""Post-training quantization of an OpenVINO model, in the shape of NNCF's OpenVINO PTQ examples."""

import tempfile
from pathlib import Path

import nncf
import numpy as np
import openvino as ov

from examples import digits_cnn

# --- prepare: an OpenVINO IR and a data loader ------------------------------------------------------------
data = digits_cnn.load_digits_data()
workdir = Path(tempfile.mkdtemp())
onnx_path = digits_cnn.export_onnx(digits_cnn.get_trained_digits_cnn(), workdir / "digits.onnx")
ov.save_model(ov.convert_model(onnx_path), workdir / "digits.xml")
val_loader = [(data.x_test[i:i + 1], data.y_test[i:i + 1]) for i in range(len(data.x_test))]
calibration_loader = [(data.x_train[i:i + 1], data.y_train[i:i + 1]) for i in range(300)]


def validate(model: ov.Model, loader) -> float:
    compiled_model = ov.compile_model(model, device_name="CPU")
    output = compiled_model.outputs[0]
    predictions = [np.argmax(compiled_model(images)[output], axis=1) == target for images, target in loader]
    return float(np.mean(predictions))


# --- the NNCF part ---------------------------------------------------------------------------------------
ov_model = ov.Core().read_model(workdir / "digits.xml")


def transform_fn(data_item):
    images, _ = data_item
    return images


calibration_dataset = nncf.Dataset(calibration_loader, transform_fn)
ov_quantized_model = nncf.quantize(ov_model, calibration_dataset, preset=nncf.QuantizationPreset.MIXED)
ov.save_model(ov_quantized_model, workdir / "digits_int8.xml")

fp32_top1 = validate(ov_model, val_loader)
int8_top1 = validate(ov.Core().read_model(workdir / "digits_int8.xml"), val_loader)
print(f"Accuracy @ top1: FP32 {fp32_top1:.4f}, INT8 {int8_top1:.4f}")
assert int8_top1 >= fp32_top1 - 0.01, (fp32_top1, int8_top1)
assert any(op.get_type_name() == "FakeQuantize" for op in ov_quantized_model.get_ops())
