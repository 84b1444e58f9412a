"""A torchvision-style ResNet-18 for the 16x16 digits, written here (torchvision does not import beside torch).

Same structure as torchvision's ``resnet18``: ``BasicBlock`` = conv3x3-bn-relu-conv3x3-bn, a 1x1
conv + bn downsample where the shape changes, ``out += identity`` and ONE ``nn.ReLU(inplace=True)``
module called twice; stem conv-bn-relu-maxpool; adaptive average pool; fc. Only the stem conv is
3x3 stride 1 (instead of 7x7 stride 2) so that 16x16 digits still reach layer4 at 1x1.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: one in-place ReLU module used twice, in-place residual add."""

    def __init__(self, cin: int, cout: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class ResNet18(nn.Module):
    """ResNet-18 (2-2-2-2 BasicBlocks); ``width`` 64 is torchvision's."""

    def __init__(self, width: int = 64, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, 1)
        self.layer2 = self._make_layer(width * 2, 2)
        self.layer3 = self._make_layer(width * 4, 2)
        self.layer4 = self._make_layer(width * 8, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8, num_classes)

    def _make_layer(self, planes: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes))
        first = BasicBlock(self.inplanes, planes, stride, downsample)
        self.inplanes = planes
        return nn.Sequential(first, BasicBlock(planes, planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def train_resnet18(data: Any, width: int, epochs: int, seed: int = 0, batch_size: int = 64,
                   lr: float = 3e-3) -> ResNet18:
    """Train a fresh ResNet18 on the digits (Adam, one-cycle); returns it in eval mode."""
    torch.manual_seed(seed)
    model = ResNet18(width)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def accuracy_torch(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(x[i : i + 256])) for i in range(0, len(x), 256)])
    return float((logits.argmax(1).numpy() == y).mean())


def accuracy_onnx(model_proto: Any, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    logits = np.concatenate([session.run(None, {name: x[i : i + 256]})[0] for i in range(0, len(x), 256)])
    return float((logits.argmax(1) == y).mean())


def export_onnx(model: nn.Module, path: Path) -> Any:
    """``model`` exported with torch.onnx.export (opset 17, BN folded, dynamic batch), loaded back."""
    import onnx

    model = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 1, 16, 16),), str(path), dynamo=False, opset_version=17,
                          do_constant_folding=True, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return onnx.load(str(path))


def int8_accuracies(model: nn.Module, data: Any, tmp: Path, subset: int = 300, **options: Any) -> dict[str, float]:
    """FP32, PyTorch INT8 and ONNX INT8 (nncompress on the torch.onnx export) top-1 on the test split;
    ``options`` go to both ``nncompress.quantize`` calls."""
    import nncompress as nncf

    images = data.x_train[:subset]
    torch_int8 = nncf.quantize(model, nncf.Dataset(list(images), lambda i: torch.from_numpy(i[None])), **options)
    onnx_fp32 = export_onnx(model, tmp / "resnet18.onnx")
    onnx_int8 = nncf.quantize(onnx_fp32, nncf.Dataset(list(images), lambda i: i[None]), **options)
    x, y = data.x_test, data.y_test
    return {"fp32": accuracy_torch(model, x, y), "torch_int8": accuracy_torch(torch_int8, x, y),
            "onnx_int8": accuracy_onnx(onnx_int8, x, y)}
