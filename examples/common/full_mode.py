"""Full mode of a sample: train its FP32 config, then every compression config from those FP32 weights, and print
a markdown table of the metric before/after compression (the table in BENCHMARKS.md).

    python examples/common/full_mode.py object_detection --out runs/full_detection --jobs 4
    python examples/common/full_mode.py semantic_segmentation --out runs/full_segmentation --jobs 4
    python examples/common/full_mode.py object_detection --out runs/full_detection --table-only   # from the logs

Each run writes ``<out>/<config>.log`` and ``<out>/<config>/`` (checkpoints, the exported model: ONNX, or
OpenVINO IR for the pruning + INT8 config).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
METRICS = {"object_detection": ("map50", "mAP@0.5"), "semantic_segmentation": ("miou", "mIoU")}


def configs(sample: str) -> tuple[str, list[str]]:
    """(the FP32 config, the compression configs) of a sample, by file name."""
    names = sorted(p.stem for p in (REPO / "examples" / sample / "configs").glob("*.json"))
    fp32 = [n for n in names if n.endswith("_fp32")]
    if len(fp32) != 1:
        raise SystemExit(f"examples/{sample}/configs must hold exactly one *_fp32.json; found {fp32}")
    return fp32[0], [n for n in names if n != fp32[0]]


def run(sample: str, config: str, out: Path, *extra: str) -> None:
    ext = "xml" if "pruning_int8" in config else "onnx"
    cmd = [sys.executable, str(REPO / "examples" / sample / "main.py"), "--config",
           str(REPO / "examples" / sample / "configs" / f"{config}.json"), "--checkpoint-dir", str(out / config),
           "--export", str(out / config / f"model.{ext}"), *extra]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    env.setdefault("OMP_NUM_THREADS", "1")
    with open(out / f"{config}.log", "w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): see {out / f'{config}.log'}")


def _last(pattern: str, text: str) -> str:
    found = re.findall(pattern, text)
    return found[-1].strip() if found else "-"


def row(config: str, log: str, metric: str) -> str:
    """One table row from a run's log: metrics, the exported model's metric and distance, compression figures."""
    result = json.loads(_last(r"RESULT (.*)", log))
    per_epoch = ", ".join(f"{e[metric]:.3f}" for e in result["epochs"])
    fp32, final = result[f"fp32_{metric}"], result[f"final_{metric}"]
    sparsity = _last(r"Sparsity level of the sparsified weights\s*│\s*([\d.]+ %)", log)
    flops = _last(r"FLOPs \(M\): full / current\s*│\s*([^│]+)│", log)
    figures = "; ".join(x for x in (f"sparsity {sparsity}" if sparsity != "-" else "",
                                    f"MFLOPs {flops}" if flops != "-" else "") if x) or "-"
    exported = (f"{result[f'export_{metric}']:.3f} ({result['max_abs_diff']:.2g} / {result['mean_abs_diff']:.2g} "
                f"of {result['output_scale']:.3g})")
    return (f"| `{config}` | {fp32:.3f} | {result[f'init_{metric}']:.3f} | {per_epoch} | {final:.3f} | "
            f"{100 * (final - fp32):+.1f} | {exported} | {figures} |")


def table(sample: str, out: Path) -> str:
    metric, label = METRICS[sample]
    fp32, others = configs(sample)
    lines = [f"| config | FP32 {label} | after compression init | {label} per epoch | final {label} | Δ (pp) | "
             "exported model's metric (max / mean abs diff of outputs vs PyTorch, of max abs output) | compression |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [row(c, (out / f"{c}.log").read_text(), metric) for c in [fp32, *others]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sample", choices=sorted(METRICS))
    p.add_argument("--out", required=True, help="folder of the runs' logs and checkpoints")
    p.add_argument("--jobs", type=int, default=1, help="compression configs run at once")
    p.add_argument("--table-only", action="store_true", help="print the table from the logs already in --out")
    args = p.parse_args(argv)
    out = Path(args.out)
    if not args.table_only:
        out.mkdir(parents=True, exist_ok=True)
        fp32, others = configs(args.sample)
        run(args.sample, fp32, out)
        weights = str(out / fp32 / "fp32.pth")
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda c: run(args.sample, c, out, "--weights", weights), others))
    print(table(args.sample, out))


if __name__ == "__main__":
    main()
