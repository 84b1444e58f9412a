"""One tiny CNN in every backend, with calibration items of the kind each backend takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from tests.contract import backends  # noqa: E402

BACKENDS = ("onnx", "openvino", "torch")


class TwoConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


@dataclass
class Case:
    """A model of one backend and how to turn numpy arrays into its inputs."""

    backend: str
    model: Any
    torch_model: nn.Module

    def item(self, array: np.ndarray) -> Any:
        return torch.from_numpy(array) if self.backend == "torch" else array

    def items(self, n: int = 8, seed: int = 0) -> list:
        rng = np.random.default_rng(seed)
        return [self.item(rng.normal(size=(1, 3, 8, 8)).astype(np.float32)) for _ in range(n)]

    def run(self, model: Any, array: np.ndarray) -> np.ndarray:
        """The first output of ``model`` (a result of this backend) on ``array``."""
        return backends.run(model, array)


def make_case(backend: str, tmp_path, mutate=None) -> Case:
    torch.manual_seed(0)
    module = TwoConvs().eval()
    if mutate is not None:
        with torch.no_grad():
            mutate(module)
    return Case(backend, backends.as_backend(module, torch.zeros(1, 3, 8, 8), backend, tmp_path), module)


@pytest.fixture(params=BACKENDS)
def case(request, tmp_path) -> Case:
    return make_case(request.param, tmp_path)
