"""A small UNet: three downsamplings (to stride 8), nearest-neighbour upsampling, skip connections concatenated
at every scale, a 1x1 classifier per pixel."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class TinyUNet(nn.Module):
    """Encoder 16 (full size) / 32 (1/2) / 48 (1/4) / 64 (1/8) channels, decoder 32 / 24 / 16 channels;
    about 0.15M parameters."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.enc1 = _conv_bn_relu(3, 16)
        self.enc2 = _conv_bn_relu(16, 32, 2)
        self.enc3 = nn.Sequential(_conv_bn_relu(32, 48, 2), _conv_bn_relu(48, 48))
        self.bottleneck = nn.Sequential(_conv_bn_relu(48, 64, 2), _conv_bn_relu(64, 64))
        self.dec3 = _conv_bn_relu(64 + 48, 32)
        self.dec2 = _conv_bn_relu(32 + 32, 24)
        self.dec1 = _conv_bn_relu(24 + 16, 16)
        self.head = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        y = self.bottleneck(e3)
        y = self.dec3(torch.cat([F.interpolate(y, scale_factor=2.0, mode="nearest"), e3], 1))
        y = self.dec2(torch.cat([F.interpolate(y, scale_factor=2.0, mode="nearest"), e2], 1))
        y = self.dec1(torch.cat([F.interpolate(y, scale_factor=2.0, mode="nearest"), e1], 1))
        return self.head(y)
