"""Magnitude pruning with batch-norm adaptation, in the shape of NNCF 3.x's pruning usage docs."""

import nncf
import torch

from examples import digits_cnn

data = digits_cnn.load_digits_data()
model = digits_cnn.get_trained_digits_cnn().eval()
tensors = lambda x, y: torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))  # noqa: E731
train_loader = torch.utils.data.DataLoader(tensors(data.x_train, data.y_train), batch_size=64, shuffle=True)
example_input = torch.from_numpy(data.x_test[:1])


def transform_fn(data_item):
    images, _ = data_item
    return images


pruned_model = nncf.prune(
    model, mode=nncf.PruneMode.UNSTRUCTURED_MAGNITUDE_GLOBAL, ratio=0.5, examples_inputs=example_input
)
stat = nncf.pruning_statistic(pruned_model)
print(stat)
assert abs(stat.pruning_ratio - 0.5) < 0.01, stat

calibration_dataset = nncf.Dataset(train_loader, transform_func=transform_fn)
pruned_model = nncf.batch_norm_adaptation(pruned_model, calibration_dataset=calibration_dataset, num_iterations=5)

with torch.no_grad():
    x, y = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    fp32_top1 = float((model(x).argmax(1) == y).float().mean())
    pruned_top1 = float((pruned_model(x).argmax(1) == y).float().mean())
print(f"Accuracy @ top1: FP32 {fp32_top1:.4f}, 50% pruned {pruned_top1:.4f}")
assert pruned_top1 >= fp32_top1 - 0.05, (fp32_top1, pruned_top1)
stripped = nncf.strip(pruned_model)
weights = [p for name, p in stripped.named_parameters() if name.endswith("weight") and p.ndim > 1]
zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
assert abs(zeros - 0.5) < 0.01, zeros  # the masks are baked into the plain model's weights
