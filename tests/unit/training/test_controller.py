"""The QAT controller: loss, statistics, stages, strip, export (ONNX Runtime / OpenVINO), compression state."""

import json

import numpy as np
import pytest
import torch

import nncompress as nncf
from nncompress.backends.torch.fake_quantize import FakeQuantizer
from nncompress.backends.torch.hooks import storage_of
from nncompress.errors import ValidationError
from nncompress.training.controller import CompressionStage, combine_stages
from tests.unit.training.models import SmallCNN, loader, trained_cnn


def _compressed(model=None, **section):
    config = nncf.NNCFConfig.from_dict({
        "input_info": {"sample_size": [1, 1, 8, 8]},
        "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 128}}, **section},
    })
    config = nncf.torch.register_default_init_args(config, loader(batch_size=32))
    torch.manual_seed(0)
    return nncf.create_compressed_model(model if model is not None else trained_cnn(), config)


def test_combine_stages_rule():
    full, part, none = (CompressionStage.FULLY_COMPRESSED, CompressionStage.PARTIALLY_COMPRESSED,
                        CompressionStage.UNCOMPRESSED)
    assert combine_stages(full, full) is full and combine_stages(none, none) is none
    assert combine_stages(full, none) is part and combine_stages(part, full) is part
    assert [int(s) for s in CompressionStage] == [0, 1, 2]


def test_loss_is_a_zero_tensor_and_statistics_render():
    ctrl, _ = _compressed()
    loss = ctrl.loss()
    assert isinstance(loss, torch.Tensor) and loss.shape == () and float(loss) == 0.0
    stats = ctrl.statistics()
    assert stats.as_dict()["quantization"]["Quantizers (weights / activations)"] == "6 (3 / 3)"
    assert stats.as_dict()["quantization"]["Ranges initialised"] == "6 of 6"
    text = stats.to_str()
    assert "Enabled share" in text and "100.0 %" in text and "FULLY_COMPRESSED" in text
    assert ctrl.compression_stage() is CompressionStage.FULLY_COMPRESSED


def test_strip_gives_ptq_fake_quantizers_computing_the_same_outputs():
    ctrl, model = _compressed()
    with torch.no_grad():
        model.conv1.weight.mul_(3.0)  # as training can: weights beyond the (half-range) quantizer's range
    x = next(iter(loader("test")))[0]
    stripped = ctrl.strip()
    assert stripped is not model
    storage = storage_of(stripped)
    assert len(storage) == 6 and all(isinstance(storage.module(h), FakeQuantizer) for h in storage.keys)
    assert storage.module("conv1/conv2d/0/fq_weights_1").level_low == -64  # half range: the 7-bit training grid
    with torch.no_grad():
        assert torch.equal(stripped(x), model(x))
    baked = nncf.strip(stripped)  # nncompress.strip bakes the weights into the parameters
    assert len(storage_of(baked)) == 3
    with torch.no_grad():
        assert not torch.equal(baked.conv1.weight, model.conv1.weight)
        assert torch.equal(baked(x), model(x))


def test_disabled_quantizers_are_dropped_by_strip():
    ctrl, model = _compressed()
    for q in ctrl.quantizers().values():
        q.disable()
    stripped = ctrl.strip()
    assert storage_of(stripped) is None
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(stripped(x), model(x))


def test_export_onnx_runs_in_onnxruntime_like_the_torch_model(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    ctrl, model = _compressed()
    path = ctrl.export_model(tmp_path / "m.onnx")
    nodes = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert nodes.count("QuantizeLinear") == 3  # activations
    assert nodes.count("DequantizeLinear") == 6  # activations + int8 weights
    x, _ = next(iter(loader("test", batch_size=128)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.995
    np.testing.assert_allclose(got, want, atol=0.05 * np.abs(want).max())
    path13 = ctrl.export_model(tmp_path / "m13.onnx", save_format="onnx_13")
    assert onnx.load(str(path13)).opset_import[0].version == 13


def test_export_openvino_ir_matches_the_torch_model(tmp_path):
    ov = pytest.importorskip("openvino")
    ctrl, model = _compressed()
    path = ctrl.export_model(tmp_path / "m.xml", save_format="openvino")
    x, _ = next(iter(loader("test", batch_size=128)))
    compiled = ov.Core().compile_model(str(path), "CPU")
    got = compiled(x.numpy())[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.995


def test_export_rejects_unknown_formats(tmp_path):
    ctrl, _ = _compressed(SmallCNN())
    for bad in ("tflite", "onnx_10"):
        with pytest.raises(ValidationError, match="save_format"):
            ctrl.export_model(tmp_path / "m", save_format=bad)


def test_compression_state_is_json_serialisable_and_holds_the_setup():
    ctrl, _ = _compressed(SmallCNN(), activations={"mode": "asymmetric"})
    state = ctrl.get_compression_state()
    restored = json.loads(json.dumps(state))
    setup = restored["builder_state"]["quantization"]["quantizer_setup"]
    assert len(setup) == 6
    assert {q["mode"] for q in setup if q["group"] == "activations"} == {"asymmetric"}
    assert restored["ctrl_state"]["quantization"]["scheduler_state"] == {"current_step": -1, "current_epoch": -1}


def test_resume_rebuilds_same_quantizers_without_init_and_load_state_gives_identical_outputs():
    ctrl, model = _compressed(activations={"mode": "asymmetric"}, weights={"per_channel": True})
    for _ in range(2):
        ctrl.scheduler.epoch_step()
    state = json.loads(json.dumps(ctrl.get_compression_state()))
    fresh = SmallCNN()  # random weights: everything must come from the checkpoint
    ctrl2, model2 = nncf.create_compressed_model(fresh, _config_without_loader(), compression_state=state)
    assert not any(q.initialized for q in ctrl2.quantizers().values())  # no data-driven init ran
    assert ctrl2.scheduler.current_epoch == 1
    assert nncf.load_state(model2, model.state_dict(), is_resume=True) == len(model.state_dict())
    x = torch.rand(5, 1, 8, 8)
    model.eval(), model2.eval()
    with torch.no_grad():
        assert torch.equal(model2(x), model(x))
    assert all(q.initialized for q in ctrl2.quantizers().values())


def _config_without_loader():
    return nncf.NNCFConfig.from_dict({
        "input_info": {"sample_size": [1, 1, 8, 8]},
        "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 128}}},
    })


def test_compression_state_must_come_from_get_compression_state():
    with pytest.raises(ValidationError, match="builder_state"):
        nncf.create_compressed_model(SmallCNN(), _config_without_loader(), compression_state={"foo": 1})


def test_distributed_is_a_no_op_outside_a_process_group():
    ctrl, model = _compressed(SmallCNN())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctrl.distributed()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_compression_rate_is_not_meaningful_for_quantization():
    ctrl, _ = _compressed(SmallCNN())
    with pytest.raises(ValidationError, match="compression rate"):
        _ = ctrl.compression_rate


def test_distributed_broadcasts_sorted_quantizers_and_refreshes_their_flags(monkeypatch):
    import sys
    import types

    ctrl, _ = _compressed(SmallCNN())
    calls = []

    def broadcast_modules(named, src=0):  # what rank 0 would send: unsigned grids, 4 bits
        calls.append(list(named))
        for module in named.values():
            if hasattr(module, "signed_tensor"):
                module.signed_tensor.fill_(0)

    fake = types.SimpleNamespace(is_distributed=lambda: True, broadcast_modules=broadcast_modules, barrier=lambda: None)
    monkeypatch.setitem(sys.modules, "nncompress.training.distributed", fake)
    monkeypatch.setattr(nncf.training, "distributed", fake, raising=False)
    ctrl.distributed()
    assert calls == [sorted(ctrl.quantizers())]
    assert all(not q.signed for q in ctrl.quantizers().values())  # the Python-side flag follows the buffer
    assert all(q.initialized for q in ctrl.quantizers().values())


def test_strip_without_copy_converts_the_model_in_place():
    ctrl, model = _compressed(SmallCNN())
    x = torch.rand(2, 1, 8, 8)
    model.eval()
    with torch.no_grad():
        before = model(x)
    stripped = ctrl.strip(do_copy=False)
    assert stripped is model
    assert all(isinstance(m, FakeQuantizer) for m in storage_of(model).hooks.values())
    with torch.no_grad():
        assert torch.equal(model(x), before)
