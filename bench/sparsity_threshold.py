"""The global magnitude-sparsity threshold in bounded memory (``numerics.sparsity.global_threshold``).

    python bench/sparsity_threshold.py [--allow-busy] [--level 0.5] [--no-write]

1. A 300M-parameter GPT-2 (random init, seed 0; ``GPT2Config(n_embd=1024, n_layer=20, n_head=16)``): the
   peak RSS rise of computing the global ``normed_abs`` threshold over all its Embedding/Conv1D/Linear
   weights, against the size of its largest weight (the token embedding), and the same for the sort-based
   reference (concatenate every importance, sort); both thresholds must be equal.
2. A smaller GPT-2 (``n_embd=512, n_layer=6``): time of ours vs the sort, interleaved, per-round ratio.

Peak RSS: the high-water mark is reset (``/proc/self/clear_refs``) before each computation; rise = peak
during it minus RSS before it. Writes the table into BENCHMARKS.md (unless --no-write).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench import common, harness  # noqa: E402
from nncompress.numerics import sparsity as sp  # noqa: E402


def gpt2(n_embd: int, n_layer: int):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_embd=n_embd, n_layer=n_layer, n_head=16)).eval()


def prunable_weights(model) -> list:
    """The weights ``prune`` masks: Embedding, Linear and Hugging Face Conv1D (a tied weight once)."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    unique = {}
    for module in model.modules():
        if isinstance(module, (nn.Embedding, nn.Linear, Conv1D)):
            unique[id(module.weight)] = module.weight.detach()
    return list(unique.values())


def ours(weights: list, level: float) -> float:
    return sp.global_threshold(lambda: (c for w in weights for c in sp.importance_chunks(w, "normed_abs")), level)


def by_sort(weights: list, level: float) -> float:
    return sp.threshold_by_sort((sp.importance(w.numpy(), "normed_abs") for w in weights), level)


def memory_case(weights: list, level: float, compute) -> dict:
    base = common.reset_peak()
    start = time.perf_counter()
    value = compute(weights, level)
    seconds = time.perf_counter() - start
    return {"threshold": value, "rise_mb": common.hwm_mb() - base, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allow-busy", action="store_true")
    parser.add_argument("--level", type=float, default=0.5)
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()
    harness.require_quiet(args.allow_busy)

    big = prunable_weights(gpt2(1024, 20))
    params = sum(w.numel() for w in big)
    largest = max(w.numel() for w in big) * 4 / 2**20
    load = harness.LoadRecord()
    load.read()
    mine = memory_case(big, args.level, ours)
    load.read()
    sort = memory_case(big, args.level, by_sort)
    load.read()
    assert mine["threshold"] == sort["threshold"], (mine, sort)

    small = prunable_weights(gpt2(512, 6))
    small_params = sum(w.numel() for w in small)
    assert ours(small, args.level) == by_sort(small, args.level)
    spreads, small_load = harness.interleaved(
        {"ours": lambda: _timed(ours, small, args.level), "sort": lambda: _timed(by_sort, small, args.level)}
    )
    speed = harness.ratio(spreads["ours"], spreads["sort"])

    rows = [
        ["GPT-2 300M", f"{params / 1e6:.0f}M", f"{largest:.0f}", f"{mine['rise_mb']:.0f}",
         f"{mine['rise_mb'] / largest:.2f}", f"{sort['rise_mb']:.0f}", f"{mine['seconds']:.1f}",
         f"{sort['seconds']:.1f}", "equal", load.describe()],
        ["GPT-2 small", f"{small_params / 1e6:.0f}M", "", "", "", "", spreads["ours"].format(".2f"),
         spreads["sort"].format(".2f"), f"ours/sort time {speed.format('.2f')}",
         small_load.describe()],
    ]
    headers = ["model", "weights", "largest weight MB", "ours: RSS rise MB", "rise / largest",
               "sort: RSS rise MB", "ours s", "sort s", "threshold / ratio", "load"]
    table = common.markdown_table(headers, rows)
    notes = (harness.provenance("python bench/sparsity_threshold.py") + f" Level {args.level}, normed_abs importance, "
             "every 2-D weight of a randomly initialised GPT-2 (n_embd 1024, 20 layers: the 300M row; n_embd 512, "
             "6 layers: the time row). 'ours' is numerics.sparsity.global_threshold (histogram refinement, one "
             "layer at a time); 'sort' concatenates every importance and sorts it, as the reference does. RSS rise: "
             "peak resident memory during the call above the resident memory before it (the weights are already "
             "in memory). Time: 5 rounds, interleaved.")
    print(table)
    print(notes)
    if not args.no_write:
        common.write_benchmarks_section("Global magnitude-sparsity threshold", "python bench/sparsity_threshold.py",
                                        table, notes)


def _timed(compute, weights, level) -> float:
    start = time.perf_counter()
    compute(weights, level)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
