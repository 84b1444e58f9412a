"""Quantization with accuracy control of an OpenVINO model, in the shape of NNCF's accuracy-control examples."""

import tempfile
from pathlib import Path

import nncf
import numpy as np
import openvino as ov

from examples import digits_cnn

data = digits_cnn.load_digits_data()
workdir = Path(tempfile.mkdtemp())
ov_model = ov.convert_model(digits_cnn.export_onnx(digits_cnn.get_trained_digits_cnn(), workdir / "digits.onnx"))
val_loader = [(data.x_test[i:i + 64], data.y_test[i:i + 64]) for i in range(0, len(data.x_test), 64)]
calibration_loader = [(data.x_train[i:i + 1], data.y_train[i:i + 1]) for i in range(300)]


def transform_fn(data_item):
    images, _ = data_item
    return images


def validate(model: ov.CompiledModel, validation_loader) -> float:
    output = model.outputs[0]
    hits = [np.argmax(model(images)[output], axis=1) == target for images, target in validation_loader]
    return float(np.concatenate(hits).mean())


calibration_dataset = nncf.Dataset(calibration_loader, transform_fn)
validation_dataset = nncf.Dataset(val_loader, transform_fn)

quantized_model = nncf.quantize_with_accuracy_control(
    ov_model,
    calibration_dataset=calibration_dataset,
    validation_dataset=validation_dataset,
    validation_fn=validate,
    max_drop=0.01,
    drop_type=nncf.DropType.ABSOLUTE,
)
fp32_top1 = validate(ov.compile_model(ov_model), validation_dataset.get_data())
int8_top1 = validate(ov.compile_model(quantized_model), validation_dataset.get_data())
print(f"Accuracy @ top1: FP32 {fp32_top1:.4f}, INT8 {int8_top1:.4f}")
assert fp32_top1 - int8_top1 <= 0.01 + 1e-9, (fp32_top1, int8_top1)
assert any(op.get_type_name() == "FakeQuantize" for op in quantized_model.get_ops())
