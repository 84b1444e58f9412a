"""The digits CNN with one layer that INT8 wrecks, and validation helpers for every backend.

``outlier_digits_cnn`` copies the trained DigitsCNN, multiplies output channel ``channel`` of the second
stem block by ``factor`` (its BatchNorm scale and shift) and divides conv3's weights for that input
channel by the same factor. ReLU and max pooling commute with a positive scale, so the float function
is unchanged, but conv3's per-tensor input quantizer gets a range ``factor`` times too wide and INT8
rounds every other channel to zero: conv3 is the one truly harmful operation.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

OUTLIER = 1000.0


def outlier_digits_cnn(cnn: Any, channel: int = 0, factor: float = OUTLIER) -> Any:
    """A copy of the trained DigitsCNN ``cnn`` with the outlier injected before conv3."""
    import torch

    model = copy.deepcopy(cnn).eval()
    bn = model.stem[1][1]
    with torch.no_grad():
        bn.weight[channel] *= factor
        bn.bias[channel] *= factor
        model.conv3[0].weight[:, channel] /= factor
    return model


def export_onnx(model: Any, path: str | Path) -> str:
    """Export a [N,1,16,16] -> [N,10] model to ONNX (opset 17, dynamic batch)."""
    from examples.digits_cnn import export_onnx as export

    return export(model, path)


def logits_of(model: Any, batch: np.ndarray) -> np.ndarray:
    """Outputs of a backend-ready model (CompiledModel, ModelProto or torch module) for one batch."""
    name = type(model).__name__
    if name == "CompiledModel":
        return np.asarray(model(batch)[0])
    if name == "ModelProto":
        import onnxruntime as ort

        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: batch})[0]
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(batch)).numpy()


def correct(model: Any, items: Any) -> np.ndarray:
    """Per-item correctness (1.0 / 0.0) for an iterable of (image [1,16,16], label) items."""
    items = list(items)
    images = np.stack([np.asarray(image) for image, _ in items]).astype(np.float32)
    labels = np.array([label for _, label in items])
    return (logits_of(model, images).argmax(axis=1) == labels).astype(np.float64)


def accuracy_with_values(model: Any, items: Any) -> tuple[float, list[float]]:
    """validation_fn returning (accuracy, per-item correctness)."""
    hits = correct(model, items)
    return float(hits.mean()), hits.tolist()


def accuracy(model: Any, items: Any) -> float:
    """validation_fn returning the accuracy only."""
    return float(correct(model, items).mean())


def error_rate(model: Any, items: Any) -> float:
    """validation_fn whose metric is lower-is-better (1 - accuracy)."""
    return 1.0 - accuracy(model, items)
