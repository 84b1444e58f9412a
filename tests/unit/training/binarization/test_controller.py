"""Binarization through create_compressed_model: staged epochs, LR/WD on a real optimizer, init, statistics."""

import pytest
import torch

import nncompress as nncf
from nncompress.training.controller import CompressionStage
from nncompress.training.schedulers import staged_learning_rate, staged_weight_decay
from tests.unit.training.models import SmallCNN


def _data(n=2):
    return [(torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(i)), torch.zeros(8, dtype=torch.long))
            for i in range(n)]


def _config(**section):
    return nncf.NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]},
                                      "compression": {"algorithm": "binarization", **section}})


def _compress(loader=True, **section):
    config = _config(**section)
    if loader:
        config = nncf.torch.register_default_init_args(config, _data())
    torch.manual_seed(0)
    model = SmallCNN().eval()
    ctrl, compressed = nncf.create_compressed_model(model, config)
    return model, ctrl, compressed


def _on(modules):
    return {m.is_enabled for m in modules}


def test_staged_epochs_enable_activations_then_weights(monkeypatch):
    model, ctrl, compressed = _compress(params={"activations_quant_start_epoch": 1, "weights_quant_start_epoch": 2})
    x = torch.rand(3, 1, 8, 8)
    assert ctrl.compression_stage() is CompressionStage.UNCOMPRESSED
    with torch.no_grad():
        assert torch.equal(compressed(x), model(x))  # nothing binarized before epoch 1
    reinit = []
    real = ctrl._init_scales
    monkeypatch.setattr(ctrl, "_init_scales", lambda loader: reinit.append(1) or real(loader))
    ctrl.scheduler.epoch_step()  # epoch 0
    assert _on(ctrl.activation_binarizers) == {False} and reinit == []
    ctrl.scheduler.epoch_step()  # epoch 1: activations, scales re-initialised from the init loader
    assert _on(ctrl.activation_binarizers) == {True} and _on(ctrl.weight_binarizers) == {False} and reinit == [1]
    assert ctrl.compression_stage() is CompressionStage.PARTIALLY_COMPRESSED
    ctrl.scheduler.epoch_step()  # epoch 2: weights
    assert _on(ctrl.weight_binarizers) == {True} and ctrl.compression_stage() is CompressionStage.FULLY_COMPRESSED
    conv2 = compressed.conv2.weight.detach()
    expected = torch.where(conv2 > 0, 1.0, -1.0) * conv2.abs().mean((1, 2, 3), keepdim=True)
    hook = ctrl.weight_binarizers[0]
    assert torch.equal(hook(compressed.conv2.weight), expected)
    assert compressed.conv1.weight.unique().numel() > 2  # the first layer stays FP


def test_scales_come_from_the_init_data_and_without_a_loader_from_the_first_training_batch():
    _, ctrl, _ = _compress(params={"activations_quant_start_epoch": 0, "weights_quant_start_epoch": 0},
                           initializer={"range": {"num_init_samples": 8}})
    assert all(m.is_initialized for m in ctrl.activation_binarizers)
    _, ctrl, compressed = _compress(loader=False, params={"activations_quant_start_epoch": 0})
    act = ctrl.activation_binarizers[0]
    assert not act.is_initialized
    compressed.train()
    seen = []
    handle = compressed.bn1.register_forward_hook(lambda m, i, o: seen.append(torch.relu(o).detach()))
    compressed(torch.rand(4, 1, 8, 8))
    handle.remove()
    expected = seen[0].reshape(-1).sort().values[-4]  # 4 x 16 x 8 x 8 values: k = round(0.001 * 4096) = 4
    assert act.is_initialized and act.scale_value().item() == pytest.approx(expected.item(), rel=1e-6)


def test_the_scheduler_drives_a_real_optimizer_lr_and_weight_decay():
    params = {"lr_poly_drop_start_epoch": 2, "lr_poly_drop_duration_epochs": 2, "disable_wd_start_epoch": 3,
              "base_lr": 0.01, "base_wd": 1e-4}
    _, ctrl, compressed = _compress(params=params)
    optimizer = torch.optim.Adam(compressed.parameters(), lr=123.0, weight_decay=0.5)
    ctrl.scheduler.attach_optimizer(optimizer)
    assert optimizer.param_groups[0]["lr"] == 0.01 and optimizer.param_groups[0]["weight_decay"] == 1e-4
    seen = []
    for _ in range(4):
        ctrl.scheduler.epoch_step()
        for _ in range(4):
            ctrl.scheduler.step()
            seen.append((optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["weight_decay"]))
    spec = ctrl.spec.staged
    # epoch 0 has no known length yet (whole epochs); from epoch 1 on: epoch + i/4
    epochs = [0.0] * 4 + [e + i / 4 for e in (1, 2, 3) for i in range(4)]
    assert seen == [(staged_learning_rate(spec, e), staged_weight_decay(spec, e)) for e in epochs]
    assert seen[8] == (0.01, 1e-4) and seen[9][0] == pytest.approx(0.01 * 0.875**2.1)
    assert seen[12] == (pytest.approx(0.01 * 0.5**2.1), 0.0)
    assert staged_learning_rate(spec, 4.0) == 0.0 and staged_learning_rate(spec, 1.99) == 0.01


def test_statistics_show_each_layer_and_the_binarized_share():
    _, ctrl, _ = _compress(mode="dorefa", params={"activations_quant_start_epoch": 0, "weights_quant_start_epoch": 1})
    ctrl.scheduler.epoch_step()
    table = ctrl.statistics().as_dict()["binarization"]
    assert table["Mode"] == "dorefa" and table["Binarized convolutions"] == "1"
    assert table["Weights binarized (layers / MAC share)"] == "0 / 0.0 %"
    assert table["Activations binarized (layers / MAC share)"] == "1 / 100.0 %"
    assert table["conv2/conv2d/0"].startswith("W dorefa off, A on (S=")
    assert "conv2/conv2d/0" in ctrl.statistics().to_str()


def test_compression_lr_multiplier_scales_the_binarizer_gradients():
    x = torch.rand(4, 1, 8, 8)
    grads = []
    for multiplier in (None, 10.0):
        section = {"params": {"activations_quant_start_epoch": 0, "weights_quant_start_epoch": 0}}
        if multiplier:
            section["compression_lr_multiplier"] = multiplier
        _, ctrl, compressed = _compress(**section)
        compressed.train()
        compressed(x).square().sum().backward()
        grads.append(ctrl.activation_binarizers[0].threshold.grad.clone())
    assert torch.allclose(grads[1], grads[0] * 10, rtol=1e-5, atol=1e-7)


def test_attach_optimizer_with_a_given_epoch_length_and_bad_arguments():
    from nncompress.errors import ValidationError

    params = {"lr_poly_drop_start_epoch": 0, "lr_poly_drop_duration_epochs": 1, "base_lr": 1.0}
    _, ctrl, compressed = _compress(params=params)
    optimizer = torch.optim.SGD(compressed.parameters(), lr=0.5)  # no weight decay key change needed
    ctrl.scheduler.attach_optimizer(optimizer, steps_per_epoch=2)
    ctrl.scheduler.epoch_step()
    ctrl.scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 1.0  # epoch 0.0
    ctrl.scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5**2.1)  # epoch 0.5
    with pytest.raises(ValidationError, match="param_groups"):
        ctrl.scheduler.attach_optimizer(object())
    with pytest.raises(ValidationError, match="steps_per_epoch"):
        ctrl.scheduler.attach_optimizer(optimizer, steps_per_epoch=0)
