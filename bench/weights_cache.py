"""Statistics caching in ``compress_weights`` on SmolLM2-135M, one process per backend.

    python bench/weights_cache.py [--allow-busy]

Per backend: (1) INT4_SYM ratio 0.8 data-aware with a fresh ``statistics_path`` (collects and saves),
(2) INT4_ASYM + AWQ + scale estimation with the same path (loads), (3) the same as (2) without a cache.
(2) and (3) must give the same model: the largest logit difference on 64 evaluation tokens is reported.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, harness, llm  # noqa: E402
from bench.weights import _measured, run_in_subprocess  # noqa: E402

BACKENDS = ("onnx", "openvino", "torch")
REPEATS = 3


def case(backend: str) -> dict:
    import nncompress as nncf

    tok = llm.tokenizer()
    model = llm.load(backend)
    transform = common.torch_item if backend == "torch" else None
    dataset = nncf.Dataset(llm.calibration_items(tok), transform)
    second = {"mode": "int4_asym", "awq": True, "scale_estimation": True, "dataset": dataset}
    figures, models = {}, {}

    def timed(name: str, **extra):
        def run() -> float:
            start = time.perf_counter()
            models[name] = nncf.compress_weights(model, **second, **extra)
            elapsed = time.perf_counter() - start
            if name == "hit":
                figures["notes"] = [n for n in nncf.last_report().notes if n.startswith("statistics")]
            return elapsed
        return run

    with tempfile.TemporaryDirectory() as folder:
        cache = nncf.AdvancedCompressionParameters(statistics_path=folder)
        first = _measured(lambda: nncf.compress_weights(
            model, mode="int4_sym", ratio=0.8, dataset=dataset, advanced_parameters=cache), repeats=1)
        figures["first_s"], figures["first_rise_mb"] = first["seconds"]["median"], first["rise_mb"]
        figures["cache_mb"] = sum(f.stat().st_size for f in Path(folder).iterdir()) / 2**20
        del first
        runs = {"hit": timed("hit", advanced_parameters=cache), "plain": timed("plain")}
        spreads, load = harness.interleaved(runs, repeats=REPEATS, warmup=0)  # hit, plain, hit, plain, ...
    figures["hit_s"], figures["plain_s"] = spreads["hit"].as_dict(), spreads["plain"].as_dict()
    figures["speedup"] = harness.ratio(spreads["plain"], spreads["hit"]).as_dict()
    figures["load"] = load.describe()
    ids = llm.evaluation_ids(tok)[:64]
    logits = [llm.logits_fn(backend, models[name])(ids[None]) for name in ("hit", "plain")]
    figures["max_logit_diff"] = float(np.abs(logits[0] - logits[1]).max())
    return figures


def _spread(figure: dict, spec: str) -> str:
    return harness.Spread.from_dict(figure).format(spec)


def table() -> str:
    rows = []
    for backend in BACKENDS:
        r = run_in_subprocess({"backend": backend}, __file__)
        print(backend, r, flush=True)
        rows.append([backend, f"{r['first_s']:.1f}", f"{r['cache_mb']:.0f}", _spread(r["plain_s"], ".1f"),
                     _spread(r["hit_s"], ".1f"), _spread(r["speedup"], ".2f") + "x", f"{r['max_logit_diff']:.1e}",
                     r["load"]])
    headers = ["backend", "run 1: INT4_SYM r0.8 data-aware, saves statistics (s)", "cache MB",
               "run 2 without cache: INT4_ASYM + AWQ + SE (s)", "run 2 loading the cache (s)",
               "speed-up (per round)", "max abs logit difference, cached vs not", "load"]
    return common.markdown_table(headers, rows)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        print(json.dumps(case(json.loads(sys.argv[2])["backend"])))
        return
    harness.require_quiet("--allow-busy" in sys.argv)
    common.write_benchmarks_section(
        "Weight compression: statistics caching (SmolLM2-135M)", "python bench/weights_cache.py", table(),
        harness.provenance("python bench/weights_cache.py")
        + f" Run 2 with and without the cache interleaved, {REPEATS} rounds, median (min-max). "
        "Calibration: 128 samples of 128 tokens (bench/llm.py). "
        "AdvancedCompressionParameters(statistics_path=...): run 1 collects token means and every data-aware "
        "mixed-precision statistic and saves them; run 2 (other mode and methods) loads them instead of running "
        "the model. Logit difference on the first 64 evaluation tokens.",
    )


if __name__ == "__main__":
    main()
