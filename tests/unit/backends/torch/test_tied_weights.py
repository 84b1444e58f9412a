"""A tied embedding / lm_head (LlamaConfig(tie_word_embeddings=True)) is stored once and loaded once."""

from __future__ import annotations

import io

import pytest
import torch

import nncompress as nncf
from tests.unit.backends.torch.tiny_transformers import tiny_llama

M = nncf.CompressWeightsMode


def _ids():
    return torch.randint(0, 96, (1, 6), generator=torch.Generator().manual_seed(5))


def _saved_bytes(state: dict) -> int:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.tell()


@pytest.mark.parametrize("mode", [M.INT8_ASYM, M.INT4_SYM])
def test_tied_embedding_and_head_share_one_compressed_storage(mode):
    model = tiny_llama(tied=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    options = {} if mode is M.INT8_ASYM else {"ratio": 1.0, "group_size": 16}
    compressed = nncf.compress_weights(model, mode=mode, **options)
    head, embedding = compressed.lm_head.weight_compressed, compressed.model.embed_tokens.weight_compressed
    assert head is embedding  # compressed once, one storage module
    state = compressed.state_dict()
    head_codes, embedding_codes = (state[f"{k}.weight_compressed.data"] for k in ("lm_head", "model.embed_tokens"))
    assert head_codes.data_ptr() == embedding_codes.data_ptr()
    # stored once: the head's keys add their names to a saved file, not the 96x64 codes again
    without_head = {k: v for k, v in state.items() if not k.startswith("lm_head.")}
    codes = state["lm_head.weight_compressed.data"]
    assert _saved_bytes(state) - _saved_bytes(without_head) < codes.numel() * codes.element_size()
    # loaded once: a second compressed copy keeps one storage after load_state_dict and computes the same
    other = nncf.compress_weights(tiny_llama(seed=1, tied=True), mode=mode, **options)
    other.load_state_dict(state)
    assert other.lm_head.weight_compressed is other.model.embed_tokens.weight_compressed
    with torch.no_grad():
        torch.testing.assert_close(other(_ids()).logits, compressed(_ids()).logits)
