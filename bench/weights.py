"""Weight compression benchmark (`compress_weights`), every case in its own process.

    python bench/weights.py minilm       # all-MiniLM-L6-v2: embedding cosine vs FP32 per mode and backend
    python bench/weights.py gpt2         # 300M GPT-2 (random init): INT4_SYM time and peak RSS rise
    python bench/weights.py smollm2      # SmolLM2-135M perplexity per mode, data-aware method and backend
    python bench/weights.py formats      # SmolLM2-135M perplexity of the float formats (FP4, NVFP4, FP8...)
    python bench/weights.py all          # every table; each writes its BENCHMARKS.md section
    python bench/weights.py --case '{"task": "gpt2", "backend": "onnx"}'   # one case as JSON
    python bench/weights.py --case '{"task": "smollm2", "backend": "torch", "label": "INT4_SYM", "order_seed": 1}'
                                         # ... with the calibration items in a seeded order

Peak RSS: the process's high-water mark is reset (``/proc/self/clear_refs``) after the model is
loaded, so "rise" is what the first ``compress_weights`` call itself adds; "peak" is the process's
absolute peak during that call. Models are read fully into memory first (OpenVINO with mmap off).
Time: ``bench.harness`` figures, median (min-max) of repeated calls (MiniLM and GPT-2: 5 calls, the
first included; SmolLM2: one call, ``NNCOMPRESS_BENCH_SMOLLM_REPEATS`` for more), with the load
average around them; the script refuses to start on a busy machine unless ``--allow-busy``.
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, harness  # noqa: E402

CACHE = Path(os.environ.get("NNCOMPRESS_CACHE", Path.home() / ".cache" / "nncompress"))
MINILM_CASES = [  # (label, compress_weights arguments, reference figure)
    ("INT8_ASYM", {"mode": "int8_asym"}, 0.99970),
    ("INT8_SYM", {"mode": "int8_sym"}, 0.99955),
    ("INT4_SYM r1.0", {"mode": "int4_sym", "ratio": 1.0}, 0.955),
    ("INT4_SYM r0.8", {"mode": "int4_sym", "ratio": 0.8}, 0.972),
    ("INT4_ASYM r1.0", {"mode": "int4_asym", "ratio": 1.0}, 0.963),
    ("INT4_ASYM r0.8", {"mode": "int4_asym", "ratio": 0.8}, 0.978),
    ("NF4 r1.0", {"mode": "nf4", "ratio": 1.0}, 0.972),
    ("NF4 r0.8", {"mode": "nf4", "ratio": 0.8}, 0.983),
    ("INT4_SYM + scale estimation", {"mode": "int4_sym", "scale_estimation": True, "data": True}, 0.971),
    ("INT4_SYM + GPTQ", {"mode": "int4_sym", "gptq": True, "data": True}, 0.985),
    ("INT4_SYM + AWQ + scale estimation", {"mode": "int4_sym", "awq": True, "scale_estimation": True, "data": True},
     None),
    ("INT4_SYM + LoRA correction", {"mode": "int4_sym", "lora_correction": True, "data": True}, None),
    ("INT4_SYM + scale estimation, calibrated on the evaluated sentences",
     {"mode": "int4_sym", "scale_estimation": True, "data": "evaluated"}, 0.971),
    ("INT4_SYM + GPTQ, calibrated on the evaluated sentences", {"mode": "int4_sym", "gptq": True, "data": "evaluated"},
     0.985),
    ("INT4_SYM r1.0, range search", {"mode": "int4_sym", "range_search": True}, None),
    ("INT4_ASYM r1.0, range search", {"mode": "int4_asym", "range_search": True}, None),
    ("NF4 r1.0, range search", {"mode": "nf4", "range_search": True}, None),
]
SMOLLM_CASES = [  # (label, compress_weights arguments or None for FP32, reference perplexity on 4096 tokens)
    ("FP32", None, 19.2455),
    ("INT8_ASYM", {"mode": "int8_asym"}, 19.23),
    ("INT4_SYM", {"mode": "int4_sym"}, 25.80),
    ("INT4_ASYM", {"mode": "int4_asym"}, 24.79),
    ("NF4", {"mode": "nf4"}, 25.15),
    ("INT4_SYM r0.8 data-free", {"mode": "int4_sym", "ratio": 0.8}, 23.77),
    ("INT4_SYM r0.8 data-aware", {"mode": "int4_sym", "ratio": 0.8, "data": True}, 22.34),
    ("INT4_SYM + AWQ", {"mode": "int4_sym", "awq": True, "data": True}, 24.63),
    ("INT4_SYM + scale estimation", {"mode": "int4_sym", "scale_estimation": True, "data": True}, 23.98),
    ("INT4_SYM + AWQ + scale estimation", {"mode": "int4_sym", "awq": True, "scale_estimation": True, "data": True},
     23.67),
    ("INT4_SYM + GPTQ", {"mode": "int4_sym", "gptq": True, "data": True}, 25.17),
    ("INT4_SYM + LoRA correction", {"mode": "int4_sym", "lora_correction": True, "data": True}, None),
    ("INT4_ASYM + AWQ + scale estimation", {"mode": "int4_asym", "awq": True, "scale_estimation": True, "data": True},
     23.24),
    ("INT4_ASYM + AWQ + scale estimation + LoRA",
     {"mode": "int4_asym", "awq": True, "scale_estimation": True, "lora_correction": True, "data": True}, None),
    ("INT4_ASYM + GPTQ", {"mode": "int4_asym", "gptq": True, "data": True}, None),
    ("INT4_ASYM + AWQ + GPTQ", {"mode": "int4_asym", "awq": True, "gptq": True, "data": True}, None),
    ("INT4_ASYM + AWQ + scale estimation + GPTQ",
     {"mode": "int4_asym", "awq": True, "scale_estimation": True, "gptq": True, "data": True}, None),
    ("INT4_ASYM + AWQ + GPTQ + LoRA",
     {"mode": "int4_asym", "awq": True, "gptq": True, "lora_correction": True, "data": True}, None),
]
SMOLLM_FORMAT_CASES = [  # float formats (NNCF: OpenVINO only, no published figures), group sizes by default
    ("FP4 (group 128)", {"mode": "fp4"}, None),
    ("NVFP4 (group 16)", {"mode": "nvfp4"}, None),
    ("MXFP4 (group 32)", {"mode": "mxfp4"}, None),
    ("CB4_F8E4M3 (per channel)", {"mode": "cb4_f8e4m3"}, None),
    ("FP8_E4M3 (group 128)", {"mode": "fp8_e4m3"}, None),
    ("MXFP8_E4M3 (group 32)", {"mode": "mxfp8_e4m3"}, None),
]
BACKENDS = ("onnx", "openvino", "torch")
SMOLLM_REPEATS = int(os.environ.get("NNCOMPRESS_BENCH_SMOLLM_REPEATS", "1"))


# --------------------------------------------------------------------------- memory


def _measured(compress, repeats: int = harness.REPEATS) -> dict:
    """The first call's result and memory; the wall time of ``repeats`` calls (the first included) and
    the load average around them."""
    base = common.reset_peak()
    load = harness.LoadRecord()
    load.read()
    start = time.perf_counter()
    result = compress()
    times = [time.perf_counter() - start]
    peak = common.hwm_mb()
    for _ in range(repeats - 1):
        load.read()
        start = time.perf_counter()
        compress()
        times.append(time.perf_counter() - start)
    load.read()
    return {"model": result, "seconds": harness.Spread(tuple(times)).as_dict(), "load": load.describe(),
            "busy": load.busy, "peak_mb": peak, "rise_mb": peak - base}


def seconds(figures: dict, spec: str = ".2f") -> str:
    """'median (min-max)' of a case's compress_weights time; '-' when nothing was compressed."""
    if figures.get("seconds") is None:
        return "-"
    spread = harness.Spread.from_dict(figures["seconds"])
    return format(spread.median, spec) if figures["seconds"]["n"] == 1 else spread.format(spec)


# --------------------------------------------------------------------------- models


def _load(backend: str, onnx_path: Path):
    if backend == "torch":
        raise ValueError("torch models are built by their case")
    if backend == "onnx":
        import onnx

        return onnx.load(str(onnx_path))
    import openvino as ov

    core = ov.Core()
    core.set_property({"ENABLE_MMAP": False})
    xml = onnx_path.with_suffix(".xml")
    if not xml.exists():
        ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    return core.read_model(str(xml))


def minilm_files() -> Path:
    path = CACHE / "minilm" / "model.onnx"
    if not path.exists():
        from bench import models as real

        path.parent.mkdir(parents=True, exist_ok=True)
        real.export_minilm_onnx(real.load_minilm()[0], path)
    return path


def gpt2_torch():
    """The 300M-parameter GPT-2 (random init, seed 0) as a transformers model."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_embd=1024, n_layer=20, n_head=16)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return GPT2LMHeadModel(config).eval()


def gpt2_files() -> Path:
    """The 300M-parameter GPT-2 exported to ONNX once (opset 17)."""
    path = CACHE / "gpt2_300m" / "model.onnx"
    if path.exists():
        return path
    from bench import llm

    path.parent.mkdir(parents=True, exist_ok=True)
    llm.export_logits_onnx(gpt2_torch(), path)
    return path


# --------------------------------------------------------------------------- cases


def _embeddings(backend: str, model, batches) -> np.ndarray:
    from bench import models as real

    if backend == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        outputs = [session.run(None, b)[0] for b in batches]
    elif backend == "torch":
        import torch

        with torch.no_grad():
            outputs = [model(**common.torch_item(b)).last_hidden_state.numpy() for b in batches]
    else:
        from nncompress.backends.openvino.runner import compile_model

        compiled = compile_model(model)  # f32, no dynamic activation quantization: the weights' own error
        outputs = [compiled(b)[0] for b in batches]
    return np.concatenate([real.mean_pooled_embeddings(o, b["attention_mask"]) for o, b in zip(outputs, batches)])


def minilm_case(backend: str, label: str) -> dict:
    import nncompress as nncf
    from bench import models as real

    kwargs = dict(next(args for name, args, _ in MINILM_CASES if name == label))
    if kwargs.pop("range_search", False):
        kwargs["advanced_parameters"] = nncf.AdvancedCompressionParameters(range_search=True)
    torch_model, tokenizer = real.load_minilm()
    torch_model.pooler = None  # as in the ONNX export (last_hidden_state only): the last Linear is the same
    model = torch_model if backend == "torch" else _load(backend, minilm_files())
    data = kwargs.pop("data", False)
    if data:  # 128 Lee sentences never evaluated on, or the reference's 64 evaluated sentences
        calibration = real._FALLBACK_SENTENCES if data == "evaluated" else real.minilm_sentences(192)[64:]
        items = real.minilm_inputs(tokenizer, calibration, batch_size=1)
        kwargs["dataset"] = nncf.Dataset(items, common.torch_item if backend == "torch" else None)
    figures = _measured(lambda: nncf.compress_weights(model, **kwargs))
    compressed = figures.pop("model")
    result = {**figures, "layers": nncf.last_report().table()}
    for name, sentences in (("fallback", real._FALLBACK_SENTENCES), ("lee", real.minilm_sentences(64))):
        batches = real.minilm_inputs(tokenizer, sentences, batch_size=16)
        reference = _embeddings(backend, model, batches)
        result[f"cosine_{name}"] = float(np.mean(np.sum(reference * _embeddings(backend, compressed, batches), 1)))
    return result


def gpt2_case(backend: str) -> dict:
    import nncompress as nncf

    model = gpt2_torch() if backend == "torch" else _load(backend, gpt2_files())
    figures = _measured(lambda: nncf.compress_weights(model, mode="int4_sym", ratio=1.0, group_size=128))
    compressed = figures.pop("model")
    figures["table"] = nncf.last_report().table()
    with tempfile.TemporaryDirectory() as folder:
        figures["size_ratio"] = _size(backend, compressed, Path(folder)) / _size(backend, model, Path(folder))
    ids = {"input_ids": np.arange(8, dtype=np.int64)[None]}
    from nncompress.backends.registry import get_adapter

    if backend == "torch":
        ids = common.torch_item(ids)
    logits = get_adapter(compressed).infer(compressed, ids)[0]  # the compressed model runs
    figures["runs"] = bool(np.all(np.isfinite(logits)))
    return figures


def _size(backend: str, model, folder: Path) -> int:
    if backend == "onnx":
        return model.ByteSize()
    if backend == "torch":
        return common.torch_state_bytes(model)
    return common.openvino_size_bytes(model)


def smollm_case(backend: str, label: str, order_seed: int | None = None) -> dict:
    """One SmolLM2 configuration; ``order_seed``: the calibration items in a seeded random order (the same
    data summed in another order: how much a result owes to float rounding)."""
    import nncompress as nncf
    from bench import llm

    kwargs = next(args for name, args, _ in SMOLLM_CASES + SMOLLM_FORMAT_CASES if name == label)
    tok = llm.tokenizer()
    model = llm.load(backend)
    figures = {"seconds": None, "load": "-", "busy": False, "peak_mb": common.hwm_mb(), "rise_mb": 0.0,
               "size_ratio": 1.0, "notes": []}
    compressed = model
    if kwargs is not None:
        kwargs = dict(kwargs)
        if kwargs.pop("data", False):
            transform = common.torch_item if backend == "torch" else None
            items = llm.calibration_items(tok)
            if order_seed is not None:
                items = [items[i] for i in np.random.default_rng(order_seed).permutation(len(items))]
            kwargs["dataset"] = nncf.Dataset(items, transform)
        figures = _measured(lambda: nncf.compress_weights(model, **kwargs), SMOLLM_REPEATS)
        compressed = figures.pop("model")
        report = nncf.last_report()
        figures["notes"] = [n for n in report.notes if n.startswith(("AWQ", "mixed"))]
        figures["table"] = report.table()
        with tempfile.TemporaryDirectory() as folder:
            figures["size_ratio"] = _size(backend, compressed, Path(folder)) / _size(backend, model, Path(folder))
    model = None  # free the float model before evaluating
    start = time.perf_counter()
    figures["perplexity"] = llm.perplexity(llm.logits_fn(backend, compressed), llm.evaluation_ids(tok))
    figures["eval_seconds"] = time.perf_counter() - start
    return figures


def run_case(spec: dict) -> dict:
    if spec["task"] == "gpt2":
        return gpt2_case(spec["backend"])
    if spec["task"] == "smollm2":
        return smollm_case(spec["backend"], spec["label"], spec.get("order_seed"))
    return minilm_case(spec["backend"], spec["label"])


def run_in_subprocess(spec: dict, script: str = __file__) -> dict:
    """Run ``script --case <spec as JSON>`` in a fresh process; its last JSON line of output."""
    out = subprocess.run(
        [sys.executable, script, "--case", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"case {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- tables


def minilm_table() -> str:
    rows = []
    for label, _, reference in MINILM_CASES:
        for backend in BACKENDS:
            r = run_in_subprocess({"task": "minilm", "backend": backend, "label": label})
            print(label, backend, {k: v for k, v in r.items() if k != "layers"}, flush=True)
            rows.append([label, backend, f"{r['cosine_fallback']:.5f}", "-" if reference is None else f"{reference}",
                         f"{r['cosine_lee']:.5f}", seconds(r), f"{r['peak_mb']:.0f}", f"{r['rise_mb']:.0f}", r["load"]])
    headers = ["configuration (group 128)", "backend", "cosine (64 sentences of the reference)", "reference tool",
               "cosine (64 Lee news sentences)", "compress_weights s, median (min-max)", "peak RSS MB", "RSS rise MB",
               "load"]
    return common.markdown_table(headers, rows)


def gpt2_table() -> str:
    rows = []
    references = {"openvino": ("4.2", "1.4 GB"), "onnx": ("-", "-"), "torch": ("2.6", "0.47 GB")}
    for backend in BACKENDS:
        r = run_in_subprocess({"task": "gpt2", "backend": backend})
        print(backend, {k: v for k, v in r.items() if k != "table"}, flush=True)
        rows.append([backend, seconds(r), references[backend][0], f"{r['rise_mb']:.0f}",
                     references[backend][1], f"{r['peak_mb']:.0f}", f"{r['size_ratio']:.3f}", str(r["runs"]),
                     r["load"]])
    headers = ["backend", "compress_weights s, median (min-max)", "reference s", "peak RSS rise MB", "reference rise",
               "peak RSS MB", "size compressed/FP32", "compressed model runs", "load"]
    return common.markdown_table(headers, rows)


def smollm_table(cases=SMOLLM_CASES) -> str:
    rows, fp32 = [], {}
    for label, _, reference in ([SMOLLM_CASES[0]] if cases is not SMOLLM_CASES else []) + cases:
        for backend in BACKENDS:
            r = run_in_subprocess({"task": "smollm2", "backend": backend, "label": label})
            print(label, backend, {k: v for k, v in r.items() if k != "table"}, flush=True)
            fp32.setdefault(backend, r["perplexity"])
            ratio = r["perplexity"] / fp32[backend]
            ref = "-" if reference is None else f"{reference:.2f} ({reference / 19.2455:.2f}x)"
            rows.append([label, backend, f"{r['perplexity']:.2f}", f"{ratio:.3f}x", ref, seconds(r, ".1f"),
                         f"{r['peak_mb']:.0f}", f"{r['rise_mb']:.0f}", f"{r['size_ratio']:.3f}", r["load"]])
    first = "configuration (group 128)" if cases is SMOLLM_CASES else "configuration"
    headers = [first, "backend", "perplexity", "vs FP32", "reference tool (vs its FP32)",
               "compress_weights s", "peak RSS MB", "RSS rise MB", "size vs FP32", "load"]
    return common.markdown_table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", nargs="?", choices=["minilm", "gpt2", "smollm2", "formats", "all"], default="all")
    parser.add_argument("--case", help="run one case (JSON spec) and print its figures")
    parser.add_argument("--allow-busy", action="store_true", help="measure even when the load exceeds the cores")
    args = parser.parse_args()
    if args.case:
        result = run_case(json.loads(args.case))
        print(json.dumps(result))
        return
    harness.require_quiet(args.allow_busy)
    if args.task in ("minilm", "all"):
        common.write_benchmarks_section(
            "Weight compression: all-MiniLM-L6-v2 embedding cosine", "python bench/weights.py minilm", minilm_table(),
            harness.provenance("python bench/weights.py minilm")
            + " Mean cosine between FP32 and compressed sentence embeddings (mask-mean pooled, "
            "L2-normalised) on the reference tool's 64 sentences (bench/models.py fallback list) and on 64 real news "
            "sentences (first sentences of gensim's Lee corpus); calibration (data-aware rows): 128 other Lee "
            "sentences, or, where marked, the reference's 64 evaluated sentences (its figures match that protocol). "
            "Time and memory of the compress_weights call only, each case in a fresh process. OpenVINO "
            "outputs are computed in f32 without dynamic activation quantization; ONNX MatMulNBits nodes carry "
            "accuracy_level 0. 'range search' rows: AdvancedCompressionParameters(range_search=True) (off by default).",
        )
    if args.task in ("smollm2", "all"):
        common.write_benchmarks_section(
            "Weight compression: SmolLM2-135M perplexity", "python bench/weights.py smollm2", smollm_table(),
            harness.provenance("python bench/weights.py smollm2")
            + " Real SmolLM2-135M-Instruct weights (bench/llm.py): perplexity on the first 4096 "
            "tokens of gensim's cleaned Wikipedia dump, context 1024, stride 512; calibration: 128 samples of 128 "
            "tokens of lee_background.cor. Group 128: the 576-wide projections take group 64 (the default "
            "group_size_fallback_mode='adjust'; the reference tool needs that option set), down_proj 128; the tied "
            "embedding and lm_head stay INT8_ASYM. Reference column: NNCF 3.4.0 with the same protocol (its FP32 "
            "19.2455: its text cleaning differs slightly, so compare ratios to FP32). Time and memory of the "
            "compress_weights call in a fresh process; size of the saved model relative to FP32.",
        )
    if args.task in ("formats", "all"):
        common.write_benchmarks_section(
            "Weight compression: SmolLM2-135M float formats", "python bench/weights.py formats",
            smollm_table(SMOLLM_FORMAT_CASES),
            harness.provenance("python bench/weights.py formats")
            + " Same protocol as the SmolLM2 table (4096 Wikipedia tokens, context 1024, stride "
            "512), data-free, default group sizes (the 576-wide projections take group 64 where 128 is asked); "
            "FP4/FP8 back up in FP8_E4M3, MX formats in MXFP8_E4M3, NVFP4 and CB4 in INT8_ASYM (NNCF's defaults). "
            "NNCF implements these formats for OpenVINO only.",
        )
    if args.task in ("gpt2", "all"):
        common.write_benchmarks_section(
            "Weight compression: 300M GPT-2 INT4_SYM time and memory", "python bench/weights.py gpt2", gpt2_table(),
            harness.provenance("python bench/weights.py gpt2")
            + " GPT2Config(n_embd=1024, n_layer=20, n_head=16), random init (seed 0): the "
            "transformers model itself (PyTorch, no dataset), exported to ONNX (354.6M parameters counting the untied "
            "lm_head copy) and converted to OpenVINO IR; loaded fully into memory before the call. "
            "compress_weights(mode=INT4_SYM, ratio=1.0, group_size=128): 80 Linear weights in INT4, embedding and "
            "lm_head INT8_ASYM. Rise = peak RSS during the call minus RSS before it. Reference: NNCF on this kind of "
            "machine (the issue's figures).",
        )


if __name__ == "__main__":
    main()
