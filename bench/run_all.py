"""Regenerate every table of BENCHMARKS.md, one benchmark after another, on a quiet machine.

    python bench/run_all.py                 # everything (about 2 h 25 min on 2 cores)
    python bench/run_all.py ptq gpt2        # only the named benchmarks, in the order given
    python bench/run_all.py --list          # names, commands and expected durations

Each benchmark writes its own section of BENCHMARKS.md (``common.write_benchmarks_section``): the command,
the table and a provenance line (date, machine, library versions, load). Nothing in BENCHMARKS.md is
edited by hand. Before each benchmark the script waits (up to 5 minutes) for the load left by the previous
one to decay below the core count. The run stops at the first benchmark that fails or refuses a busy machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402

BENCHMARKS = [  # (name, arguments after `python`, minutes on a quiet 2-core machine)
    ("ptq", ["bench/ptq.py"], 5),
    ("accuracy_control", ["bench/accuracy_control.py"], 5),
    ("torch_capture", ["bench/torch_capture.py"], 1),
    ("torch_parity", ["bench/torch_parity.py"], 1),
    ("gpt2", ["bench/weights.py", "gpt2"], 4),
    ("minilm", ["bench/weights.py", "minilm"], 8),
    ("smollm2", ["bench/weights.py", "smollm2"], 45),
    ("formats", ["bench/weights.py", "formats"], 15),
    ("weights_cache", ["bench/weights_cache.py"], 12),
    ("torch_resnet_parity", ["bench/torch_resnet_parity.py", "--width", "64", "--epochs", "3"], 3),
    ("qat", ["bench/qat.py"], 10),
    ("training_compression", ["bench/training_compression.py"], 20),
    ("sparsity_threshold", ["bench/sparsity_threshold.py"], 3),
    ("binarization", ["bench/binarization.py"], 4),
    ("hawq", ["bench/hawq.py"], 8),
]
ACCEPTS_ALLOW_BUSY = {
    "ptq", "accuracy_control", "torch_capture", "gpt2", "minilm", "smollm2", "formats", "weights_cache", "qat",
    "training_compression", "sparsity_threshold", "binarization", "hawq",
}


def _settle(limit_s: float = 300.0) -> None:
    """Wait until the previous benchmark's own load has decayed below the core count (the 1-minute
    average needs about a minute), so the next one's busy-machine check sees other work only."""
    deadline = time.monotonic() + limit_s
    while harness.load_average() > harness.cores() and time.monotonic() < deadline:
        time.sleep(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [name for name, _, _ in BENCHMARKS]
    parser.add_argument("only", nargs="*", metavar="NAME", help=f"some of: {', '.join(names)} (default: all)")
    parser.add_argument("--list", action="store_true", help="print the benchmarks and exit")
    parser.add_argument("--allow-busy", action="store_true", help="pass --allow-busy on (figures get flagged)")
    args = parser.parse_args()
    unknown = sorted(set(args.only) - set(names))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    by_name = {b[0]: b for b in BENCHMARKS}
    chosen = [by_name[name] for name in args.only] if args.only else BENCHMARKS
    if args.list:
        for name, command, minutes in BENCHMARKS:
            print(f"{name:22} python {' '.join(command):55} ~{minutes} min")
        return
    for name, command, minutes in chosen:
        extra = ["--allow-busy"] if args.allow_busy and name in ACCEPTS_ALLOW_BUSY else []
        if not args.allow_busy:
            _settle()
        print(f"== {name}: python {' '.join(command + extra)} (~{minutes} min)", flush=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *command, *extra], cwd=ROOT, check=False)
        if done.returncode:
            raise SystemExit(f"{name} failed (exit {done.returncode}); BENCHMARKS.md keeps the sections written so far")
        print(f"== {name} took {(time.perf_counter() - start) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
