"""A 1B-parameter Llama-shaped model (random init) compressed data-aware: peak RSS against model size.

    python bench/llama1b.py                  # AWQ + scale estimation, 32 samples; /usr/bin/time -v around it
    python bench/llama1b.py --layers 2 --allow-busy   # a quick check of the same path (fewer layers)

TinyLlama-1.1B's shape (hidden 2048, intermediate 5632, 22 layers, 32 heads, 4 key-value heads, vocabulary
32000), float32, seed 0. Calibration: 32 samples of 128 random token ids. ``compress_weights(mode=INT4_ASYM,
group_size=128, awq=True, scale_estimation=True, subset_size=32)`` on the PyTorch model runs the block-wise
pipeline. The whole process runs under ``/usr/bin/time -v``: its "Maximum resident set size" is the peak
of everything (interpreter, libraries, the model, the compression), compared with the model's size.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, harness  # noqa: E402

SAMPLES, TOKENS = 32, 128


def build(layers: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=layers, num_attention_heads=32,
                         num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def case(layers: int) -> dict:
    """Runs inside the measured process: build, compress, check the result runs."""
    import numpy as np
    import torch

    import nncompress as nncf

    model = build(layers)
    params = sum(p.numel() for p in model.parameters())
    rss_model = common.rss_mb()
    generator = torch.Generator().manual_seed(1)
    items = [{"input_ids": torch.randint(0, 32000, (1, TOKENS), generator=generator)} for _ in range(SAMPLES)]
    start = time.perf_counter()
    compressed = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=128, awq=True,
                                       scale_estimation=True, subset_size=SAMPLES, dataset=nncf.Dataset(items))
    seconds = time.perf_counter() - start
    report = nncf.last_report()
    with torch.no_grad():
        logits = compressed(items[0]["input_ids"][:, :8]).logits
    return {"params": params, "model_mb": params * 4 / 2**20, "rss_after_load_mb": rss_model, "seconds": seconds,
            "blockwise": any("block-wise" in n for n in report.notes), "runs": bool(np.isfinite(logits.numpy()).all())}


def measure(layers: int) -> dict:
    """The case in a child process under ``/usr/bin/time -v``: its figures and its peak RSS."""
    command = ["/usr/bin/time", "-v", sys.executable, __file__, "--child", "--layers", str(layers)]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)
    if out.returncode or not lines or not peak:
        raise RuntimeError(f"the 1B case failed:\n{out.stderr[-3000:]}")
    figures = json.loads(lines[-1])
    figures["peak_mb"] = int(peak.group(1)) / 1024
    figures["over_model_mb"] = figures["peak_mb"] - figures["model_mb"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=22)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--allow-busy", action="store_true", help="measure even when the load exceeds the cores")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(case(args.layers)))
        return
    harness.require_quiet(args.allow_busy)
    figures = measure(args.layers)
    headers = ["model", "parameters", "model MB", "peak RSS MB (/usr/bin/time -v)", "peak - model MB",
               "compress_weights s", "block-wise", "compressed model runs"]
    row = [f"Llama {args.layers} layers (TinyLlama-1.1B shape)", f"{figures['params'] / 1e9:.3f}B",
           f"{figures['model_mb']:.0f}", f"{figures['peak_mb']:.0f}", f"{figures['over_model_mb']:.0f}",
           f"{figures['seconds']:.0f}", str(figures["blockwise"]), str(figures["runs"])]
    table = common.markdown_table(headers, [row])
    print(table)
    if args.layers == 22:
        common.write_benchmarks_section(
            "Weight compression: 1B Llama data-aware peak memory", "python bench/llama1b.py", table,
            harness.provenance("python bench/llama1b.py")
            + " compress_weights(INT4_ASYM, group 128, awq=True, scale_estimation=True, subset_size=32) on a "
            "random-initialised float32 Llama (TinyLlama-1.1B shape), 32 samples of 128 random tokens, block-wise "
            "pipeline; peak RSS of the whole process (/usr/bin/time -v), time under the load shown by provenance.",
        )


if __name__ == "__main__":
    main()
