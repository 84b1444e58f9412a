"""``generate_text_data``: calibration texts sampled from the language model itself (data-free LLM calibration)."""

from __future__ import annotations

from typing import Any, TypeVar

from nncompress.errors import UnsupportedModelError, ValidationError
from nncompress.progress import progress_iter

TModel = TypeVar("TModel")
TTokenizer = TypeVar("TTokenizer")
BATCH = 16  # sequences sampled per generate() call
MAX_ROUNDS = 10  # re-sampling rounds for sequences with too few unique tokens


def generate_text_data(
    model: TModel,
    tokenizer: TTokenizer,
    seq_len: int = 32,
    dataset_size: int = 128,
    unique_tokens_lower_limit: int = 5,
) -> list[str]:
    """``dataset_size`` texts of ``seq_len`` tokens sampled from the causal LM ``model``.

    Each text starts from a random non-special token of ``tokenizer``'s vocabulary and continues by
    sampling (``model.generate(do_sample=True)``, any Hugging Face-style causal LM); a text with fewer
    than ``unique_tokens_lower_limit`` distinct tokens (a repetition loop) is sampled again. Sampling
    uses torch's global random generator: ``torch.manual_seed`` makes the result reproducible.
    """
    import torch

    _check_args(model, tokenizer, seq_len, dataset_size, unique_tokens_lower_limit)
    starts = _start_tokens(tokenizer)
    texts: list[str] = []
    batches = range(0, dataset_size, BATCH)
    for first in progress_iter(batches, len(batches), "Generating text data"):
        wanted = min(BATCH, dataset_size - first)
        for _ in range(MAX_ROUNDS):
            rows = _sample(torch, model, tokenizer, starts, wanted, seq_len)
            good = [row for row in rows if len(set(row)) >= unique_tokens_lower_limit]
            texts += [tokenizer.decode(row, skip_special_tokens=True) for row in good]
            wanted -= len(good)
            if wanted <= 0:
                break
        else:
            raise ValidationError(
                f"the model sampled no text with unique_tokens_lower_limit={unique_tokens_lower_limit} distinct "
                f"tokens in {MAX_ROUNDS} attempts (seq_len={seq_len}); lower unique_tokens_lower_limit"
            )
    return texts


def _check_args(model: Any, tokenizer: Any, seq_len: Any, dataset_size: Any, unique: Any) -> None:
    for name, value, minimum in (("seq_len", seq_len, 2), ("dataset_size", dataset_size, 1),
                                 ("unique_tokens_lower_limit", unique, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValidationError(f"{name} must be an integer >= {minimum}; got {value!r}")
    if unique > seq_len:
        raise ValidationError(
            f"unique_tokens_lower_limit={unique} cannot exceed seq_len={seq_len} (a text has seq_len tokens)"
        )
    if not callable(getattr(model, "generate", None)):
        raise UnsupportedModelError(
            f"generate_text_data needs a causal language model with a generate() method (e.g. transformers' "
            f"AutoModelForCausalLM); got {type(model).__name__}"
        )
    if not callable(getattr(tokenizer, "decode", None)) or not hasattr(tokenizer, "vocab_size"):
        raise ValidationError(f"tokenizer must be a transformers tokenizer; got {type(tokenizer).__name__}")


def _start_tokens(tokenizer: Any) -> list[int]:
    special = set(getattr(tokenizer, "all_special_ids", ()) or ())
    starts = [token for token in range(tokenizer.vocab_size) if token not in special]
    if not starts:
        raise ValidationError("the tokenizer's vocabulary has no token besides its special tokens")
    return starts


def _sample(torch: Any, model: Any, tokenizer: Any, starts: list[int], count: int, seq_len: int) -> list[list[int]]:
    """``count`` sequences of exactly ``seq_len`` tokens (the first one random)."""
    picks = torch.randint(len(starts), (count, 1))
    input_ids = torch.tensor(starts)[picks].to(getattr(model, "device", None) or "cpu")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    new = seq_len - 1
    with torch.no_grad(), _eval(model):
        output = model.generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True,
            max_new_tokens=new, min_new_tokens=new, pad_token_id=pad,
        )
    return [[int(t) for t in row[:seq_len]] for row in output]


def _eval(model: Any) -> Any:
    """Sample with dropout off (a torch module's training flags are restored afterwards)."""
    import contextlib

    from torch import nn

    if isinstance(model, nn.Module):
        from nncompress.backends.torch.inputs import eval_mode

        return eval_mode(model)
    return contextlib.nullcontext()
