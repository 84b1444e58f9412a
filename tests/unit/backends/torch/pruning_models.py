"""Small models for the filter-pruning tests (residual + depthwise + concat, shared module, Sequential)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ResidualDW(nn.Module):
    """stem -> [1x1 expand, BN, ReLU, depthwise 3x3, BN, 1x1 project] + skip -> concat with a branch
    -> BN -> conv -> flatten -> Linear (a block of 16 features per channel)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.expand = nn.Conv2d(32, 64, 1)
        self.bn1 = nn.BatchNorm2d(64)
        self.dw = nn.Conv2d(64, 64, 3, padding=1, groups=64)
        self.bn2 = nn.BatchNorm2d(64)
        self.project = nn.Conv2d(64, 32, 1)
        self.branch = nn.Conv2d(32, 16, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(48)
        self.down = nn.Conv2d(48, 24, 3, stride=2, padding=1)
        self.head = nn.Linear(24 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = torch.relu(self.bn1(self.expand(x)))
        y = torch.nn.functional.relu6(self.bn2(self.dw(y)))
        x = x + self.project(y)
        z = torch.cat([x, torch.sigmoid(self.branch(x))], dim=1)
        z = self.down(torch.relu(self.bn3(z)))
        return self.head(torch.flatten(z, 1))


class SharedTwice(nn.Module):
    """One conv module called twice (same weights), then a head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.shared = nn.Conv2d(16, 16, 3, padding=1)
        self.out = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.shared(x))
        x = self.shared(x)
        return self.out(x).mean(dim=(2, 3))


def sequential() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 24),
        nn.GELU(),
        nn.Linear(24, 5),
    )


def randomize_norms(model: nn.Module) -> nn.Module:
    """Non-trivial batch-norm statistics and affine parameters, eval mode."""
    torch.manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model.eval()


def half_masks(groups, seed: int = 0) -> dict[int, np.ndarray]:
    """Keep a random half of every prunable group (at least one channel)."""
    rng = np.random.default_rng(seed)
    keep = {}
    for group in groups.prunable():
        mask = np.zeros(group.channels, bool)
        mask[rng.choice(group.channels, group.channels // 2, replace=False)] = True
        keep[group.id] = mask
    return keep


class SqueezeExcite(nn.Module):
    """conv -> x * sigmoid(expand(relu(reduce(mean(x))))) -> conv: the gate's producer joins x's."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.conv = nn.Conv2d(16, 32, 3, padding=1)
        self.reduce = nn.Conv2d(32, 8, 1)
        self.expand = nn.Conv2d(8, 32, 1)
        self.out = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        x = torch.nn.functional.hardswish(self.conv(torch.relu(self.stem(x))))
        gate = torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return self.out(x * gate)


class TokenMLP(nn.Module):
    """[N, T, C] tokens: a residual MLP (fc1 prunable, fc2 joined with the input)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 64)
        self.fc2 = nn.Linear(64, 16)

    def forward(self, x):
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(x)))
