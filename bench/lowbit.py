"""INT3_SYM / INT2_SYM weight compression and FP8 quantization: quality figures (no timings).

    python bench/lowbit.py smollm2   # SmolLM2-135M perplexity, INT4/INT3/INT2_SYM g128, data-free and AWQ+SE
    python bench/lowbit.py smollm2 --tokens 2048 --samples 32 --jobs 3   # smaller, cases in parallel
    python bench/lowbit.py minilm    # all-MiniLM-L6-v2 embedding cosine vs FP32, INT4/INT3/INT2_SYM
    python bench/lowbit.py fp8       # digits CNN accuracy: FP32, INT8, FP8_E4M3, FP8_E5M2 on every backend
    python bench/lowbit.py --case '{"task": "smollm2", "mode": "int3_sym", "aware": true}'

SmolLM2 follows ``bench/llm.py`` (4096 Wikipedia tokens, context 1024, stride 512; 128 Lee calibration
samples; ``--tokens`` / ``--samples`` take fewer) on the PyTorch backend; MiniLM the ``bench/weights.py``
protocol (64 Lee sentences, PyTorch).
Each case runs in its own process; the tables are printed (Markdown) for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = ("int4_sym", "int3_sym", "int2_sym")


def smollm_case(mode: str | None, aware: bool, tokens: int, samples: int) -> dict:
    import nncompress as nncf
    from bench import common, llm

    tok = llm.tokenizer()
    model = llm.load("torch")
    notes = []
    if mode is not None:
        kwargs = {"mode": mode, "group_size": 128}
        if aware:
            kwargs.update(awq=True, scale_estimation=True,
                          dataset=nncf.Dataset(llm.calibration_items(tok)[:samples], common.torch_item))
        model = nncf.compress_weights(model, **kwargs)
        notes = [n for n in nncf.last_report().notes if n.startswith("AWQ")]
    ids = llm.evaluation_ids(tok)[:tokens]
    return {"perplexity": llm.perplexity(llm.logits_fn("torch", model), ids), "notes": notes}


def minilm_case(mode: str | None) -> dict:
    import torch

    import nncompress as nncf
    from bench import common
    from bench import models as real

    model, tokenizer = real.load_minilm()
    model.pooler = None
    compressed = model if mode is None else nncf.compress_weights(model, mode=mode, ratio=1.0, group_size=128)
    batches = real.minilm_inputs(tokenizer, real.minilm_sentences(64), batch_size=16)

    def embed(m):
        with torch.no_grad():
            out = [m(**common.torch_item(b)).last_hidden_state.numpy() for b in batches]
        return np.concatenate([real.mean_pooled_embeddings(o, b["attention_mask"]) for o, b in zip(out, batches)])

    return {"cosine": float(np.mean(np.sum(embed(model) * embed(compressed), 1)))}


def fp8_case() -> dict:
    import torch

    import nncompress as nncf
    from examples import digits_cnn as d

    data = d.load_digits_data()
    model = d.get_trained_digits_cnn()
    calibration = [data.x_train[i : i + 1] for i in range(300)]
    folder = Path.home() / ".cache" / "nncompress" / "lowbit_bench"
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = d.export_onnx(model, folder / "digits.onnx")
    import onnx

    backends = {
        "torch": (model, lambda m: d.accuracy_torch(m, data.x_test, data.y_test), lambda x: torch.from_numpy(x)),
        "onnx": (onnx.load(onnx_path), lambda m: d.accuracy_onnx(m, data.x_test, data.y_test), None),
        "openvino": (d.to_openvino(onnx_path), lambda m: d.accuracy_openvino(m, data.x_test, data.y_test), None),
    }
    rows = {}
    for backend, (float_model, accuracy, transform) in backends.items():
        rows[backend] = {"FP32": accuracy(float_model)}
        for label, mode in (("INT8", None), ("FP8_E4M3", "fp8_e4m3"), ("FP8_E5M2", "fp8_e5m2")):
            quantized = nncf.quantize(float_model, nncf.Dataset(calibration, transform), mode=mode)
            rows[backend][label] = accuracy(quantized)
    return rows


def run_case(spec: dict) -> dict:
    logging.disable(logging.INFO)
    if spec["task"] == "smollm2":
        return smollm_case(spec["mode"], spec["aware"], spec.get("tokens", 4096), spec.get("samples", 128))
    if spec["task"] == "minilm":
        return minilm_case(spec["mode"])
    return fp8_case()


def _sub(spec: dict) -> dict:
    from bench.weights import run_in_subprocess

    return run_in_subprocess(spec, __file__)


def _smollm_table(tokens: int, samples: int, jobs: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    cases = [(None, False)] + [(mode, aware) for mode in MODES for aware in (False, True)]
    specs = [{"task": "smollm2", "mode": m, "aware": a, "tokens": tokens, "samples": samples} for m, a in cases]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = dict(zip(cases, pool.map(lambda spec: _sub(spec)["perplexity"], specs)))
    print(f"{tokens} tokens, {samples} calibration samples\n")
    print("| mode (group 128) | data-free perplexity | AWQ + scale estimation perplexity |\n|---|---|---|")
    print(f"| FP32 | {results[(None, False)]:.2f} | - |")
    for mode in MODES:
        print(f"| {mode.upper()} | {results[(mode, False)]:.2f} | {results[(mode, True)]:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", nargs="?", choices=["smollm2", "minilm", "fp8"], default="smollm2")
    parser.add_argument("--case", help="run one case (JSON spec) and print its figures")
    parser.add_argument("--tokens", type=int, default=4096, help="SmolLM2: evaluated tokens (at most 4096)")
    parser.add_argument("--samples", type=int, default=128, help="SmolLM2: calibration samples (at most 128)")
    parser.add_argument("--jobs", type=int, default=1, help="SmolLM2: cases run in parallel processes")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    if args.task == "smollm2":
        _smollm_table(args.tokens, args.samples, args.jobs)
    elif args.task == "minilm":
        print("| mode (ratio 1.0, group 128) | mean cosine vs FP32 (64 Lee sentences) |\n|---|---|")
        for mode in MODES:
            print(f"| {mode.upper()} | {_sub({'task': 'minilm', 'mode': mode})['cosine']:.5f} |", flush=True)
    else:
        rows = _sub({"task": "fp8"})
        print("| backend | FP32 | INT8 | FP8_E4M3 | FP8_E5M2 |\n|---|---|---|---|---|")
        for backend, acc in rows.items():
            print(f"| {backend} | " + " | ".join(f"{acc[k]:.4f}" for k in ("FP32", "INT8", "FP8_E4M3", "FP8_E5M2"))
                  + " |")


if __name__ == "__main__":
    main()
