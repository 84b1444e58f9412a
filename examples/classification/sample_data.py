"""Data and models of the classification sample: offline datasets, a small CNN and a residual CNN.

- ``digits``: scikit-learn's 1,797 8x8 digits (bundled), upsampled to 16x16, 594 held out (stratified, seed 0).
- ``fashion_mnist``: 60k/10k 28x28 images from ``/usr/share/datasets/fashion-mnist`` (Debian package
  ``dataset-fashion-mnist``); only where installed.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DATASETS = ("digits", "fashion_mnist")
MODELS = ("small_cnn", "residual_cnn")


class Split(NamedTuple):
    """Images [N, 1, H, W] float32 in [0, 1] and int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_dataset(name: str) -> Split:
    """The named dataset as tensors; a clear error when it is unknown or not installed."""
    if name == "digits":
        return _digits()
    if name == "fashion_mnist":
        return _fashion_mnist()
    raise SystemExit(f"--dataset {name!r} is not known: valid datasets are {', '.join(DATASETS)}")


def _digits() -> Split:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy((digits.images / 16.0).astype(np.float32)).unsqueeze(1)
    images = F.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False).clamp_(0.0, 1.0).numpy()
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=594, stratify=labels, random_state=0
    )
    return Split(*(torch.from_numpy(np.ascontiguousarray(a)) for a in (x_train, y_train, x_test, y_test)))


def _read_idx(path: Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


def _fashion_mnist() -> Split:
    if not FASHION_MNIST_DIR.is_dir():
        raise SystemExit(
            f"Fashion-MNIST is not installed ({FASHION_MNIST_DIR} is missing): `apt-get install -y "
            "dataset-fashion-mnist`, or use --dataset digits"
        )
    arrays = []
    for split in ("train", "t10k"):
        images = _read_idx(FASHION_MNIST_DIR / f"{split}-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
        labels = _read_idx(FASHION_MNIST_DIR / f"{split}-labels-idx1-ubyte.gz", 8)
        arrays += [torch.from_numpy(images.astype(np.float32) / 255.0), torch.from_numpy(labels.astype(np.int64))]
    return Split(*arrays)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Four conv-bn-relu blocks, two max pools, global average pooling and a linear head (~0.1M parameters)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, 32), _conv_bn_relu(32, 32), nn.MaxPool2d(2),
            _conv_bn_relu(32, 64), _conv_bn_relu(64, 64), nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def _conv_bn(cin: int, cout: int, k: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


class ResidualCNN(nn.Module):
    """A stem, an inverted residual block (1x1 expand, depthwise 3x3, 1x1 project, skip add), a fire block
    (1x1 squeeze, 1x1 and 3x3 expands concatenated), global average pooling and a linear head: the
    structures filter pruning has to keep consistent (residual adds, depthwise convs, a concat)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(in_channels, 32)
        self.expand, self.dw, self.project = _conv_bn(32, 96), _conv_bn(96, 96, 3, groups=96), _conv_bn(96, 32)
        self.squeeze, self.e1, self.e3 = _conv_bn(32, 24), _conv_bn(24, 48), _conv_bn(24, 48, 3)
        self.classifier = nn.Linear(96, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.stem(x), 2)
        y = F.relu6(self.dw(F.relu6(self.expand(x))))
        x = x + self.project(y)
        s = F.relu(self.squeeze(x))
        x = torch.cat([F.relu(self.e1(s)), F.relu(self.e3(s))], dim=1)
        x = F.adaptive_avg_pool2d(F.max_pool2d(x, 2), 1)
        return self.classifier(torch.flatten(x, 1))


def make_model(name: str, num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """The sample model called ``name`` (the config's ``"model"``)."""
    if name == "small_cnn":
        return SmallCNN(num_classes, in_channels)
    if name == "residual_cnn":
        return ResidualCNN(num_classes, in_channels)
    raise SystemExit(f"model {name!r} is not known: valid models are {', '.join(MODELS)}")
