"""PyTorch graph capture at scale: a 124M-parameter GPT-2 (random init from a transformers config).

    python bench/torch_capture.py

Reports capture wall time (first and repeated call), operations captured, the plain forward time for
comparison and the RSS rise the capture causes (this process, ru_maxrss).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import nncompress as nncf  # noqa: E402
from bench import common, harness  # noqa: E402


def main() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allow-busy", action="store_true", help="measure even when the load exceeds the cores")
    harness.require_quiet(parser.parse_args().allow_busy)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    rows = []
    for seq in (16, 128):
        item = {"input_ids": torch.randint(0, 50257, (1, seq))}
        rss_before = common.peak_rss_mb()
        start = time.perf_counter()
        graph = nncf.build_graph(model, example_input=item)
        first_s = time.perf_counter() - start
        rise = common.peak_rss_mb() - rss_before
        with torch.no_grad():
            spreads, load = harness.interleaved(
                {"forward": lambda item=item: _seconds(lambda: model(**item)),
                 "capture": lambda item=item: _seconds(lambda: nncf.build_graph(model, example_input=item))}
            )
        ratio = harness.ratio(spreads["capture"], spreads["forward"])
        rows.append([
            f"GPT-2 {params:.0f}M, seq {seq}", len(graph), f"{first_s:.2f}", spreads["capture"].format(".2f"),
            spreads["forward"].format(".2f"), ratio.format(".2f"), f"{rise:.0f}", f"{common.peak_rss_mb():.0f}",
            load.describe(),
        ])
    headers = ["model", "operations", "first capture s", "capture s", "plain forward s", "capture/forward",
               "RSS rise MB", "peak RSS MB", "load"]
    table = common.markdown_table(headers, rows)
    print(table)
    notes = (f"{harness.provenance('python bench/torch_capture.py')} The capture runs the model once under a "
             "TorchFunctionMode with module hooks. 'first capture' is the first call in the process; the other "
             f"figures are median (min-max) of {harness.REPEATS} rounds after a warm-up, capture and plain forward "
             "interleaved, the ratio taken per round.")
    common.write_benchmarks_section("PyTorch graph capture", "python bench/torch_capture.py", table, notes)


def _seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
