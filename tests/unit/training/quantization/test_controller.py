"""Quantization controller with the staged scheduler (``params``): enable per epoch, re-init, stages."""

import torch

import nncompress as nncf
from nncompress.training.controller import CompressionStage
from tests.unit.training.models import SmallCNN


def _staged(**params):
    data = [(torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(i)), torch.zeros(8, dtype=torch.long))
            for i in range(2)]
    config = nncf.NNCFConfig.from_dict({
        "input_info": {"sample_size": [1, 1, 8, 8]},
        "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 8}},
                        "params": params},
    })
    config = nncf.torch.register_default_init_args(config, data)
    torch.manual_seed(0)
    model = SmallCNN().eval()
    ctrl, compressed = nncf.create_compressed_model(model, config)
    return model, ctrl, compressed


def _enabled(ctrl, group):
    return {q.is_enabled for c, q in zip(ctrl.configs, ctrl.modules) if c.group == group}


def test_staged_quantizers_follow_the_epochs_and_reinitialise(monkeypatch):
    model, ctrl, compressed = _staged(activations_quant_start_epoch=1, weights_quant_start_epoch=2)
    x = torch.rand(3, 1, 8, 8)
    assert ctrl.compression_stage() is CompressionStage.UNCOMPRESSED
    assert _enabled(ctrl, "activations") == {False} and _enabled(ctrl, "weights") == {False}
    with torch.no_grad():
        assert torch.allclose(compressed(x), model(x), atol=1e-6)  # nothing quantizes yet
    reinit = []
    real = ctrl._init_ranges
    monkeypatch.setattr(ctrl, "_init_ranges", lambda loader, group=None: reinit.append(group) or real(loader, group))
    ctrl.scheduler.epoch_step()  # epoch 0
    assert reinit == [] and ctrl.compression_stage() is CompressionStage.UNCOMPRESSED
    ctrl.scheduler.epoch_step()  # epoch 1
    assert reinit == ["activations"] and _enabled(ctrl, "activations") == {True}
    assert ctrl.compression_stage() is CompressionStage.PARTIALLY_COMPRESSED
    ctrl.scheduler.epoch_step()  # epoch 2
    assert reinit == ["activations", "weights"] and _enabled(ctrl, "weights") == {True}
    assert ctrl.compression_stage() is CompressionStage.FULLY_COMPRESSED
    assert ctrl.statistics().as_dict()["quantization"]["Enabled share"] == "100.0 %"
    state = ctrl.get_compression_state()
    assert state["ctrl_state"]["quantization"]["compression_stage"] == 2


def test_staged_resume_restores_enabled_groups_without_reinit():
    model, ctrl, compressed = _staged(activations_quant_start_epoch=0, weights_quant_start_epoch=3)
    ctrl.scheduler.epoch_step()
    ctrl.scheduler.epoch_step()
    state = ctrl.get_compression_state()
    config = nncf.NNCFConfig.from_dict({
        "input_info": {"sample_size": [1, 1, 8, 8]},
        "compression": {"algorithm": "quantization", "params": {"activations_quant_start_epoch": 0,
                                                                "weights_quant_start_epoch": 3}},
    })
    ctrl2, model2 = nncf.create_compressed_model(SmallCNN(), config, compression_state=state)
    assert ctrl2.scheduler.current_epoch == 1
    assert _enabled(ctrl2, "activations") == {True} and _enabled(ctrl2, "weights") == {False}
    nncf.load_state(model2, compressed.state_dict(), is_resume=True)
    model2.eval()
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model2(x), compressed(x))
