"""Quantization with accuracy control (`quantize_with_accuracy_control`) on the digits task, every backend.

    python bench/accuracy_control.py                     # every case, each in its own process; writes BENCHMARKS.md
    python bench/accuracy_control.py --case outlier:onnx:0.01   # one case, prints its figures as JSON

Cases: the trained digits CNN with max_drop 0.01 and 0.001, and the same CNN with an outlier channel
injected before conv3 (float function unchanged, plain INT8 collapses; see tests/accuracy_control_models.py);
`outlier-full` sets restore_mode="activations_and_weights" (reverted operations lose their weight quantizers too).
Metric: top-1 accuracy on the 594 held-out images, returned with per-image correctness (the
`outlier-scalar` case returns the accuracy alone, so groups are ranked by output error instead).
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
from bench import common, harness  # noqa: E402
from tests import accuracy_control_models as acm  # noqa: E402

BACKENDS = ("onnx", "openvino", "torch")
CASES = [f"digits:{b}:{d}" for b in BACKENDS for d in ("0.01", "0.001")]
CASES += [f"outlier:{b}:0.01" for b in BACKENDS] + ["outlier:onnx:0.001", "outlier:openvino:0.001"]
CASES += ["outlier-full:onnx:0.001", "outlier-full:openvino:0.001", "outlier-scalar:onnx:0.01"]
BATCH = 256


def _backend_model(torch_model, backend: str, tmp: Path):
    if backend == "torch":
        return torch_model
    path = acm.export_onnx(torch_model, tmp / "model.onnx")
    if backend == "onnx":
        import onnx

        return onnx.load(path)
    import openvino as ov

    return ov.convert_model(path)


def _ready(model):
    """What validation_fn receives for `model` (used to measure the returned model)."""
    if type(model).__name__ == "Model":
        from nncompress.backends.openvino.runner import compile_model

        return compile_model(model)
    return model


class CountingValidation:
    """Accuracy on (image, label) items; remembers every metric it returned."""

    def __init__(self, per_sample: bool):
        self.per_sample = per_sample
        self.metrics: list[float] = []
        self.seconds = 0.0

    def __call__(self, model, items):
        start = time.perf_counter()
        items = list(items)
        hits = np.concatenate([acm.correct(model, items[i : i + BATCH]) for i in range(0, len(items), BATCH)])
        self.seconds += time.perf_counter() - start
        self.metrics.append(float(hits.mean()))
        return (self.metrics[-1], hits.tolist()) if self.per_sample else self.metrics[-1]


def run_case(name: str) -> dict:
    from examples import digits_cnn as digits

    task, backend, max_drop = name.split(":")
    data = digits.load_digits_data()
    cnn = digits.get_trained_digits_cnn()
    if task.startswith("outlier"):
        cnn = acm.outlier_digits_cnn(cnn)
    to_input = _to_input(backend)
    calibration = nncf.Dataset(list(data.x_train[:300]), to_input)
    validation = nncf.Dataset(list(zip(data.x_test, data.y_test)), lambda item: to_input(item[0]))
    with tempfile.TemporaryDirectory() as tmp:
        model = _backend_model(cnn, backend, Path(tmp))
        restore = "activations_and_weights" if task == "outlier-full" else None
        params = nncf.AdvancedAccuracyRestorerParameters(**({"restore_mode": restore} if restore else {}))
        runs = []

        def control() -> None:
            runs.clear()  # the previous run's model is freed before this one: peak RSS is one run's
            validate = CountingValidation(per_sample=task != "outlier-scalar")
            try:
                result, error = nncf.quantize_with_accuracy_control(
                    model, calibration, validation, validate, max_drop=float(max_drop),
                    advanced_accuracy_restorer_parameters=params,
                ), None
            except nncf.AccuracyDropError as exc:
                result, error = exc.best_model, str(exc)
            runs[:] = [(result, error, validate)]

        timing = harness.repeat(control)
        result, error, validate = runs[0]
        calls = len(validate.metrics)
        final = CountingValidation(False)(_ready(result), validation.get_data())
    report = nncf.last_report()
    reverted = [op for op, why in report.skipped.items() if "by accuracy control" in why]
    fp32, int8 = validate.metrics[0], validate.metrics[1]
    return {
        "case": name, "seconds": timing.spread.as_dict(), "load": timing.load.describe(), "busy": timing.busy,
        "quantize_s": report.timings.get("quantize", 0.0),
        "validation_s": report.timings.get("validation", 0.0), "validation_fn_s": validate.seconds,
        "validation_calls": calls, "fp32": fp32, "int8": int8, "final": final, "drop": fp32 - final,
        "reverted": reverted, "num_ops": _num_ops(report), "error": error, "peak_rss_mb": common.peak_rss_mb(),
    }


def _to_input(backend: str):
    if backend == "torch":
        import torch

        return lambda image: torch.from_numpy(image[None])
    return lambda image: image[None]


def _num_ops(report) -> int | None:
    for note in report.notes:
        if " operations reverted" in note:
            return int(note.split(" of ")[1].split()[0])
    return None


def table(results: list[dict]) -> str:
    headers = [
        "case", "max_drop", "FP32 acc", "plain INT8 acc", "final acc", "final drop", "reverted ops",
        "validation calls", "validation s (incl. compile)", "quantize s", "total s, median (min-max)", "peak RSS MB",
        "load",
    ]
    rows = []
    for r in results:
        task, backend, max_drop = r["case"].split(":")
        reverted = f"{len(r['reverted'])}/{r['num_ops']}" + (f" ({', '.join(r['reverted'])})" if r["reverted"] else "")
        rows.append([
            f"{task}:{backend}", max_drop, f"{r['fp32']:.4f}", f"{r['int8']:.4f}", f"{r['final']:.4f}",
            f"{r['drop']:+.4f}" + (" (budget not met)" if r["error"] else ""), reverted, r["validation_calls"],
            f"{r['validation_s']:.2f}", f"{r['quantize_s']:.2f}", harness.Spread.from_dict(r["seconds"]).format(".2f"),
            f"{r['peak_rss_mb']:.0f}", ("BUSY " if r["busy"] else "") + r["load"],
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
        common.write_benchmarks_section("Quantization with accuracy control", "python bench/accuracy_control.py",
                                        text, _notes())


def _notes() -> str:
    return (
        f"{harness.provenance('python bench/accuracy_control.py')} Total s: {harness.REPEATS} runs after a warm-up; "
        "the validation and quantize split is the last run's (from the report). Digits CNN, 300 calibration images, "
        "accuracy on the 594 held-out "
        "images as the metric (per-image correctness returned, except `outlier-scalar`, whose validation_fn returns "
        "the accuracy only and is ranked by output error). `outlier`: the same CNN with one channel before conv3 "
        "scaled by 1000 (and conv3's weights for it divided by 1000): identical in float, plain INT8 collapses. "
        "Validation calls include FP32, INT8, the degraded-model probe that settles the metric direction, the "
        "ranking (metric mode: one call per quantizer group on the ranking subset) and one per revert step. "
        "Default restorer parameters (restore_mode as in AdvancedAccuracyRestorerParameters, i.e. "
        f"{nncf.AdvancedAccuracyRestorerParameters().restore_mode!r}) except `outlier-full` (activations_and_weights). "
        "Total s includes "
        "quantization; validation s includes compiling each candidate once (OpenVINO)."
    )


if __name__ == "__main__":
    main()
