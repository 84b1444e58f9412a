"""Post-training quantization of a PyTorch classifier, in the shape of NNCF's PyTorch PTQ examples."""

import nncf
import torch

from examples import digits_cnn

# --- prepare the model and data (the examples download a model and a dataset here) -----------------------
data = digits_cnn.load_digits_data()
model = digits_cnn.get_trained_digits_cnn()
model.eval()
tensors = lambda x, y: torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))  # noqa: E731
val_loader = torch.utils.data.DataLoader(tensors(data.x_test, data.y_test), batch_size=128)
calibration_loader = torch.utils.data.DataLoader(tensors(data.x_train[:320], data.y_train[:320]), batch_size=32)


def validate(model: torch.nn.Module, loader: torch.utils.data.DataLoader) -> float:
    correct = total = 0
    with torch.no_grad():
        for images, target in loader:
            correct += int((model(images).argmax(1) == target).sum())
            total += len(target)
    return correct / total


# --- the NNCF part ---------------------------------------------------------------------------------------
def transform_fn(data_item):
    images, _ = data_item
    return images


calibration_dataset = nncf.Dataset(calibration_loader, transform_fn)
quantized_model = nncf.quantize(model, calibration_dataset)

fp32_top1 = validate(model, val_loader)
int8_top1 = validate(quantized_model, val_loader)
print(f"Accuracy @ top1: FP32 {fp32_top1:.4f}, INT8 {int8_top1:.4f}")
assert fp32_top1 > 0.95 and int8_top1 >= fp32_top1 - 0.01, (fp32_top1, int8_top1)
assert type(quantized_model) is type(model)

# the stripped model (NNCF's examples save it) computes the same outputs
stripped = nncf.strip(quantized_model)
images = next(iter(val_loader))[0]
with torch.no_grad():
    assert torch.equal(stripped(images), quantized_model(images))
