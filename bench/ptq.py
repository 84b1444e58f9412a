"""Post-training INT8 quantization benchmark (`quantize`) on real models, every backend.

    python bench/ptq.py                  # every case, each in its own process; writes BENCHMARKS.md
    python bench/ptq.py --case digits:onnx   # one case, prints its figures as JSON

Figures per case: quantize wall time (in-process timer), peak RSS of the case's process, FP32 vs
INT8 quality (digits accuracy on 594 held-out images; MiniLM embedding cosine on real sentences;
EfficientNet-Lite0 top-1 agreement on the shipped photos), model size, throughput FP32 vs INT8.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nncompress as nncf  # noqa: E402
from bench import common, harness  # noqa: E402
from bench import ptq_cases as cases  # noqa: E402

CASES = [
    "digits:onnx", "digits:openvino", "digits:torch",
    "minilm:onnx", "minilm:openvino", "minilm:torch",
    "efficientnet:onnx", "efficientnet:openvino",
]


def run_case(name: str) -> dict:
    task, backend = name.split(":")
    with tempfile.TemporaryDirectory() as tmp:
        setup = getattr(cases, f"{task}_setup")(backend, Path(tmp))
        rss_before = common.peak_rss_mb()
        last = []  # only the latest result is kept: peak RSS is one call's, not that of every repeat

        def call() -> None:
            last[:] = []
            last.append(nncf.quantize(setup.model, setup.calibration, **setup.options))

        timing = harness.repeat(call)
        int8 = last[0]
        rss_after = common.peak_rss_mb()
        result = {
            "case": name, "quantize_s": timing.spread.as_dict(), "quantize_load": timing.load.describe(),
            "busy": timing.busy, "peak_rss_mb": rss_after, "rss_rise_mb": rss_after - rss_before,
        }
        result.update(setup.evaluate(int8))
    return result


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _spread(figure: dict | None, spec: str) -> str:
    if figure is None:
        return "–"
    return f"{figure['median']:{spec}} ({figure['min']:{spec}}-{figure['max']:{spec}})"


def table(results: list[dict]) -> str:
    headers = [
        "case", "quantize s, median (min-max)", "peak RSS MB", "FP32 quality", "INT8 quality", "size INT8/FP32",
        "FP32 samples/s", "INT8 samples/s", "INT8/FP32 speed, median (min-max)", "load",
    ]
    rows = []
    for r in results:
        speedup = r.get("speedup")
        rows.append([
            r["case"], _spread(r["quantize_s"], ".3f"), _fmt(r["peak_rss_mb"], ".0f"), r["fp32_quality"],
            r["int8_quality"], _fmt(r.get("size_ratio"), ".3f"), _fmt(r.get("fp32_tput"), ",.0f"),
            _fmt(r.get("int8_tput"), ",.0f"), _spread(speedup, ".2f"),
            ("BUSY " if r.get("busy") else "") + r.get("load", r["quantize_load"]),
        ])
    return common.markdown_table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=CASES, help="run one case in this process and print JSON")
    parser.add_argument("--cases", nargs="*", default=CASES, help="cases to run (default: all)")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--allow-busy", action="store_true", help="measure even when the load exceeds the cores")
    args = parser.parse_args()
    if args.case:
        print("RESULT " + json.dumps(run_case(args.case)))
        return
    harness.require_quiet(args.allow_busy)
    results = common.run_cases_in_subprocesses(__file__, args.cases)
    text = table(results)
    print(text)
    if not args.no_write:
        notes = (
            f"{harness.provenance('python bench/ptq.py')} Quantize time: {harness.REPEATS} calls after a warm-up. "
            f"Speed: FP32 and INT8 run interleaved, {harness.REPEATS} rounds of 1 s each, the ratio taken per round. "
            "Throughput: batch 64 (EfficientNet: batch 8), 2 threads, "
            "one synchronous request, OpenVINO pinned to f32 precision for FP32 and INT8 alike. Quality: digits "
            "top-1 accuracy on 594 held-out images; MiniLM mean (min) cosine of INT8 vs FP32 sentence embeddings "
            "on 64 real sentences not used for calibration; EfficientNet photos whose top-1 class INT8 keeps. "
            "PyTorch rows: quality of the fake-quantized module; size and throughput of the INT8 model exported with "
            "`nncompress.export(..., format='openvino')` against the FP32 model in OpenVINO."
        )
        common.write_benchmarks_section("Post-training quantization (quantize)", "python bench/ptq.py", text, notes)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
