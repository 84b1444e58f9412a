"""Post-training quantization of an ONNX model, in the shape of NNCF's ONNX PTQ examples."""

import tempfile
from pathlib import Path

import nncf
import numpy as np
import onnx
import onnxruntime as ort

from examples import digits_cnn

# --- prepare: an ONNX file and a data loader --------------------------------------------------------------
data = digits_cnn.load_digits_data()
workdir = Path(tempfile.mkdtemp())
model_path = digits_cnn.export_onnx(digits_cnn.get_trained_digits_cnn(), workdir / "digits.onnx")
val_loader = [(data.x_test[i:i + 128], data.y_test[i:i + 128]) for i in range(0, len(data.x_test), 128)]
calibration_loader = [(data.x_train[i:i + 1], data.y_train[i:i + 1]) for i in range(300)]


def validate(path, loader) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    hits = [session.run(None, {name: images})[0].argmax(1) == target for images, target in loader]
    return float(np.concatenate(hits).mean())


# --- the NNCF part ---------------------------------------------------------------------------------------
model = onnx.load(model_path)
input_name = model.graph.input[0].name


def transform_fn(data_item):
    images, _ = data_item
    return {input_name: images}


calibration_dataset = nncf.Dataset(calibration_loader, transform_fn)
quantized_model = nncf.quantize(model, calibration_dataset, subset_size=300)
int8_path = workdir / "digits_int8.onnx"
onnx.save(quantized_model, int8_path)

fp32_top1, int8_top1 = validate(model_path, val_loader), validate(int8_path, val_loader)
print(f"Accuracy @ top1: FP32 {fp32_top1:.4f}, INT8 {int8_top1:.4f}")
assert int8_top1 >= fp32_top1 - 0.01, (fp32_top1, int8_top1)
assert any(node.op_type == "QuantizeLinear" for node in quantized_model.graph.node)
