"""A tiny PyTorch MLP for fast API tests."""

from __future__ import annotations

import torch


class TinyMLP(torch.nn.Module):
    def __init__(self, hidden: int = 16):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(8, hidden), torch.nn.Linear(hidden, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def tiny_mlp_and_items(count: int = 8, hidden: int = 16):
    torch.manual_seed(0)
    return TinyMLP(hidden).eval(), [torch.randn(1, 8) for _ in range(count)]
