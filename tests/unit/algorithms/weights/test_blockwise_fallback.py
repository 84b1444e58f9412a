"""The block-wise pipeline when the backend refuses to run a block: from that block on, statistics come from one
whole-model run of the user's float model (tiny Llama with 3 layers, block 2 refused)."""

from __future__ import annotations

import numpy as np
import pytest

import nncompress as nncf
from nncompress.algorithms.weights import blockwise, data_aware
from nncompress.errors import UnsupportedModelError

from .helpers import tiny_llama, token_items

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

M = nncf.CompressWeightsMode
AWQ_SE = dict(mode=M.INT4_ASYM, group_size=32, awq=True, scale_estimation=True)


def _refuse(monkeypatch, adapter_class, layer: int, when=None):
    """``region_runner`` raises for the region ending in Llama layer ``layer`` (``when(constants)``: only the
    runs with those constants raise, the runner itself is made)."""
    original = adapter_class.region_runner
    marker = f"layers/{layer}/"
    refused = []

    def region_runner(self, model, region, fetch=(), constants=None, outputs=True):
        runner = original(self, model, region, fetch, constants, outputs)
        if marker not in region.name.replace(".", "/").replace("_", "/"):
            return runner
        if when is None:
            refused.append(region.name)
            raise UnsupportedModelError(f"test refusal of region {region.name!r}")
        run = runner.run

        def refusing_run(values, constants=None):
            if when(constants):
                refused.append(region.name)
                raise NotImplementedError(f"test refusal of a run of {region.name!r}")
            return run(values, constants)

        runner.run = refusing_run
        return runner

    monkeypatch.setattr(adapter_class, "region_runner", region_runner)
    return refused


def _torch_refusing(monkeypatch, layer: int, when=None):
    from nncompress.backends.torch.adapter import TorchAdapter

    return _refuse(monkeypatch, TorchAdapter, layer, when)


def _collections(monkeypatch) -> list[tuple]:
    """(model, layer nodes) of every whole-model statistics collection."""
    calls = []
    original = data_aware.collect_statistics

    def spy(adapter, model, layers, options, report):
        calls.append((model, [layer.node for layer in layers]))
        return original(adapter, model, layers, options, report)

    monkeypatch.setattr(data_aware, "collect_statistics", spy)
    return calls


def _streams_at_fall_back(monkeypatch) -> list[int]:
    """How many cached stream and shared values the pipeline held when its whole-model pass started."""
    held = []
    original = blockwise.BlockwiseCompression._fall_back

    def spy(self, *args):
        held.append(len(self.stream) + len(self.shared))
        return original(self, *args)

    monkeypatch.setattr(blockwise.BlockwiseCompression, "_fall_back", spy)
    return held


def _whole_model(model, tmp_path, **kwargs):
    params = nncf.AdvancedCompressionParameters(statistics_path=str(tmp_path))  # forces whole-model statistics
    return nncf.compress_weights(model, dataset=nncf.Dataset(token_items()), advanced_parameters=params, **kwargs)


def _logits(model, items=None):
    with torch.no_grad():
        return np.concatenate([model(**item).logits.numpy() for item in items or token_items()])


def _fallback_note(report) -> str:
    notes = [note for note in report.notes if "could not run" in note]
    assert len(notes) == 1, report.notes
    return notes[0]


def test_a_later_block_that_cannot_run_uses_whole_model_statistics_from_it_on(monkeypatch, tmp_path):
    model = tiny_llama(3)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    refused = _torch_refusing(monkeypatch, layer=1)
    calls = _collections(monkeypatch)
    held = _streams_at_fall_back(monkeypatch)
    compressed = nncf.compress_weights(model, dataset=nncf.Dataset(token_items()), **AWQ_SE)
    report = nncf.last_report()

    note = _fallback_note(report)
    assert "block 2 could not run on its own" in note and "test refusal of region" in note, note
    assert "blocks 2 to 3" in note and "whole-model run of the float model" in note and "GPTQ" not in note
    assert any("block-wise: 1 of 3 blocks run" in n for n in report.notes), report.notes
    assert set(refused) == {"model/layers/1/add/1"}  # (the capture's look at block 2's values is refused too)
    assert held == [0]  # the cached block inputs were freed before the whole-model pass
    # one whole-model pass on the user's own model, for the data-aware layers of blocks 2 and 3 only
    assert len(calls) == 1 and calls[0][0] is model
    assert len(calls[0][1]) == 14 and all("layers/1/" in n or "layers/2/" in n for n in calls[0][1])
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())
    # per-layer output errors come from the block runs only (block 1's 7 layers)
    assert len(report.details) == 7 and all("layers/0/" in name for name in report.details)

    # without GPTQ the blocks read float inputs: whole-model statistics are the same statistics
    monkeypatch.undo()
    whole = _whole_model(model, tmp_path, **AWQ_SE)
    np.testing.assert_allclose(_logits(compressed), _logits(whole), rtol=1e-5, atol=1e-5)
    for (name, ours), theirs in zip(compressed.state_dict().items(), whole.state_dict().values()):
        np.testing.assert_allclose(ours.float().numpy(), theirs.float().numpy(), atol=1e-6, err_msg=name)
    assert not np.allclose(_logits(compressed), _logits(model), atol=1e-3)  # it was compressed


def test_a_refused_first_block_uses_the_whole_model_path_as_before(monkeypatch, tmp_path):
    model = tiny_llama(3)
    _torch_refusing(monkeypatch, layer=0)
    compressed = nncf.compress_weights(model, dataset=nncf.Dataset(token_items()), **AWQ_SE)
    report = nncf.last_report()
    assert any(n.startswith("statistics from whole-model runs: the first block cannot run on its own "
                            "(test refusal of region") for n in report.notes), report.notes
    assert not any("block-wise:" in n for n in report.notes) and not report.details
    monkeypatch.undo()
    whole = _whole_model(model, tmp_path, **AWQ_SE)
    np.testing.assert_allclose(_logits(compressed), _logits(whole), rtol=1e-5, atol=1e-5)


def _relative_mse(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(((ours - reference) ** 2).mean() / (reference**2).mean())


def test_with_gptq_a_refused_block_falls_back_and_stays_close_to_the_float_model(monkeypatch):
    model = tiny_llama(3)
    refused = _torch_refusing(monkeypatch, layer=1)
    calls = _collections(monkeypatch)
    compressed = nncf.compress_weights(model, mode=M.INT4_SYM, group_size=32, dataset=nncf.Dataset(token_items()),
                                       gptq=True)
    report = nncf.last_report()
    note = _fallback_note(report)
    assert "block 2 could not run on its own" in note and "with GPTQ their inputs are the float model's" in note
    assert refused and len(calls) == 1 and calls[0][0] is model
    assert {d.algorithms for d in report.details.values()} == {("GPTQ",)}
    assert all(d.error_after < d.error_before for d in report.details.values())
    monkeypatch.undo()
    rtn = nncf.compress_weights(model, mode=M.INT4_SYM, group_size=32)
    reference = _logits(model)
    # as the block-wise GPTQ tests: closer to the float model than round to nearest, within 1% relative MSE
    assert _relative_mse(_logits(compressed), reference) < _relative_mse(_logits(rtn), reference)
    assert _relative_mse(_logits(compressed), reference) < 0.01


def test_with_gptq_a_block_that_cannot_run_compressed_hands_the_next_blocks_to_whole_model_statistics(monkeypatch):
    model = tiny_llama(3)
    refused = _torch_refusing(monkeypatch, layer=1, when=bool)  # block 2 runs float, not with compressed weights
    calls = _collections(monkeypatch)
    compressed = nncf.compress_weights(model, mode=M.INT4_SYM, group_size=32, dataset=nncf.Dataset(token_items()),
                                       gptq=True)
    report = nncf.last_report()
    note = _fallback_note(report)
    assert "block 2 could not run with its compressed weights" in note, note
    assert "; block 3 compressed with statistics" in note, note
    assert "NotImplementedError: test refusal of a run" in note
    assert refused and len(calls) == 1 and all("layers/2/" in n for n in calls[0][1])
    assert len(report.details) == 14  # blocks 1 and 2 ran
    monkeypatch.undo()
    assert _relative_mse(_logits(compressed), _logits(model)) < 0.01


@pytest.mark.parametrize("gptq", [False, True])
def test_data_aware_mixed_precision_with_a_refused_block_ranks_like_whole_model_statistics(monkeypatch, tmp_path,
                                                                                            gptq):
    model = tiny_llama(3)
    kwargs = dict(mode=M.INT4_SYM, group_size=32, ratio=0.6, gptq=gptq,
                  sensitivity_metric=nncf.SensitivityMetric.MEAN_ACTIVATION_VARIANCE)
    _torch_refusing(monkeypatch, layer=1)
    calls = _collections(monkeypatch)
    compressed = nncf.compress_weights(model, dataset=nncf.Dataset(token_items()), **kwargs)
    blocks = nncf.last_report()
    assert "block 2 could not run on its own" in _fallback_note(blocks)
    assert len(calls) == 1  # the ranking pass's statistics serve the compression pass too
    assert len(blocks.details) == sum("layers/0/" in name for name, config in blocks.layers.items()
                                      if config.startswith("int4"))  # block 1 ran, blocks 2-3 did not
    monkeypatch.undo()
    reference = _whole_model(model, tmp_path, **kwargs)
    whole = nncf.last_report()
    assert blocks.layers == whole.layers and len(set(blocks.layers.values())) == 2
    if gptq:  # the layers of block 1 solved on other inputs than the whole-model path's
        assert _relative_mse(_logits(compressed), _logits(model)) < 0.01
    else:  # round to nearest with the same precisions: the same model
        np.testing.assert_allclose(_logits(compressed), _logits(reference), rtol=1e-5, atol=1e-5)


def test_a_one_shot_dataset_cannot_fall_back_and_says_why(monkeypatch):
    model = tiny_llama(3)
    _torch_refusing(monkeypatch, layer=1)
    expected = r"block 2 could not run on its own .*blocks 2 to 3 need statistics from a whole-model pass"
    with pytest.raises(nncf.OneShotDatasetError, match=expected):
        nncf.compress_weights(model, dataset=nncf.Dataset(iter(token_items())), **AWQ_SE)


def test_onnx_falls_back_to_the_whole_model_statistics(monkeypatch, tmp_path):
    onnx = pytest.importorskip("onnx")
    from bench.llm import export_logits_onnx
    from nncompress.backends.onnx.adapter import OnnxAdapter

    path = tmp_path / "llama.onnx"
    export_logits_onnx(tiny_llama(3), path)
    model = onnx.load(path)
    items = [{"input_ids": item["input_ids"].numpy()} for item in token_items()]
    refused = _refuse(monkeypatch, OnnxAdapter, layer=1)
    calls = _collections(monkeypatch)
    compressed = nncf.compress_weights(model, dataset=nncf.Dataset(items), **AWQ_SE)
    note = _fallback_note(nncf.last_report())
    assert "block 2 could not run on its own" in note and refused and len(calls) == 1 and calls[0][0] is model
    monkeypatch.undo()
    params = nncf.AdvancedCompressionParameters(statistics_path=str(tmp_path / "stats"))
    whole = nncf.compress_weights(model, dataset=nncf.Dataset(items), advanced_parameters=params, **AWQ_SE)
    ours, theirs = ({i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer} for m in (compressed, whole))
    assert ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_allclose(ours[name].astype(np.float32), theirs[name].astype(np.float32), atol=1e-6,
                                   err_msg=name)
