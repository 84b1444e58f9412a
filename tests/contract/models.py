"""Tiny torch networks, each exercising one placement rule, exported to ONNX and OpenVINO."""

from __future__ import annotations

import warnings

import torch
from torch import nn


class ConvBnReluPoolLinear(nn.Module):
    """Fused conv+bn+relu, propagation through MaxPool and Flatten, first-layer overflow fix."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(x, 1))


class Residual(nn.Module):
    """Conv followed by a residual Add (fused): only the skip input of the Add is quantized."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        skip = torch.relu(self.stem(x))
        return self.head(torch.relu(self.conv(skip) + skip))


class ConcatBranches(nn.Module):
    """Two activations concatenated then convolved: unified ranges on the Concat inputs."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(torch.cat([torch.sigmoid(self.a(x)), torch.tanh(self.b(x))], dim=1))


class Depthwise(nn.Module):
    """Pointwise conv + ReLU6 then a depthwise conv: per-channel activation quantizer."""

    def __init__(self):
        super().__init__()
        self.pw = nn.Conv2d(3, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = torch.clamp(self.pw(x), 0.0, 6.0)
        return self.head(torch.clamp(self.dw(x), 0.0, 6.0))


class SwishBranch(nn.Module):
    """x*sigmoid(x) fused with its conv; a branch to a float-only op keeps per-consumer quantizers."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        y = y * torch.sigmoid(y)
        pooled = torch.max_pool2d(y, 2)
        return self.head(pooled), torch.softmax(y, dim=1)


class TinyAttention(nn.Module):
    """One self-attention block: transformer placement rules."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        scores = self.q(x) @ self.k(x).transpose(1, 2) / 4.0
        ctx = torch.softmax(scores, dim=-1) @ self.v(x)
        return self.norm(self.o(ctx) + x)


IMAGE_INPUT = (1, 3, 8, 8)
MODELS = {
    "conv_bn_relu_pool_linear": (ConvBnReluPoolLinear, IMAGE_INPUT),
    "residual": (Residual, IMAGE_INPUT),
    "concat": (ConcatBranches, IMAGE_INPUT),
    "depthwise": (Depthwise, IMAGE_INPUT),
    "swish_branch": (SwishBranch, IMAGE_INPUT),
    "attention": (TinyAttention, (1, 6, 16)),
}


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    cls, shape = MODELS[name]
    return cls().eval(), torch.randn(*shape)


def export_onnx(model: nn.Module, example: torch.Tensor, path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, opset_version=17, input_names=["x"],
            dynamic_axes={"x": {0: "batch"}},
        )
    return str(path)
