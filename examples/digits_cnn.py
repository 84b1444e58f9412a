"""The digits task: a small CNN on scikit-learn's 8x8 digits upsampled to 16x16.

Used by the demo, the benchmarks and the tests. Everything here works offline and fast:
the data ships with scikit-learn and the model trains in a few seconds on two CPU cores,
then is cached as a state_dict.

    from examples.digits_cnn import load_digits_data, get_trained_digits_cnn
    data = load_digits_data()
    model = get_trained_digits_cnn()
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

TEST_SIZE = 594
IMAGE_SIZE = 16
NUM_CLASSES = 10
SEED = 0
EPOCHS = 8
BATCH_SIZE = 32
LEARNING_RATE = 2e-3
CACHE_NAME = "digits_cnn_v1.pt"


class DigitsData(NamedTuple):
    """Train/test split of the digits: images [N,1,16,16] float32 in [0,1], labels int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _upsample(images: np.ndarray) -> np.ndarray:
    """Bilinearly upsample [N,8,8] images in [0,1] to [N,1,16,16] float32."""
    tensor = torch.from_numpy(images.astype(np.float32)).unsqueeze(1)
    up = F.interpolate(tensor, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return up.clamp_(0.0, 1.0).numpy()


def load_digits_data() -> DigitsData:
    """Load scikit-learn digits, upsample to 16x16 and split (594 test images, stratified, seed 0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = _upsample(digits.images / 16.0)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_SIZE, stratify=labels, random_state=SEED
    )
    return DigitsData(x_train, y_train, x_test, y_test)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DigitsCNN(nn.Module):
    """About 0.35M parameters: conv-bn-relu blocks, max pooling, one residual add, linear head."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_bn_relu(1, 32), _conv_bn_relu(32, 64), nn.MaxPool2d(2))
        self.conv3 = _conv_bn_relu(64, 128)
        self.conv4 = nn.Sequential(nn.Conv2d(128, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128))
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv5 = _conv_bn_relu(128, 96)
        self.head = nn.Linear(96, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.conv3(x)
        x = self.relu(y + self.conv4(y))
        x = self.conv5(self.pool(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.head(x)


def default_cache_dir() -> Path:
    """`$NNCOMPRESS_CACHE` or `~/.cache/nncompress`."""
    env = os.environ.get("NNCOMPRESS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "nncompress"


def train_digits_cnn(data: DigitsData, epochs: int = EPOCHS, seed: int = SEED) -> DigitsCNN:
    """Train a fresh DigitsCNN with Adam and a one-cycle schedule; returns it in eval mode."""
    torch.manual_seed(seed)
    model = DigitsCNN()
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    steps = epochs * ((len(x) + BATCH_SIZE - 1) // BATCH_SIZE)
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LEARNING_RATE, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(BATCH_SIZE):
            loss = F.cross_entropy(model(_augment(x[idx], gen)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts of up to one pixel (zero padded)."""
    dx, dy = (torch.randint(-1, 2, (2,), generator=gen)).tolist()
    padded = F.pad(x, (1, 1, 1, 1))
    return padded[:, :, 1 + dy : 1 + dy + IMAGE_SIZE, 1 + dx : 1 + dx + IMAGE_SIZE]


def get_trained_digits_cnn(cache_dir: str | os.PathLike | None = None, verbose: bool = False) -> DigitsCNN:
    """Return a trained DigitsCNN in eval mode, training it once and caching its state_dict."""
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / CACHE_NAME
    model = DigitsCNN()
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    start = time.perf_counter()
    model = train_digits_cnn(load_digits_data())
    if verbose:
        print(f"trained DigitsCNN in {time.perf_counter() - start:.1f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)  # atomic: concurrent test workers never read a partial file
    return model


def predict_torch(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class predictions of a torch model on [N,1,16,16] images."""
    model.eval()
    with torch.no_grad():
        logits = [model(torch.from_numpy(b)).numpy() for b in _batches(x, batch_size)]
    return np.concatenate(logits).argmax(axis=1)


def accuracy_torch(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a torch model."""
    return float((predict_torch(model, x) == y).mean())


def export_onnx(model: nn.Module, path: str | os.PathLike) -> str:
    """Export to ONNX (opset 17, BN folded in eval mode, dynamic batch); returns the path."""
    model.eval()
    dummy = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is what we want
        _export(model, dummy, path)
    return str(path)


def _export(model: nn.Module, dummy: torch.Tensor, path: str | os.PathLike) -> None:
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        dynamo=False,
        opset_version=17,
        do_constant_folding=True,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )


def to_openvino(onnx_path: str | os.PathLike) -> Any:
    """Convert an ONNX file to an `openvino.Model`."""
    import openvino as ov

    return ov.convert_model(str(onnx_path))


def _batches(x: np.ndarray, batch_size: int):
    for start in range(0, len(x), batch_size):
        yield np.ascontiguousarray(x[start : start + batch_size])


def predict_onnx(model_proto: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class predictions with ONNX Runtime (one session, batched)."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    logits = [session.run(None, {name: b})[0] for b in _batches(x, batch_size)]
    return np.concatenate(logits).argmax(axis=1)


def accuracy_onnx(model_proto: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of an ONNX ModelProto under ONNX Runtime."""
    return float((predict_onnx(model_proto, x) == y).mean())


def predict_openvino(ov_model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class predictions with OpenVINO on CPU in f32 (one compiled model, batched)."""
    import openvino as ov

    compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    logits = [request.infer({0: b})[0].copy() for b in _batches(x, batch_size)]
    return np.concatenate(logits).argmax(axis=1)


def accuracy_openvino(ov_model: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of an `openvino.Model` on CPU."""
    return float((predict_openvino(ov_model, x) == y).mean())


def main() -> None:
    """Train (or load) the model and print its accuracy in every installed backend."""
    import tempfile

    data = load_digits_data()
    model = get_trained_digits_cnn(verbose=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"DigitsCNN: {n_params / 1e6:.3f}M parameters, {len(data.x_test)} test images")
    print(f"torch     accuracy: {accuracy_torch(model, data.x_test, data.y_test):.4f}")
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, Path(tmp) / "digits.onnx")
        import onnx

        print(f"onnx      accuracy: {accuracy_onnx(onnx.load(onnx_path), data.x_test, data.y_test):.4f}")
        ov_acc = accuracy_openvino(to_openvino(onnx_path), data.x_test, data.y_test)
        print(f"openvino  accuracy: {ov_acc:.4f}")


if __name__ == "__main__":
    main()
