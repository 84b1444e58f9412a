"""Full bias correction (``quantize(..., fast_bias_correction=False)``) on EfficientNet-Lite0: the region
runner's one sequential pass against the whole-model waves it replaced, in one process.

    python bench/full_bias_correction.py                 # onnx and openvino
    python bench/full_bias_correction.py --backend onnx

Per backend and path: wall and process CPU seconds of the whole quantize call, the corrected biases' largest
difference between the paths, and top-1 agreement of INT8 with FP32 on the shipped photos (as bench/ptq.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nncompress as nncf  # noqa: E402
from bench import ptq_cases  # noqa: E402
from bench.ptq_cases import efficientnet_setup  # noqa: E402
from nncompress.algorithms.quantization import bias_correction  # noqa: E402
from nncompress.errors import UnsupportedModelError  # noqa: E402


def _waves_only(self, dataset):
    raise UnsupportedModelError("the bench measures the wave path")


def _quantize(setup, waves: bool) -> tuple[object, float, float]:
    original = bias_correction._RegionPass.edits
    if waves:
        bias_correction._RegionPass.edits = _waves_only
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        int8 = nncf.quantize(setup.model, setup.calibration, fast_bias_correction=False)
        return int8, time.perf_counter() - wall, time.process_time() - cpu
    finally:
        bias_correction._RegionPass.edits = original


def run(backend: str, paths: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        setup = efficientnet_setup(backend, Path(tmp))
        photos = ptq_cases.real.efficientnet_photos()
        fp32 = ptq_cases._runner(backend, setup.model)
        result = {"backend": backend}
        for path in paths:
            int8, wall, cpu = _quantize(setup, waves=path == "waves")
            run8 = ptq_cases._runner(backend, int8)
            kept = sum(fp32(x).argmax() == run8(x).argmax() for _, x in photos)
            result[path] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "top1_kept": f"{kept}/{len(photos)}"}
        if len(paths) == 2:
            result["cpu_ratio_new_over_old"] = round(result["regions"]["cpu_s"] / result["waves"]["cpu_s"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["onnx", "openvino"], action="append")
    parser.add_argument("--path", choices=["regions", "waves"], action="append")
    args = parser.parse_args()
    for backend in args.backend or ["onnx", "openvino"]:
        print(json.dumps(run(backend, args.path or ["regions", "waves"])), flush=True)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
