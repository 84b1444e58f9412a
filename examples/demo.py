"""The main job: quantize a real CNN to INT8 with every installed backend and compare it with FP32.

Trains (or loads from the cache) a small CNN on scikit-learn's digits, quantizes it with
`nncompress.quantize` for ONNX Runtime, OpenVINO and PyTorch, and prints accuracy on 594 held-out
digits, model size and inference throughput at batch 64, before and after.

    python examples/demo.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nncompress as nncf  # noqa: E402
from bench import common  # noqa: E402
from examples import digits_cnn as digits  # noqa: E402

BATCH = 64


def calibration_dataset(data: digits.DigitsData) -> nncf.Dataset:
    """300 training images, one per item, as the calibration set."""
    return nncf.Dataset(list(data.x_train[:300]), lambda image: image[None])


def _speeds(runner, fp32, int8, batch) -> list[float]:
    """FP32 and INT8 images/s, measured interleaved in the same process (median of 5 rounds)."""
    figures = common.compare_throughput(runner(fp32, batch), runner(int8, batch))
    return [figures["fp32_tput"], figures["int8_tput"]]


def onnx_row(model_path: str, data, calib) -> list:
    import onnx

    fp32 = onnx.load(model_path)
    start = time.perf_counter()
    int8 = nncf.quantize(fp32, calib)
    seconds = time.perf_counter() - start
    accs = [digits.accuracy_onnx(m, data.x_test, data.y_test) for m in (fp32, int8)]
    sizes = [common.onnx_size_bytes(m) for m in (fp32, int8)]
    speeds = _speeds(common.onnx_run, fp32, int8, data.x_test[:BATCH])
    return ["ONNX Runtime", *accs, *sizes, *speeds, seconds]


def openvino_row(model_path: str, data, calib) -> list:
    fp32 = digits.to_openvino(model_path)
    start = time.perf_counter()
    int8 = nncf.quantize(fp32, calib)
    seconds = time.perf_counter() - start
    accs = [digits.accuracy_openvino(m, data.x_test, data.y_test) for m in (fp32, int8)]
    sizes = [common.openvino_size_bytes(m) for m in (fp32, int8)]
    speeds = _speeds(common.openvino_run, fp32, int8, data.x_test[:BATCH])
    return ["OpenVINO", *accs, *sizes, *speeds, seconds]


def torch_row(model, data, onnx_path: str, tmp: Path) -> list:
    """Quality of the fake-quantized torch module; size and speed of its OpenVINO export."""
    import torch

    from bench.ptq_cases import _torch_export_figures

    calib = nncf.Dataset(list(data.x_train[:300]), lambda image: torch.from_numpy(image[None]))
    start = time.perf_counter()
    int8 = nncf.quantize(model, calib)
    seconds = time.perf_counter() - start
    accs = [digits.accuracy_torch(m, data.x_test, data.y_test) for m in (model, int8)]
    figures = _torch_export_figures(onnx_path, int8, data.x_test[:1], data.x_test[:BATCH], tmp)
    fp32_size = common.openvino_size_bytes(digits.to_openvino(onnx_path))
    sizes = [fp32_size, fp32_size * figures["size_ratio"]]
    return ["PyTorch (exported to OpenVINO)", *accs, *sizes, figures["fp32_tput"], figures["int8_tput"], seconds]


def _format(row: list) -> list[str]:
    name, acc32, acc8, size32, size8, sp32, sp8, seconds = row
    return [
        name,
        f"{acc32:.4f}",
        f"{acc8:.4f} ({(acc8 - acc32) * 100:+.2f} pp)",
        f"{size32 / 1e6:.2f} MB",
        f"{size8 / 1e6:.2f} MB ({size8 / size32:.2f}x)",
        f"{sp32:,.0f}",
        f"{sp8:,.0f} ({sp8 / sp32:.2f}x)",
        f"{seconds:.2f} s",
    ]


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    data = digits.load_digits_data()
    model = digits.get_trained_digits_cnn(verbose=True)
    calib = calibration_dataset(data)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = digits.export_onnx(model, Path(tmp) / "digits.onnx")
        rows.append(onnx_row(path, data, calib))
        rows.append(openvino_row(path, data, calib))
        if _torch_backend_ready():
            rows.append(torch_row(model, data, path, Path(tmp)))
    headers = ["backend", "FP32 acc", "INT8 acc", "FP32 size", "INT8 size", "FP32 img/s", "INT8 img/s", "quantize"]
    table = Table(*headers, title=f"DigitsCNN, {len(data.x_test)} held-out digits, throughput at batch {BATCH}")
    for row in rows:
        table.add_row(*_format(row))
    Console(width=160).print(table)


def _torch_backend_ready() -> bool:
    try:
        import nncompress.backends.torch.adapter  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
