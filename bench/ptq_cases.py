"""Model, calibration data and evaluation of each `bench/ptq.py` case."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import nncompress as nncf
from bench import common
from bench import models as real

BATCH = 64


@dataclass
class CaseSetup:
    model: Any
    calibration: nncf.Dataset
    evaluate: Callable[[Any], dict]
    options: dict = field(default_factory=dict)


def _backend_model(torch_model, backend: str, onnx_path: str):
    if backend == "torch":
        return torch_model
    import onnx

    if backend == "onnx":
        return onnx.load(onnx_path)
    import openvino as ov

    return ov.convert_model(onnx_path)


def _runner(backend: str, model):
    """A callable mapping one input item (array or dict) to the first output as numpy."""
    if backend == "onnx":
        session = common.onnx_session(model)
        names = [i.name for i in session.get_inputs()]
        return lambda item: session.run(None, common._feed(names, item))[0]
    if backend == "openvino":
        compiled = common.compile_openvino(model)
        request = compiled.create_infer_request()
        return lambda item: request.infer(item if isinstance(item, dict) else {0: item})[0].copy()
    import torch

    def run(item):
        with torch.no_grad():
            if isinstance(item, dict):
                out = model(**{k: torch.from_numpy(v) for k, v in item.items()})
            else:
                out = model(torch.from_numpy(item))
        out = out[0] if isinstance(out, (tuple, list)) else getattr(out, "last_hidden_state", out)
        return out.numpy()

    return run


def _timed_run(backend: str, model, batch) -> tuple:
    """(no-argument call running ``model`` on ``batch``, batch size) for the throughput comparison."""
    if backend == "onnx":
        return common.onnx_run(model, batch)
    if backend == "openvino":
        return common.openvino_run(model, batch)
    run = _runner("torch", model)
    size = len(next(iter(batch.values()))) if isinstance(batch, dict) else len(batch)
    return (lambda: run(batch)), size


def _size(backend: str, model) -> float | None:
    if backend == "onnx":
        return common.onnx_size_bytes(model)
    if backend == "openvino":
        return common.openvino_size_bytes(model)
    return None


def digits_setup(backend: str, tmp: Path) -> CaseSetup:
    from examples import digits_cnn as digits

    data = digits.load_digits_data()
    torch_model = digits.get_trained_digits_cnn()
    onnx_path = digits.export_onnx(torch_model, tmp / "digits.onnx")
    fp32 = _backend_model(torch_model, backend, onnx_path)
    calib = nncf.Dataset(list(data.x_train[:300]), _item_transform(backend, lambda image: image[None]))

    def accuracy(model) -> float:
        run = _runner(backend, model)
        logits = np.concatenate([run(data.x_test[i : i + 256]) for i in range(0, len(data.x_test), 256)])
        return float((logits.argmax(1) == data.y_test).mean())

    def evaluate(int8) -> dict:
        acc32, acc8 = accuracy(fp32), accuracy(int8)
        figures = _common_figures(backend, fp32, int8, data.x_test[:BATCH])
        if backend == "torch":
            figures = _torch_export_figures(onnx_path, int8, data.x_test[:1], data.x_test[:BATCH], tmp)
        return figures | {
            "fp32_quality": f"acc {acc32:.4f}", "int8_quality": f"acc {acc8:.4f} ({(acc8 - acc32) * 100:+.2f} pp)",
        }

    return CaseSetup(fp32, calib, evaluate)


def _item_transform(backend: str, transform):
    """Torch models get torch tensors, the other backends numpy arrays."""
    if backend != "torch":
        return transform
    import torch

    def to_torch(item):
        value = transform(item)
        if isinstance(value, dict):
            return {k: torch.from_numpy(v) for k, v in value.items()}
        return torch.from_numpy(value)

    return to_torch


def _torch_export_figures(fp32_onnx_path: str, int8, example: np.ndarray, batch, tmp: Path) -> dict:
    """Throughput in OpenVINO of the FP32 model and of the INT8 torch model exported with nncf.export."""
    import openvino as ov
    import torch

    int8_xml = nncf.export(int8, tmp / "int8_torch.xml", format="openvino", example_input=torch.from_numpy(example))
    fp32_ov = ov.convert_model(fp32_onnx_path)
    int8_ov = ov.Core().read_model(str(int8_xml))
    sizes = [common.openvino_size_bytes(m) for m in (fp32_ov, int8_ov)]
    return {"size_ratio": sizes[1] / sizes[0]} | common.compare_throughput(
        common.openvino_run(fp32_ov, batch), common.openvino_run(int8_ov, batch)
    )


def _common_figures(backend: str, fp32, int8, batch) -> dict:
    sizes = [_size(backend, m) for m in (fp32, int8)]
    return {"size_ratio": sizes[1] / sizes[0] if sizes[0] else None} | common.compare_throughput(
        _timed_run(backend, fp32, batch), _timed_run(backend, int8, batch)
    )


def minilm_setup(backend: str, tmp: Path) -> CaseSetup:
    torch_model, tokenizer = real.load_minilm()
    sentences = real.minilm_sentences(300)
    evaluation, calibration = sentences[:64], sentences[64:]
    wrapped = real._LastHiddenState(torch_model).eval()
    fp32 = _backend_model(wrapped, backend, real.export_minilm_onnx(torch_model, tmp / "minilm.onnx"))
    calib = nncf.Dataset(real.minilm_inputs(tokenizer, calibration), _item_transform(backend, lambda item: item))
    eval_items = real.minilm_inputs(tokenizer, evaluation)

    def embeddings(model) -> np.ndarray:
        run = _runner(backend, model)
        return np.concatenate([real.mean_pooled_embeddings(run(i), i["attention_mask"]) for i in eval_items])

    def evaluate(int8) -> dict:
        cos = (embeddings(fp32) * embeddings(int8)).sum(axis=1)
        batch = real.minilm_inputs(tokenizer, (evaluation * 2)[:BATCH], batch_size=BATCH)[0]
        return _common_figures(backend, fp32, int8, batch) | {
            "fp32_quality": "cosine 1", "int8_quality": f"cosine {cos.mean():.4f} (min {cos.min():.4f})",
        }

    return CaseSetup(fp32, calib, evaluate, {"model_type": nncf.ModelType.TRANSFORMER})


def efficientnet_setup(backend: str, tmp: Path) -> CaseSetup:
    torch_model = real.load_efficientnet_lite0()
    fp32 = _backend_model(torch_model, backend, real.export_efficientnet_onnx(torch_model, tmp / "effnet.onnx"))
    photos = real.efficientnet_photos()
    calib = nncf.Dataset(_augmented_photos(photos + _extra_images(), 100))

    def evaluate(int8) -> dict:
        run32, run8 = _runner(backend, fp32), _runner(backend, int8)
        kept = [name for name, x in photos if run32(x).argmax() == run8(x).argmax()]
        batch = np.concatenate([x for _, x in photos] * 2)[:8]
        return _common_figures(backend, fp32, int8, batch) | {
            "fp32_quality": f"{len(photos)} photos", "int8_quality": f"top-1 kept on {len(kept)}/{len(photos)}",
        }

    return CaseSetup(fp32, calib, evaluate)


EXTRA_SKIMAGE = (
    "brick", "camera", "clock", "coins", "colorwheel", "grass", "gravel", "hubble_deep_field",
    "immunohistochemistry", "microaneurysms", "moon", "page", "retina", "text", "stereo_motorcycle",
)


def _extra_images() -> list[tuple[str, np.ndarray]]:
    """More scikit-image pictures (grey ones as RGB) to widen the calibration set beyond the photos."""
    import warnings

    from skimage import data as skdata

    images = []
    for name in EXTRA_SKIMAGE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = getattr(skdata, name)()
        image = image[0] if isinstance(image, tuple) else image
        image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
        images.append((name, real._preprocess(image)))
    return images


def _augmented_photos(photos, count: int) -> list[np.ndarray]:
    """Random flips and shifted crops of the photos (calibration data; the photos are evaluated whole)."""
    rng = np.random.default_rng(0)
    items = []
    for i in range(count):
        image = photos[i % len(photos)][1]
        dy, dx = rng.integers(-16, 17, size=2)
        shifted = np.roll(image, (int(dy), int(dx)), axis=(2, 3))
        items.append(np.ascontiguousarray(shifted[..., ::-1] if rng.random() < 0.5 else shifted))
    return items
