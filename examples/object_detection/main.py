"""Object detection with training-time compression (NNCF 2.x workflow): a small SSD-style detector on synthetic
images of shapes (scikit-image's ``draw.random_shapes``), scored by VOC-style mAP@0.5 on held-out images.

    python examples/object_detection/main.py --config examples/object_detection/configs/ssd_int8.json \
        --checkpoint-dir runs/ssd_int8 --export runs/ssd_int8/model.onnx

Without --weights or --resume the FP32 detector is trained first (``pretrain_epochs``), then compressed with
``create_compressed_model`` and fine-tuned with the NNCF loop (``examples/common/training.py``). With --export the
exported model runs in ONNX Runtime / OpenVINO on the test images: its mAP and its largest difference from
PyTorch are printed. The last line is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples.common import shapes, training  # noqa: E402
from examples.object_detection.metrics import mean_average_precision  # noqa: E402
from examples.object_detection.model import TinySSD, detect, make_anchors, multibox_loss  # noqa: E402

IMAGE_SIZE = 64
ANCHORS = make_anchors(IMAGE_SIZE)
DEFAULTS = {"model": "tiny_ssd", "dataset": "random_shapes", "train_images": 1200, "test_images": 300,
            "data_seed": 0, "max_shapes": 3, "pretrain_lr": 3e-3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    training.add_common_args(p, default_checkpoint_dir="runs/object_detection")
    p.add_argument("--train-images", type=int, help="synthetic training images (overrides the config)")
    p.add_argument("--test-images", type=int, help="synthetic held-out images (overrides the config)")
    return p.parse_args(argv)


def load_data(settings: dict) -> training.SampleData:
    train, test = shapes.train_test(settings | {"image_size": IMAGE_SIZE})
    return training.SampleData((train.images, train.boxes, train.labels), (test.images, test.boxes, test.labels))


def make_model(settings: dict, data: training.SampleData) -> nn.Module:
    if settings["model"] != "tiny_ssd":
        raise SystemExit(f"model {settings['model']!r} is not known: the valid model is tiny_ssd")
    return TinySSD(num_classes=len(shapes.CLASSES), anchors_per_cell=6)


def loss(net: nn.Module, batch: tuple, device: torch.device) -> torch.Tensor:
    x, boxes, labels = batch
    cls_logits, deltas = net(x.to(device))
    return multibox_loss(cls_logits, deltas, ANCHORS.to(device), boxes.to(device), labels.to(device))


def map50(outputs: tuple[np.ndarray, ...], test: tuple[torch.Tensor, ...]) -> float:
    """mAP@0.5 of the heads' outputs on the held-out images."""
    detections = detect(outputs[0], outputs[1], ANCHORS)
    labels = test[2].numpy()
    gt_boxes = [b[lab > 0] for b, lab in zip(test[1].numpy(), labels)]
    gt_labels = [lab[lab > 0] for lab in labels]
    return mean_average_precision(detections, gt_boxes, gt_labels, len(shapes.CLASSES))[0]


TASK = training.Task(metric="map50", label="mAP@0.5", load_data=load_data, make_model=make_model, loss=loss,
                     metric_fn=map50, defaults=DEFAULTS, checkpoint_key="map50",
                     output_names=("class_logits", "box_deltas"), eval_batch=200)


def main(argv: list[str] | None = None) -> None:
    training.main(TASK, parse_args(argv))


if __name__ == "__main__":
    main()
