"""INT8 accuracy of a torchvision-style ResNet-18 on the digits: PyTorch backend vs ONNX backend.

    python bench/torch_resnet_parity.py [--width 64] [--epochs 3]

Trains (once, cached as a state_dict in the nncompress cache) the ResNet-18 of ``tests/resnet_models``
(torchvision's BasicBlock: one in-place ReLU module called twice, ``out += identity``), quantizes it
as a ``torch.nn.Module`` and, exported with ``torch.onnx.export``, as an ONNX model, both with
``nncompress.quantize`` on the same 300 training images, and prints top-1 on the 594 held-out digits.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench import common, harness  # noqa: E402
from examples.digits_cnn import default_cache_dir, load_digits_data  # noqa: E402
from tests.resnet_models import ResNet18, int8_accuracies, train_resnet18  # noqa: E402


def trained_model(data, width: int, epochs: int) -> ResNet18:
    path = default_cache_dir() / f"digits_resnet18_w{width}_e{epochs}.pt"
    model = ResNet18(width)
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    start = time.perf_counter()
    model = train_resnet18(data, width, epochs)
    print(f"trained ResNet-18 (width {width}, {epochs} epochs) in {time.perf_counter() - start:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    data = load_digits_data()
    model = trained_model(data, args.width, args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        acc = int8_accuracies(model, data, Path(tmp))
    row = [f"ResNet-18 width {args.width}", f"{acc['fp32']:.4f}", f"{acc['torch_int8']:.4f}",
           f"{acc['onnx_int8']:.4f}", f"{100 * (acc['torch_int8'] - acc['onnx_int8']):+.2f}"]
    headers = ["model", "FP32 top-1", "PyTorch INT8", "ONNX INT8", "PyTorch - ONNX (pp)"]
    table = common.markdown_table(headers, [row])
    print(table)
    if not args.no_write:
        command = f"python bench/torch_resnet_parity.py --width {args.width} --epochs {args.epochs}"
        notes = (harness.provenance(command) + " Accuracy only (no timing). Digits (scikit-learn, 16x16), 594 "
                 "held-out images; both INT8 models from `nncompress.quantize` with default parameters on the same "
                 "300 calibration images.")
        common.write_benchmarks_section("PyTorch ResNet-18 INT8 parity", command, table, notes)


if __name__ == "__main__":
    main()
