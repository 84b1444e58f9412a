"""generate_text_data: texts sampled from a causal LM, re-sampled until they have enough distinct tokens."""

from __future__ import annotations

import pytest

from nncompress.data import generate_text_data
from nncompress.errors import UnsupportedModelError, ValidationError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

WORDS = [f"w{i}" for i in range(60)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    vocab = tmp_path_factory.mktemp("tok") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return transformers.BertTokenizer(str(vocab))


@pytest.fixture(scope="module")
def tiny_gpt2(tokenizer):
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=tokenizer.vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return transformers.GPT2LMHeadModel(config).eval()


def _spy(model, monkeypatch) -> list:
    """Record every sequence model.generate returns."""
    rows = []
    original = model.generate

    def generate(*args, **kwargs):
        out = original(*args, **kwargs)
        rows.extend(out.tolist())
        return out

    monkeypatch.setattr(model, "generate", generate)
    return rows


def test_texts_are_sampled_sequences_of_seq_len_tokens(tiny_gpt2, tokenizer, monkeypatch):
    rows = _spy(tiny_gpt2, monkeypatch)
    before = {k: v.clone() for k, v in tiny_gpt2.state_dict().items()}
    tiny_gpt2.train()  # the training flag is restored after sampling in eval mode
    torch.manual_seed(1)
    texts = generate_text_data(tiny_gpt2, tokenizer, seq_len=12, dataset_size=20, unique_tokens_lower_limit=3)
    assert tiny_gpt2.training
    tiny_gpt2.eval()
    assert len(texts) == 20 and all(isinstance(t, str) and t for t in texts)
    assert all(len(row) == 12 for row in rows)
    special = set(tokenizer.all_special_ids)
    assert all(row[0] not in special for row in rows)  # the random first token is a real word
    accepted = [r for r in rows if len(set(r)) >= 3]
    assert texts == [tokenizer.decode(r, skip_special_tokens=True) for r in accepted]
    assert all(torch.equal(before[k], v) for k, v in tiny_gpt2.state_dict().items())
    # sampling follows torch's global generator
    torch.manual_seed(1)
    again = generate_text_data(tiny_gpt2, tokenizer, seq_len=12, dataset_size=20, unique_tokens_lower_limit=3)
    assert again == texts
    assert len(set(texts)) > 15  # sampled, not greedy: the texts differ


class _ScriptedLM:
    """generate() returns scripted rows (a repetition loop first, then a varied sequence)."""

    def __init__(self, rows_per_call):
        self.calls = list(rows_per_call)

    def generate(self, input_ids, **kwargs):
        rows = self.calls.pop(0) if self.calls else [[7, 7, 7, 7]] * len(input_ids)
        return torch.tensor(rows[: len(input_ids)])


def test_sequences_with_too_few_unique_tokens_are_sampled_again(tokenizer):
    varied = [5, 6, 7, 8]
    model = _ScriptedLM([[[9, 9, 9, 9], varied], [varied]])
    texts = generate_text_data(model, tokenizer, seq_len=4, dataset_size=2, unique_tokens_lower_limit=4)
    assert texts == [tokenizer.decode(varied)] * 2
    assert model.calls == []


def test_unreachable_unique_token_limit_raises(tokenizer):
    with pytest.raises(ValidationError, match="unique_tokens_lower_limit=3"):
        generate_text_data(_ScriptedLM([]), tokenizer, seq_len=4, dataset_size=1, unique_tokens_lower_limit=3)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"seq_len": 1}, ValidationError, "seq_len must be an integer >= 2; got 1"),
        ({"dataset_size": 0}, ValidationError, "dataset_size must be an integer >= 1; got 0"),
        ({"seq_len": 4, "unique_tokens_lower_limit": 5}, ValidationError, "cannot exceed seq_len=4"),
        ({"model": object()}, UnsupportedModelError, "generate"),
    ],
)
def test_bad_arguments(tokenizer, tiny_gpt2, kwargs, error, message):
    args = {"model": tiny_gpt2, "tokenizer": tokenizer, **kwargs}
    with pytest.raises(error, match=message):
        generate_text_data(**args)
