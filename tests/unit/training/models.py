"""A small CNN and scikit-learn digits loaders for the training-time tests."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class SmallCNN(nn.Module):
    """Conv-BN-ReLU x2, max-pool, linear: ~10k parameters on 1x8x8 digits."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(32 * 4 * 4, classes)
        self.note = "user attribute"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.fc(x.flatten(1))

    def describe(self) -> str:
        return f"SmallCNN({self.note})"


def digits(split: str = "train"):
    """(images float32 N x 1 x 8 x 8 scaled to [0, 1], labels int64); a fixed 1400/397 split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images.astype(np.float32) / 16.0)[:, None]
    y = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    idx = order[:1400] if split == "train" else order[1400:]
    return torch.from_numpy(x[idx]), torch.from_numpy(y[idx])


def loader(split: str = "train", batch_size: int = 64, shuffle: bool = False, limit: int | None = None):
    x, y = digits(split)
    x, y = x[:limit], y[:limit]
    dataset = torch.utils.data.TensorDataset(x, y)
    generator = torch.Generator().manual_seed(0)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def train(model: nn.Module, data, epochs: int = 1, lr: float = 3e-3, step_fn=None) -> nn.Module:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    criterion = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        for x, y in data:
            if step_fn is not None:
                step_fn()
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, data) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in data:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return correct / total


_TRAINED: dict = {}


def trained_cnn(epochs: int = 4) -> SmallCNN:
    """A SmallCNN trained on digits (cached per process; callers get a copy)."""
    import copy

    if epochs not in _TRAINED:
        torch.manual_seed(0)
        _TRAINED[epochs] = train(SmallCNN(), loader(shuffle=True), epochs=epochs)
    return copy.deepcopy(_TRAINED[epochs])
