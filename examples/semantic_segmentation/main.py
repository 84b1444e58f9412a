"""Semantic segmentation with training-time compression (NNCF 2.x workflow): a small UNet on synthetic images of
shapes (scikit-image's ``draw.random_shapes``) with per-pixel masks (background + 4 shape kinds), scored by mIoU on
held-out images.

    python examples/semantic_segmentation/main.py --config examples/semantic_segmentation/configs/unet_int8.json \
        --checkpoint-dir runs/unet_int8 --export runs/unet_int8/model.onnx

Without --weights or --resume the FP32 UNet is trained first (``pretrain_epochs``), then compressed with
``create_compressed_model`` and fine-tuned with the NNCF loop (``examples/common/training.py``). With --export the
exported model runs in ONNX Runtime / OpenVINO on the test images: its mIoU and its largest difference from
PyTorch are printed. The last line is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples.common import shapes, training  # noqa: E402
from examples.semantic_segmentation.metrics import mean_iou  # noqa: E402
from examples.semantic_segmentation.model import TinyUNet  # noqa: E402

NUM_CLASSES = len(shapes.CLASSES) + 1  # background + the shape kinds
DEFAULTS = {"model": "tiny_unet", "dataset": "random_shapes", "train_images": 600, "test_images": 150,
            "data_seed": 0, "max_shapes": 3, "pretrain_lr": 3e-3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    training.add_common_args(p, default_checkpoint_dir="runs/semantic_segmentation")
    p.add_argument("--train-images", type=int, help="synthetic training images (overrides the config)")
    p.add_argument("--test-images", type=int, help="synthetic held-out images (overrides the config)")
    return p.parse_args(argv)


def load_data(settings: dict) -> training.SampleData:
    train, test = shapes.train_test(settings | {"image_size": 64})
    return training.SampleData((train.images, train.masks), (test.images, test.masks))


def make_model(settings: dict, data: training.SampleData) -> nn.Module:
    if settings["model"] != "tiny_unet":
        raise SystemExit(f"model {settings['model']!r} is not known: the valid model is tiny_unet")
    return TinyUNet(NUM_CLASSES)


def loss(net: nn.Module, batch: tuple, device: torch.device) -> torch.Tensor:
    x, masks = batch
    return F.cross_entropy(net(x.to(device)), masks.to(device))


def miou(outputs: tuple[np.ndarray, ...], test: tuple[torch.Tensor, ...]) -> float:
    """mIoU (background included) of the per-pixel argmax on the held-out images."""
    return mean_iou(outputs[0].argmax(1), test[1].numpy(), NUM_CLASSES)[0]


TASK = training.Task(metric="miou", label="mIoU", load_data=load_data, make_model=make_model, loss=loss,
                     metric_fn=miou, defaults=DEFAULTS, criterion=nn.CrossEntropyLoss(), checkpoint_key="miou",
                     output_names=("logits",), eval_batch=100)


def main(argv: list[str] | None = None) -> None:
    training.main(TASK, parse_args(argv))


if __name__ == "__main__":
    main()
