"""compress_weights' FQ / FQ_LORA / FQ_LORA_NLS formats on PyTorch: trainable fake-quantized weights with LoRA
adapters, trained, then stripped to packed INT4 storage."""

from __future__ import annotations

import numpy as np
import pytest

import nncompress as nncf
from nncompress.errors import ParameterNotSupportedError, ValidationError

torch = pytest.importorskip("torch")

from nncompress.backends.torch.lora_fq import FakeQuantizedWeight, fake_quantized_weights, nls_rank_choices  # noqa: E402
from nncompress.backends.torch.weight_storage import CompressedStorage  # noqa: E402

FQ_LORA = nncf.CompressionFormat.FQ_LORA


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = torch.nn.Linear(16, 32), torch.nn.Linear(32, 32), torch.nn.Linear(32, 8)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return MLP().eval()


def _compress(model, fmt=FQ_LORA, mode="int4_asym", rank=4, group_size=8, **kwargs):
    advanced = nncf.AdvancedCompressionParameters(lora_adapter_rank=rank)
    return nncf.compress_weights(model, mode=mode, group_size=group_size, compression_format=fmt,
                                 advanced_parameters=advanced, **kwargs)


def _run(model, x):
    with torch.no_grad():
        return model(x)


def _distill(student, teacher, steps=100, lr=3e-4, scale_lr=1e-5):
    """Adam on the MSE to the teacher's outputs (adapters at ``lr``, the float weights of the FQ format
    too, scales and zero points at ``scale_lr``); (loss before, loss after) on the training data."""
    torch.manual_seed(1)
    data = [torch.randn(64, 16) for _ in range(8)]
    targets = [_run(teacher, x) for x in data]
    grid = [p for n, p in student.named_parameters() if p.requires_grad and n.endswith(("scale", "zero_point"))]
    rest = [p for p in student.parameters() if p.requires_grad and all(p is not g for g in grid)]
    optimizer = torch.optim.Adam([{"params": rest, "lr": lr}, {"params": grid, "lr": scale_lr}])

    def loss_now() -> float:
        return float(np.mean([float(torch.nn.functional.mse_loss(_run(student, x), y)) for x, y in zip(data, targets)]))

    before = loss_now()
    student.train()
    for step in range(steps):
        loss = torch.nn.functional.mse_loss(student(data[step % 8]), targets[step % 8])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    student.eval()
    return before, loss_now()


@pytest.mark.parametrize("mode", ["int4_asym", "int4_sym"])
def test_initial_outputs_equal_the_dequantize_format(model, mode):
    x = torch.randn(5, 16)
    dq = nncf.compress_weights(model, mode=mode, group_size=8, all_layers=True)
    fq = _compress(model, mode=mode, all_layers=True)
    torch.testing.assert_close(_run(fq, x), _run(dq, x), rtol=0, atol=1e-6)
    modules = fake_quantized_weights(fq)
    assert len(modules) == 3 and all(m.rank == 4 and not m.weight.requires_grad for m in modules)
    assert all(not m.lora_B.detach().any() and m.lora_A.detach().abs().max() > 0 for m in modules)


def test_initial_weights_have_exactly_the_dequantize_formats_codes():
    # a group with scale 0.125 and zero point 8; w / s just below 3.5: round(w / s) + 8 = 11, while the encoder's
    # round(w / s + 8) sees 11.4999998 rounded to the float32 11.5, hence 12. The FQ weight must agree with it.
    layer = torch.nn.Sequential(torch.nn.Linear(64, 2, bias=False), torch.nn.Linear(2, 2))
    near = float(np.nextafter(np.float32(3.5), np.float32(0))) * 0.125
    with torch.no_grad():
        layer[0].weight.zero_()
        layer[0].weight[:, :3] = torch.tensor([-1.0, 0.875, near])
    dq = nncf.compress_weights(layer, mode="int4_asym", group_size=64)
    fq = _compress(layer, group_size=64)
    with torch.no_grad():
        assert float(dq[0].weight_compressed()[0, 2]) == 0.5  # code 12: (12 - 8) * 0.125
        assert torch.equal(fq[0].weight_compressed(), dq[0].weight_compressed())
    assert torch.equal(nncf.strip(fq)[0].weight_compressed.data, dq[0].weight_compressed.data)


def test_backup_layers_stay_compressed_and_the_input_model_is_untouched(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fq = _compress(model)  # the last Linear is in the INT8 backup mode
    assert isinstance(fq.head.weight_compressed, CompressedStorage)
    assert fq.head.weight_compressed.mode is nncf.CompressWeightsMode.INT8_ASYM
    assert isinstance(fq.fc1.weight_compressed, FakeQuantizedWeight)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_gradients_reach_the_adapters_and_the_scales(model):
    fq = _compress(model, all_layers=True)
    layer = fq.fc2.weight_compressed
    loss = fq(torch.randn(8, 16)).square().mean()
    loss.backward()
    assert float(layer.lora_B.grad.abs().max()) > 0  # B = 0: A's gradient B^T·dW is 0 at the start
    assert float(layer.scale.grad.abs().max()) > 0 and float(layer.zero_point.grad.abs().max()) > 0
    assert layer.weight.grad is None
    with torch.no_grad():
        layer.lora_B.add_(0.01)
    fq.zero_grad()
    fq(torch.randn(8, 16)).square().mean().backward()
    assert float(layer.lora_A.grad.abs().max()) > 0


def test_training_lowers_the_distillation_loss_and_strip_keeps_the_outputs(model):
    fq = _compress(model, all_layers=True)
    first, last = _distill(fq, model)
    assert last < 0.85 * first, (first, last)
    x = torch.randn(16, 16)
    trained = _run(fq, x)
    stripped = nncf.strip(fq)
    assert not fake_quantized_weights(stripped) and fake_quantized_weights(fq)  # strip copies by default
    torch.testing.assert_close(_run(stripped, x), trained, rtol=0, atol=1e-5)
    storage = stripped.fc2.weight_compressed
    assert isinstance(storage, CompressedStorage) and storage.mode is nncf.CompressWeightsMode.INT4_ASYM
    assert storage.data.dtype is torch.uint8 and storage.data.numel() == 32 * 32 // 2  # two codes per byte
    assert not [n for n, _ in stripped.named_parameters() if "lora" in n]
    in_place = nncf.strip(fq, strip_format=nncf.StripFormat.IN_PLACE)
    torch.testing.assert_close(_run(in_place, x), trained, rtol=0, atol=1e-5)
    assert isinstance(in_place.fc2.weight, torch.nn.Parameter)


def test_training_beats_round_to_nearest(model):
    rtn = nncf.compress_weights(model, mode="int4_asym", group_size=8, all_layers=True)
    fq = _compress(model, mode="int4_asym", rank=8, all_layers=True)
    _distill(fq, model)
    x = torch.randn(256, 16)
    reference = _run(model, x)
    rtn_error = float((_run(rtn, x) - reference).square().mean())
    trained_error = float((_run(nncf.strip(fq, strip_format=nncf.StripFormat.DQ), x) - reference).square().mean())
    assert trained_error < 0.8 * rtn_error, (rtn_error, trained_error)


def test_fq_format_trains_the_weight_itself_without_adapters(model):
    x = torch.randn(4, 16)
    int8 = _compress(model, fmt=nncf.CompressionFormat.FQ, mode="int8_sym", group_size=None)
    assert len(fake_quantized_weights(int8)) == 3  # 8-bit modes: every weight, per channel
    torch.testing.assert_close(_run(int8, x), _run(nncf.compress_weights(model, mode="int8_sym"), x), rtol=0, atol=1e-6)
    fq = _compress(model, fmt=nncf.CompressionFormat.FQ, all_layers=True)
    modules = fake_quantized_weights(fq)
    assert len(modules) == 3 and all(m.rank == 0 and m.weight.requires_grad for m in modules)
    first, last = _distill(fq, model, lr=1e-4)
    assert last < 0.85 * first, (first, last)
    torch.testing.assert_close(_run(nncf.strip(fq), x), _run(fq, x), rtol=0, atol=1e-5)


def test_nls_samples_ranks_in_training_and_strips_the_chosen_one(model):
    assert nls_rank_choices(8) == (8, 6, 4) and nls_rank_choices(1) == (1,)
    fq = _compress(model, fmt=nncf.CompressionFormat.FQ_LORA_NLS, rank=8, all_layers=True)
    layer = fq.fc1.weight_compressed
    assert layer.rank_choices == (8, 6, 4) and layer.active_rank == 8
    with torch.no_grad():
        layer.lora_B.normal_(0, 0.05)
    layer.train()
    seen = set()
    torch.manual_seed(0)
    for _ in range(30):
        value = layer().detach()
        seen.add(next(r for r in (8, 6, 4) if torch.equal(value, _at_rank(layer, r))))
    assert seen == {8, 6, 4}
    fq.eval()
    assert nncf.torch.set_lora_rank(fq, 4) == 3
    x = torch.randn(4, 16)
    at_four = _run(fq, x)
    torch.testing.assert_close(_run(nncf.strip(fq), x), at_four, rtol=0, atol=1e-5)
    nncf.torch.set_lora_rank(fq)
    assert layer.active_rank == 8 and not torch.equal(_run(fq, x), at_four)
    with pytest.raises(ValidationError, match="rank=5 is not one of the elastic ranks"):
        nncf.torch.set_lora_rank(fq, 5)


def _at_rank(layer, rank):
    layer.eval()
    layer.active_rank = rank
    with torch.no_grad():
        value = layer()
    layer.active_rank = 8
    layer.train()
    return value


def test_inference_reuses_the_weight_until_a_parameter_changes(model):
    layer = _compress(model, all_layers=True).fc1.weight_compressed
    with torch.no_grad():
        first = layer()
        assert layer() is first  # no recomputation between optimizer steps
        layer.lora_B.add_(0.05)  # what an optimizer step does: in place
        second = layer()
    assert second is not first and not torch.equal(second, first)
    torch.testing.assert_close(second, layer._fake_quantized(False), rtol=0, atol=0)
    assert layer().requires_grad  # with autograd: computed afresh, differentiable


def test_checkpoint_round_trip_through_get_config(model):
    fq = _compress(model, all_layers=True)
    _distill(fq, model, steps=5)
    config, state = nncf.torch.get_config(fq), fq.state_dict()
    restored = nncf.torch.load_from_config(model, config)
    restored.load_state_dict(state)
    x = torch.randn(4, 16)
    torch.testing.assert_close(_run(restored, x), _run(fq, x), rtol=0, atol=0)


@pytest.mark.parametrize("fmt", ["fake_quantize_with_lora", "fake_quantize_with_lora_nls"])
@pytest.mark.parametrize("mode", ["int8_asym", "nf4", "mxfp4"])
def test_lora_formats_need_a_4bit_integer_mode(model, fmt, mode):
    with pytest.raises(ValidationError, match=f"compression_format='{fmt}' needs mode 'int4_asym' or 'int4_sym'; "
                                              f"got mode='{mode}'"):
        nncf.compress_weights(model, mode=mode, compression_format=fmt)


def test_bad_combinations_are_rejected(model):
    data = nncf.Dataset([torch.randn(2, 16)])
    with pytest.raises(ValidationError, match="lora_correction=True cannot be combined with compression_format="):
        nncf.compress_weights(model, mode="int4_asym", group_size=8, dataset=data, lora_correction=True,
                              compression_format=FQ_LORA)
    with pytest.raises(ParameterNotSupportedError, match="awq=True change the float weights"):
        nncf.compress_weights(model, mode="int4_asym", group_size=8, dataset=data, awq=True,
                              compression_format=FQ_LORA)
    with pytest.raises(ValidationError, match="lora_adapter_rank must be a positive integer; got 0"):
        _compress(model, rank=0)
    with pytest.raises(ValidationError, match="needs mode 'int4_asym' or 'int4_sym' or 'int8_asym' or 'int8_sym'"):
        nncf.compress_weights(model, mode="nf4", compression_format=nncf.CompressionFormat.FQ)
    with pytest.raises(ValidationError, match="no elastic LoRA adapters"):
        nncf.torch.set_lora_rank(_compress(model), 4)
