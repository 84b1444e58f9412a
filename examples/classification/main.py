"""Image classification with training-time compression (NNCF 2.x workflow) on offline datasets.

    python examples/classification/main.py --config examples/classification/configs/digits_int8_sym.json \
        --checkpoint-dir runs/int8 --export runs/int8/model.onnx
    torchrun --nproc_per_node 2 examples/classification/main.py --config ...     # DDP (gloo on CPU)
    python examples/classification/main.py --config ... --multiprocessing-distributed --world-size 2

Without --weights or --resume the FP32 model is trained first (``pretrain_epochs`` of the config), then
compressed with ``create_compressed_model`` and fine-tuned with the NNCF loop. The last line printed by
rank 0 is ``RESULT {json}`` with every top-1 figure (read by the tests and the benchmark). The loop itself is
``examples/common/training.py``, shared with the detection and segmentation samples.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from sample_data import DATASETS, load_dataset, make_model  # noqa: E402

from examples.common import training  # noqa: E402
from examples.common.training import StagedSchedule, is_better  # noqa: E402,F401  (the tests use them from here)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    training.add_common_args(p, default_checkpoint_dir="runs/classification")
    p.add_argument("--dataset", choices=DATASETS, help="overrides the config's dataset (default digits)")
    return p.parse_args(argv)


def _load(settings: dict) -> training.SampleData:
    data = load_dataset(settings["dataset"])
    return training.SampleData((data.x_train, data.y_train), (data.x_test, data.y_test))


def _model(settings: dict, data: training.SampleData) -> nn.Module:
    return make_model(settings["model"], in_channels=data.train[0].shape[1])


def _loss(net: nn.Module, batch: tuple, device: torch.device) -> torch.Tensor:
    xb, yb = batch
    return F.cross_entropy(net(xb.to(device)), yb.to(device))


def _top1(outputs: tuple[np.ndarray, ...], test: tuple[torch.Tensor, ...]) -> float:
    return float((outputs[0].argmax(1) == test[1].numpy()).mean())


def make_task(args: argparse.Namespace) -> training.Task:
    return training.Task(
        metric="top1", label="top-1", load_data=_load, make_model=_model, loss=_loss, metric_fn=_top1,
        defaults={"model": "small_cnn", "dataset": args.dataset or "digits"},
        criterion=nn.CrossEntropyLoss(), checkpoint_key="acc1", output_names=("logits",),
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    training.main(make_task(args), args)


if __name__ == "__main__":
    main()
