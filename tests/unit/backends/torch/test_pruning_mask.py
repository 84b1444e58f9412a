"""FilterPruningMask and its insertion as hooks at Stage.PRUNING_MASK."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from nncompress.backends.torch.channel_removal import model_channels
from nncompress.backends.torch.hooks import storage_of
from nncompress.backends.torch.pruning_mask import FilterPruningMask, insert_pruning_masks, update_pruning_masks
from nncompress.errors import ValidationError
from nncompress.graph.channels import PruningRules
from nncompress.graph.edits import Stage

from .pruning_models import half_masks, randomize_norms, sequential


def test_mask_zeroes_along_its_dim():
    weight = torch.arange(1.0, 9.0).reshape(2, 4)
    rows = FilterPruningMask(2, dim=0)
    rows.set_mask([0, 1])
    assert rows(weight).tolist() == [[0, 0, 0, 0], [5, 6, 7, 8]]
    cols = FilterPruningMask(4, dim=1)
    cols.set_mask([1, 0, 0, 1])
    assert cols(weight).tolist() == [[1, 0, 0, 4], [5, 0, 0, 8]]
    assert "kept=2" in repr(cols)
    with pytest.raises(ValidationError, match="for 4 channels"):
        cols.set_mask([1, 0])


def test_masks_equal_zeroed_weights_and_sit_at_the_pruning_stage():
    x = torch.randn(2, 3, 8, 8)
    model = randomize_norms(sequential())
    before = copy.deepcopy(model.state_dict())
    channels = model_channels(model, x, PruningRules(prune_first_conv=True))
    keep = half_masks(channels.groups)
    masked = insert_pruning_masks(model, channels, keep)

    g0 = channels.groups.group_of("0/conv2d/0").id
    g3 = channels.groups.group_of("3/conv2d/0").id
    g7 = channels.groups.group_of("7/linear/0").id
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for index, attrs in ((0, ("weight", "bias")), (1, ("weight", "bias"))):
            for attr in attrs:
                getattr(zeroed[index], attr)[~keep[g0]] = 0
        zeroed[3].weight[:, ~keep[g0]] = 0
        zeroed[3].weight[~keep[g3]] = 0
        zeroed[3].bias[~keep[g3]] = 0
        zeroed[7].weight[:, ~keep[g3]] = 0
        zeroed[7].weight[~keep[g7]] = 0
        zeroed[7].bias[~keep[g7]] = 0
        zeroed[9].weight[:, ~keep[g7]] = 0
        torch.testing.assert_close(masked(x), zeroed(x), atol=1e-6, rtol=1e-6)
        assert not torch.allclose(masked(x), model(x), atol=1e-3)

    storage = storage_of(masked)
    names = list(storage.keys)
    assert len(names) == 11  # 3 producers x (weight, bias) + bn (weight, bias) + 3 consumer inputs
    assert {storage.stages[n] for n in names} == {Stage.PRUNING_MASK}
    masks = [m for m in masked.modules() if isinstance(m, FilterPruningMask)]
    assert sorted(int(m.binary_mask.sum()) for m in masks) == sorted([8] * 5 + [16] * 3 + [12] * 3)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_masks_are_trainable_through():
    x = torch.randn(2, 3, 8, 8)
    model = sequential()
    channels = model_channels(model, x, PruningRules(prune_first_conv=True))
    keep = half_masks(channels.groups)
    masked = insert_pruning_masks(model, channels, keep).train()
    masked(x).sum().backward()
    g0 = channels.groups.group_of("0/conv2d/0").id
    grad = masked[0].weight.grad
    assert grad is not None and np.all(grad[~keep[g0]].numpy() == 0) and grad[keep[g0]].abs().sum() > 0


def test_masks_start_open_and_update_in_place():
    x = torch.randn(2, 3, 8, 8)
    model = randomize_norms(sequential())
    channels = model_channels(model, x, PruningRules(prune_first_conv=True))
    masked = insert_pruning_masks(model, channels)  # level 0: every mask open
    with torch.no_grad():
        torch.testing.assert_close(masked(x), model(x))
    assert len(storage_of(masked).keys) == 11
    keep = half_masks(channels.groups)
    update_pruning_masks(masked, channels, keep)
    with torch.no_grad():
        torch.testing.assert_close(masked(x), insert_pruning_masks(model, channels, keep)(x))
    with pytest.raises(ValidationError, match="no pruning masks"):
        update_pruning_masks(model, channels, keep)


def test_batch_norms_left_unmasked_on_request():
    x = torch.randn(2, 3, 8, 8)
    model = randomize_norms(sequential())
    channels = model_channels(model, x, PruningRules(prune_first_conv=True))
    keep = half_masks(channels.groups)
    masked = insert_pruning_masks(model, channels, keep, prune_batch_norms=False)
    assert len(storage_of(masked).keys) == 9  # the batch norm's weight and bias are not masked
    update_pruning_masks(masked, channels, keep)
    with torch.no_grad():  # the consumer masks still make it equal to the fully masked model
        torch.testing.assert_close(masked(x), insert_pruning_masks(model, channels, keep)(x), atol=1e-5, rtol=1e-5)


def test_masked_model_strips_and_exports_with_the_masks(tmp_path):
    import onnxruntime as ort

    from nncompress.backends.torch.export import export_onnx, strip

    x = torch.randn(2, 3, 8, 8)
    model = randomize_norms(sequential())
    channels = model_channels(model, x, PruningRules(prune_first_conv=True))
    masked = insert_pruning_masks(model, channels, half_masks(channels.groups))
    with torch.no_grad():
        want = masked(x)
        torch.testing.assert_close(strip(masked)(x), want, atol=1e-6, rtol=1e-6)
    session = ort.InferenceSession(str(export_onnx(masked, tmp_path / "m.onnx", x)), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=1e-5)


def test_mask_channels_edit_puts_a_mask_hook_at_the_pruning_stage_and_checks_its_shape():
    from nncompress.backends.torch.adapter import TorchAdapter
    from nncompress.graph.edits import FakeQuantParams, MaskChannels, QuantizeWeight

    model = sequential().eval()
    x = torch.randn(2, 3, 8, 8)
    adapter = TorchAdapter(example_input=x)
    conv = next(n for n in adapter.build_graph(model) if n.name == "3/conv2d/0")
    params = FakeQuantParams(np.float32(-1.0), np.float32(1.0), 256, None, True, False)
    mask = np.array([1, 0] * 16, bool)
    edits = [QuantizeWeight(conv.name, 1, params, "q"), MaskChannels(conv.name, 1, 0, mask, "m")]
    hooked = adapter.apply(model, edits)
    assert storage_of(hooked).chain("pre", conv.name, 1) == ["m", "q"]  # list order does not matter
    expected = model[3].weight * torch.from_numpy(mask).float().view(-1, 1, 1, 1)
    assert torch.equal(storage_of(hooked).module("m")(model[3].weight), expected)
    with pytest.raises(ValidationError, match="does not fit"):
        adapter.apply(model, [MaskChannels(conv.name, 1, 0, np.ones(31, bool), "bad")])


def test_slice_channels_keeps_the_per_channel_state_of_a_hook_and_leaves_per_tensor_state():
    from nncompress.backends.torch.pruning_mask import slice_channels

    hook = torch.nn.Module()
    hook.scale = torch.nn.Parameter(torch.arange(4.0).view(4, 1, 1, 1))
    hook.register_buffer("low", torch.arange(4.0).view(4, 1, 1, 1) * 10)
    hook.per_tensor = torch.nn.Parameter(torch.ones(1))
    hook.shape = (4, 1, 1, 1)
    slice_channels(hook, 4, 0, np.array([True, False, True, False]))
    assert hook.scale.view(-1).tolist() == [0.0, 2.0] and isinstance(hook.scale, torch.nn.Parameter)
    assert hook.low.view(-1).tolist() == [0.0, 20.0] and "low" in dict(hook.named_buffers())
    assert hook.per_tensor.shape == (1,) and hook.shape == (2, 1, 1, 1)
