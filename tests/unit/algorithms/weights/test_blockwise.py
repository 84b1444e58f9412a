"""The block-wise pipeline on a tiny Llama (PyTorch): with GPTQ the inputs of each block come from the
compressed blocks before it, without GPTQ from the float blocks; the ranking of data-aware mixed precision
matches whole-model statistics; per-layer errors in the report."""

from __future__ import annotations

import numpy as np
import pytest

import nncompress as nncf
from nncompress.algorithms.weights import blockwise
from nncompress.algorithms.weights.activations import ActivationStats

from .helpers import tiny_llama, token_items

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

M = nncf.CompressWeightsMode


def _compress(model, **kwargs):
    result = nncf.compress_weights(model, mode=M.INT4_SYM, group_size=32, dataset=nncf.Dataset(token_items()), **kwargs)
    return result, nncf.last_report()


def _q_proj_inputs(model, layer: int) -> list[np.ndarray]:
    seen = []
    module = model.model.layers[layer].self_attn.q_proj
    handle = module.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().numpy().copy()))
    with torch.no_grad():
        for item in token_items():
            model(**item)
    handle.remove()
    return seen


def _statistics_updates(monkeypatch) -> dict[int, list[np.ndarray]]:
    updates: dict[int, list[np.ndarray]] = {}
    alive = []  # the recorded objects stay alive: a freed one's id could be reused by the next
    original = ActivationStats.update

    def record(self, value):
        if id(self) not in updates:
            alive.append(self)
        updates.setdefault(id(self), []).append(np.array(value))
        return original(self, value)

    monkeypatch.setattr(ActivationStats, "update", record)
    return updates


def _same(values: list[np.ndarray], reference: list[np.ndarray]) -> bool:
    return all(np.allclose(v, r, atol=1e-4) for v, r in zip(values, reference))


def test_each_block_reads_the_outputs_of_the_compressed_blocks_before_it(monkeypatch):
    model = tiny_llama(2)
    updates = _statistics_updates(monkeypatch)
    # the embedding (INT8, before the first block) stays float: the first block's inputs are the float model's
    compressed, report = _compress(model, gptq=True, ignored_scope=nncf.IgnoredScope(patterns=[".*embed_tokens.*"]))
    assert "block-wise: 2 blocks" in " ".join(report.notes)
    expected = _q_proj_inputs(compressed, 1)  # layer 1's q_proj input in the compressed model
    floats = _q_proj_inputs(model, 1)
    collected = [values for values in updates.values()
                 if len(values) == len(expected) and values[0].shape == expected[0].shape]

    assert any(_same(values, expected) for values in collected), "no statistics from the compressed layer-1 inputs"
    assert not any(_same(values, floats) for values in collected)  # layer 0 is compressed: other inputs


def test_without_gptq_each_block_reads_the_float_outputs_of_the_blocks_before_it(monkeypatch):
    model = tiny_llama(2)
    updates = _statistics_updates(monkeypatch)
    compressed, report = _compress(model, awq=True, scale_estimation=True,
                                   ignored_scope=nncf.IgnoredScope(patterns=[".*embed_tokens.*"]))
    assert any("from the float blocks before it" in note for note in report.notes)
    floats = _q_proj_inputs(model, 1)
    quantized = _q_proj_inputs(compressed, 1)
    collected = [values for values in updates.values()
                 if len(values) == len(floats) and values[0].shape == floats[0].shape]

    assert any(_same(values, floats) for values in collected), "no statistics from the float layer-1 inputs"
    assert not any(_same(values, quantized) for values in collected)


def test_the_statistics_runner_is_freed_before_the_compressed_pass(monkeypatch):
    # ONNX Runtime and OpenVINO keep a memory pool per session: a block's statistics runner must not live on
    # beside the runner of its compressed pass (SmolLM2 ONNX GPTQ: peak 1602 -> ~1520 MB)
    import weakref

    made, checked = [], []
    runner_of = blockwise.BlockwiseCompression._runner
    advance = blockwise.BlockwiseCompression._advance

    def runner(self, item, fetch, outputs=True):
        made.append((weakref.ref(result := runner_of(self, item, fetch, outputs)), bool(fetch)))
        assert outputs != bool(fetch)  # GPTQ's float runs fetch without outputs; the compressed runs the reverse
        return result

    def checked_advance(self, k, item, given, constants):
        checked.append([alive for ref, fetches in made if fetches and (alive := ref()) is not None])
        return advance(self, k, item, given, constants)

    monkeypatch.setattr(blockwise.BlockwiseCompression, "_runner", runner)
    monkeypatch.setattr(blockwise.BlockwiseCompression, "_advance", checked_advance)
    _compress(tiny_llama(3), gptq=True)
    assert len(checked) == 2 and checked == [[], []]  # blocks 1 and 2 advance; no fetching runner alive then


@pytest.mark.parametrize("gptq", [False, True])
def test_the_cached_activations_are_freed_before_the_layers_outside_the_blocks(monkeypatch, gptq):
    # the embedding and lm_head come last; SmolLM2 ONNX + LoRA peaked there at 1525 MB with the 128 items'
    # block activations still cached, 1387 MB once freed
    from nncompress.algorithms.weights.pipeline import LayerCompressor

    events = []
    compress, free = LayerCompressor.compress, blockwise.BlockwiseCompression._free_stream

    def recorded_compress(self, job, awq):
        events.append(("layer", "layers" in job.layer.node.replace(".", "/").split("/")))
        return compress(self, job, awq)

    def recorded_free(self):
        events.append(("freed", bool(self.stream)))
        return free(self)

    monkeypatch.setattr(LayerCompressor, "compress", recorded_compress)
    monkeypatch.setattr(blockwise.BlockwiseCompression, "_free_stream", recorded_free)
    _compress(tiny_llama(2), gptq=gptq, scale_estimation=not gptq)
    first_outside = events.index(("layer", False))
    assert ("freed", True) in events[:first_outside]
    assert all(kind == "layer" and inside for kind, inside in events[:first_outside] if kind == "layer")


def test_gptq_lowers_each_layers_output_error_and_the_model_error():
    model = tiny_llama(2)
    compressed, report = _compress(model, gptq=True)
    details = report.details
    assert len(details) == 14 and all(d.algorithms == ("GPTQ",) for d in details.values())
    assert all(d.error_after < d.error_before for d in details.values())
    assert "Per-layer output error" in str(report)
    rtn, _ = _compress(model)  # data-free: no details
    item = token_items()[0]["input_ids"]
    with torch.no_grad():
        reference, ours, plain = model(item).logits, compressed(item).logits, rtn(item).logits
    assert float(((ours - reference) ** 2).mean()) < float(((plain - reference) ** 2).mean())


def test_awq_scale_estimation_and_lora_run_block_wise():
    model = tiny_llama(2)
    compressed, report = _compress(model, awq=True, scale_estimation=True, lora_correction=True)
    algorithms = {d.algorithms for d in report.details.values()}
    assert ("AWQ", "scale estimation", "LoRA correction") in algorithms  # down_proj (merged into up_proj)
    assert ("scale estimation", "LoRA correction") in algorithms
    better = [d.error_after < d.error_before for d in report.details.values()]
    assert sum(better) >= 0.75 * len(better), report.details_table()
    assert sum(d.error_after for d in report.details.values()) < sum(d.error_before for d in report.details.values())
    item = token_items()[0]["input_ids"]
    with torch.no_grad():
        reference, ours = model(item).logits, compressed(item).logits
    assert float(((ours - reference) ** 2).mean() / (reference**2).mean()) < 0.01


def test_data_aware_mixed_precision_ranks_like_whole_model_statistics(tmp_path):
    model = tiny_llama(2)
    kwargs = dict(ratio=0.6, sensitivity_metric=nncf.SensitivityMetric.MEAN_ACTIVATION_VARIANCE)
    _, blocks = _compress(model, **kwargs)
    params = nncf.AdvancedCompressionParameters(statistics_path=str(tmp_path))  # forces whole-model statistics
    _, whole = _compress(model, advanced_parameters=params, **kwargs)
    assert any("whole-model runs: statistics_path" in note for note in whole.notes)
    assert any("block-wise" in note for note in blocks.notes)
    assert blocks.layers == whole.layers  # float inputs in both: the same scores, the same choices
    assert len({config for config in blocks.layers.values()}) == 2


def test_statistics_path_keeps_the_whole_model_path(tmp_path):
    model = tiny_llama(2)
    params = nncf.AdvancedCompressionParameters(statistics_path=str(tmp_path))
    _, report = _compress(model, gptq=True, advanced_parameters=params)
    assert not report.details
    assert any(note.startswith("statistics from whole-model runs: statistics_path") for note in report.notes)
    assert blockwise.SAMPLE_ROWS > 0


@pytest.mark.slow
def test_onnx_and_openvino_run_the_same_pipeline(tmp_path):
    onnx = pytest.importorskip("onnx")
    ov = pytest.importorskip("openvino")
    from bench.llm import export_logits_onnx

    model = tiny_llama(2)
    path = tmp_path / "llama.onnx"
    export_logits_onnx(model, path)
    numpy_items = [{"input_ids": item["input_ids"].numpy()} for item in token_items()]
    reports = {}
    for name, backend_model in (("onnx", onnx.load(path)), ("openvino", ov.Core().read_model(path))):
        nncf.compress_weights(backend_model, mode=M.INT4_SYM, group_size=32, dataset=nncf.Dataset(numpy_items),
                              gptq=True)
        reports[name] = nncf.last_report()
    _, reports["torch"] = _compress(model, gptq=True)
    for name, report in reports.items():
        assert any("block-wise: 2 blocks" in note for note in report.notes), name
        errors = sorted(d.error_after for d in report.details.values())
        reference = sorted(d.error_after for d in reports["torch"].details.values())
        np.testing.assert_allclose(errors, reference, rtol=0.1)  # the same algorithm on the same inputs


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_the_capture_reads_what_the_second_block_needs_in_the_same_runs(tmp_path, monkeypatch, backend):
    pytest.importorskip("onnx")
    pytest.importorskip("openvino")
    from bench.llm import export_logits_onnx

    path = tmp_path / "llama.onnx"
    export_logits_onnx(tiny_llama(2), path)
    if backend == "onnx":
        import onnx

        from nncompress.backends.onnx.adapter import OnnxAdapter as Adapter
        model = onnx.load(path)
    else:
        import openvino as ov

        from nncompress.backends.openvino.adapter import OpenVINOAdapter as Adapter
        model = ov.Core().read_model(path)
    runs = []
    original = Adapter.collect

    def counting(self, *args, **kwargs):
        runs.append(args[1])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Adapter, "collect", counting)
    items = [{"input_ids": item["input_ids"].numpy()} for item in token_items()]
    nncf.compress_weights(model, mode=M.INT4_SYM, group_size=32, dataset=nncf.Dataset(items), awq=True,
                          scale_estimation=True)
    assert any("block-wise: 2 blocks" in note for note in nncf.last_report().notes)
    assert len(runs) == 1, runs  # one whole-model run: the capture, with the second block's own values
