"""PyTorch graph capture at scale: a 124M-parameter GPT-2 (random init from a transformers config).

    python bench/torch_capture.py

Reports capture wall time (first and repeated call), operations captured, the plain forward time for
comparison and the RSS rise the capture causes (this process, ru_maxrss).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import nncompress as nncf  # noqa: E402
from bench import common  # noqa: E402


def main() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    rows = []
    for seq in (16, 128):
        item = {"input_ids": torch.randint(0, 50257, (1, seq))}
        with torch.no_grad():
            model(**item)
            start = time.perf_counter()
            model(**item)
            forward_s = time.perf_counter() - start
        rss_before = common.peak_rss_mb()
        start = time.perf_counter()
        graph = nncf.build_graph(model, example_input=item)
        first_s = time.perf_counter() - start
        rise = common.peak_rss_mb() - rss_before
        start = time.perf_counter()
        nncf.build_graph(model, example_input=item)
        again_s = time.perf_counter() - start
        rows.append([f"GPT-2 {params:.0f}M, seq {seq}", len(graph), f"{first_s:.2f}", f"{again_s:.2f}",
                     f"{forward_s:.2f}", f"{rise:.0f}", f"{common.peak_rss_mb():.0f}"])
    headers = ["model", "operations", "capture s", "capture again s", "plain forward s", "RSS rise MB", "peak RSS MB"]
    table = common.markdown_table(headers, rows)
    print(table)
    notes = (f"Measured on {common.machine_summary()}. The capture runs the model once under a TorchFunctionMode with "
             "module hooks; 'capture again' is a second call on the same model object.")
    common.write_benchmarks_section("PyTorch graph capture", "python bench/torch_capture.py", table, notes)


if __name__ == "__main__":
    main()
