"""examples/llm_qat_lora.py in a smoke mode: the whole recipe (INT4 RTN, FQ_LORA, distillation, strip) for a few
steps on a tiny random Llama; the full run on SmolLM2 is in BENCHMARKS.md."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "llm_qat_lora.py"


def _example():
    spec = importlib.util.spec_from_file_location("llm_qat_lora", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_llama():
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=True)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.mark.slow
@pytest.mark.parametrize("nls", [False, True])
def test_recipe_runs_and_strip_keeps_the_trained_perplexity(nls):
    example = _example()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 128, 2000).astype(np.int64)
    argv = ["--steps", "12", "--batch", "2", "--length", "16", "--rank", "4", "--group-size", "32",
            "--context", "64", "--stride", "32", "--log-every", "0", "--lr", "1e-2"] + (["--nls"] if nls else [])
    results = example.run(_tiny_llama(), ids[:256], ids[256:], example.parse(argv))
    assert all(math.isfinite(results[k]) for k in ("fp32", "int4_rtn", "fq_lora_before", "fq_lora_after"))
    assert results["fq_lora_before"] == pytest.approx(results["int4_rtn"], rel=1e-5)  # B = 0: the RTN model
    assert results["stripped"] == pytest.approx(results["fq_lora_after"], rel=1e-4)
    assert results["kl_first"] > 0 and math.isfinite(results["kl_last"])
    assert results["fq_lora_after"] != results["fq_lora_before"]  # the adapters and scales trained
    assert not nls or results["nls_rank"] in (4, 3, 2)
