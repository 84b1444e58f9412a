"""Quantization-aware training of a PyTorch model, in the shape of NNCF 3.x's PyTorch QAT example:
PTQ initialisation, fine-tuning, a checkpoint with get_config, resuming with load_from_config, strip."""

import tempfile
from pathlib import Path

import nncf
import torch

from examples import digits_cnn

data = digits_cnn.load_digits_data()
model = digits_cnn.get_trained_digits_cnn().eval()
tensors = lambda x, y: torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))  # noqa: E731
train_loader = torch.utils.data.DataLoader(tensors(data.x_train[:640], data.y_train[:640]), batch_size=32, shuffle=True)
val_loader = torch.utils.data.DataLoader(tensors(data.x_test[:300], data.y_test[:300]), batch_size=100)
example_input = torch.from_numpy(data.x_test[:1])


def validate(model, loader) -> float:
    model.eval()
    with torch.no_grad():
        hits = [(model(images).argmax(1) == target).float() for images, target in loader]
    return float(torch.cat(hits).mean())


def train_epoch(model, loader, optimizer, steps: int) -> None:
    model.train()
    for step, (images, target) in enumerate(loader):
        if step == steps:
            break
        loss = torch.nn.functional.cross_entropy(model(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def transform_fn(data_item):
    images, _ = data_item
    return images


# --- PTQ initialisation, then fine-tuning --------------------------------------------------------------
quantized_model = nncf.quantize(model, nncf.Dataset(train_loader, transform_fn), subset_size=64)
torch.manual_seed(0)
optimizer = torch.optim.Adam(quantized_model.parameters(), lr=1e-5)
train_epoch(quantized_model, train_loader, optimizer, steps=3)
qat_top1 = validate(quantized_model, val_loader)
fp32_top1 = validate(model, val_loader)

# --- checkpoint and resume -----------------------------------------------------------------------------
checkpoint_path = Path(tempfile.mkdtemp()) / "qat_checkpoint.pth"
torch.save({"state_dict": quantized_model.state_dict(), "nncf_config": nncf.torch.get_config(quantized_model)},
           checkpoint_path)
resuming_checkpoint = torch.load(checkpoint_path)
resumed_model = nncf.torch.load_from_config(
    digits_cnn.DigitsCNN(), resuming_checkpoint["nncf_config"], example_input
)
resumed_model.load_state_dict(resuming_checkpoint["state_dict"])
assert validate(resumed_model, val_loader) == qat_top1

# --- strip for deployment ------------------------------------------------------------------------------
stripped = nncf.strip(resumed_model, do_copy=True)
dq_model = nncf.strip(resumed_model, strip_format=nncf.StripFormat.DQ, example_input=example_input)
with torch.no_grad():
    assert torch.equal(stripped(example_input), resumed_model(example_input))
    assert torch.allclose(dq_model(example_input), stripped(example_input), atol=1e-5)
in_place = nncf.strip(resumed_model, do_copy=False)
assert in_place is resumed_model
print(f"Accuracy @ top1: FP32 {fp32_top1:.4f}, INT8 after QAT {qat_top1:.4f}")
assert qat_top1 >= fp32_top1 - 0.01, (fp32_top1, qat_top1)
