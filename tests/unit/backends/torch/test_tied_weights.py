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


def _weight_params(model) -> int:
    """Parameters of the model's weight matrices, each stored tensor once (norm vectors left out)."""
    return sum(p.numel() for p in model.parameters() if p.dim() >= 2)


def test_tied_weight_is_compressed_and_reported_once_on_the_data_aware_path(tmp_path):
    model = tiny_llama(tied=True)
    items = [{"input_ids": torch.randint(0, 96, (1, 8), generator=torch.Generator().manual_seed(k))} for k in range(4)]
    options = {"mode": M.INT4_ASYM, "group_size": 16, "awq": True, "scale_estimation": True, "subset_size": 4}
    compressed = nncf.compress_weights(model, dataset=nncf.Dataset(items), **options)
    report = nncf.last_report()
    assert any("block-wise" in note for note in report.notes)
    # one weight of 96 x 64: reported once, totals equal the model's weight parameters
    assert "lm_head/linear/0" not in report.layers and report.total_params == _weight_params(model)
    assert report.total_layers == 2 * 7 + 1
    assert any("lm_head/linear/0 read(s) the weight of model/embed_tokens/embedding/0" in n for n in report.notes)
    storages = {id(m) for m in compressed.modules() if type(m).__name__ == "CompressedStorage"}
    assert len(storages) == report.total_layers  # compressed once: one storage per reported weight
    assert compressed.lm_head.weight_compressed is compressed.model.embed_tokens.weight_compressed
    # saved once and loaded once: a file on disk, loaded into another compressed copy, computes the same
    state = compressed.state_dict()
    codes = state["lm_head.weight_compressed.data"]
    without_head = {k: v for k, v in state.items() if not k.startswith("lm_head.")}
    assert _saved_bytes(state) - _saved_bytes(without_head) < codes.numel() * codes.element_size()
    torch.save(state, tmp_path / "compressed.pt")
    other = nncf.compress_weights(tiny_llama(seed=1, tied=True), dataset=nncf.Dataset(items), **options)
    other.load_state_dict(torch.load(tmp_path / "compressed.pt"))
    assert other.lm_head.weight_compressed is other.model.embed_tokens.weight_compressed
    with torch.no_grad():
        torch.testing.assert_close(other(_ids()).logits, compressed(_ids()).logits, rtol=0, atol=0)
        reference = model(_ids()).logits
    assert model.lm_head.weight is model.model.embed_tokens.weight  # the user's model is untouched
    error = (compressed(_ids()).logits - reference).norm() / reference.norm()
    assert error < 0.2
