"""Did a commit make a data-aware ``compress_weights`` call slower? CPU time of one call, two revisions.

    python bench/ab_commits.py 28fe67f HEAD                       # INT4_SYM r0.8 data-aware, PyTorch
    python bench/ab_commits.py 28fe67f HEAD --case awq gptq --rounds 2

Each revision is checked out into a temporary ``git worktree``; the calls alternate (old, new, old, new, ...)
in fresh processes that import nncompress from that revision and the SmolLM2 protocol (``bench/llm.py``)
from this one, with one thread. Process CPU time is the figure compared: unlike wall time it barely moves
when other work shares the cores, so a regression shows even on a busy machine (wall time is printed too).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import common, harness  # noqa: E402

CASES = {  # name -> compress_weights arguments (a calibration dataset is always given)
    "r08": {"mode": "int4_sym", "ratio": 0.8},
    "awq": {"mode": "int4_sym", "ratio": 1.0, "awq": True},
    "gptq": {"mode": "int4_sym", "ratio": 1.0, "gptq": True},
    "se": {"mode": "int4_sym", "ratio": 1.0, "scale_estimation": True},
    "awqse": {"mode": "int4_asym", "ratio": 1.0, "awq": True, "scale_estimation": True},
    "lora": {"mode": "int4_asym", "ratio": 1.0, "awq": True, "scale_estimation": True, "lora_correction": True},
}


def measure_one(backend: str, case: str) -> dict:
    """CPU and wall seconds of one call in this process (nncompress from PYTHONPATH)."""
    import torch

    torch.set_num_threads(1)
    import nncompress as nncf
    from bench import llm

    tok = llm.tokenizer()
    model = llm.load(backend)
    transform = common.torch_item if backend == "torch" else None
    kwargs = dict(CASES[case], dataset=nncf.Dataset(llm.calibration_items(tok), transform))
    cpu, wall = time.process_time(), time.perf_counter()
    nncf.compress_weights(model, **kwargs)
    return {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall, "nncompress": nncf.__file__}


def _worktree(revision: str, folder: Path) -> Path:
    path = folder / revision.replace("/", "_")
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(path), revision], check=True)
    return path


def _run(tree: Path, backend: str, case: str) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{tree / 'src'}{os.pathsep}{ROOT}", OMP_NUM_THREADS="1")
    command = [sys.executable, __file__, "--child", backend, case]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(revisions: list[str], backend: str, cases: list[str], rounds: int) -> list[list[str]]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        trees = [_worktree(rev, Path(folder)) for rev in revisions]
        try:
            for case in cases:
                samples: dict[str, list[dict]] = {rev: [] for rev in revisions}
                for _ in range(rounds):
                    for rev, tree in zip(revisions, trees):
                        load = harness.LoadRecord()
                        load.read()
                        samples[rev].append(_run(tree, backend, case))
                        load.read()
                        samples[rev][-1]["load"] = load.describe()
                cpu = {rev: [s["cpu"] for s in samples[rev]] for rev in revisions}
                ratio = min(cpu[revisions[1]]) / min(cpu[revisions[0]])
                for rev in revisions:
                    rows.append([case, backend, rev, " / ".join(f"{c:.1f}" for c in cpu[rev]),
                                 " / ".join(f"{s['wall']:.1f}" for s in samples[rev]),
                                 f"{ratio:.3f}" if rev == revisions[1] else "-",
                                 samples[rev][-1]["load"]])
        finally:
            for tree in trees:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(measure_one(sys.argv[2], sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx", "openvino"])
    parser.add_argument("--case", nargs="+", default=["r08"], choices=sorted(CASES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args()
    rows = compare([args.old, args.new], args.backend, args.case, args.rounds)
    headers = ["case", "backend", "revision", "CPU s per round", "wall s per round", "new/old CPU (min)", "load"]
    table = common.markdown_table(headers, rows)
    print(table)
    if args.write:
        command = "python bench/ab_commits.py " + " ".join(sys.argv[1:]).replace(" --write", "")
        notes = (f"{harness.provenance(command)} SmolLM2-135M, 128 calibration samples of 128 tokens, "
                 "one thread; each round runs each revision once in a fresh process, alternating.")
        common.write_benchmarks_section("Commit A/B: CPU time of data-aware compress_weights", command, table, notes)


if __name__ == "__main__":
    main()
