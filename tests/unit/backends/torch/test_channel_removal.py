"""Real channel removal: the shrunk model computes what the masked model computes, with fewer parameters."""

from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from nncompress.backends.torch.channel_removal import model_channels, remove_channels
from nncompress.backends.torch.pruning_mask import insert_pruning_masks
from nncompress.errors import ValidationError
from nncompress.graph.channels import PruningRules

from .pruning_models import (
    ResidualDW,
    SharedTwice,
    SqueezeExcite,
    TokenMLP,
    half_masks,
    randomize_norms,
    sequential,
)

FIRST = PruningRules(prune_first_conv=True)
FREE = PruningRules(prune_first_conv=True, prune_downsample_convs=True)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _check(model, x, rules, expected_reduction):
    model = randomize_norms(model)
    before = copy.deepcopy(model.state_dict())
    channels = model_channels(model, x, rules)
    keep = half_masks(channels.groups)
    masked = insert_pruning_masks(model, channels, keep)
    shrunk = remove_channels(model, channels, keep)
    with torch.no_grad():
        full, want, got = model(x), masked(x), shrunk(x)
    assert type(shrunk) is type(model)
    assert not torch.allclose(full, want, atol=1e-3)  # the masks changed the result
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert _params(model) - _params(shrunk) == expected_reduction
    for key, value in model.state_dict().items():  # the input model is untouched
        assert torch.equal(value, before[key])
    return channels, shrunk


def test_residual_depthwise_concat_groups():
    x = torch.randn(2, 3, 8, 8)
    channels = model_channels(ResidualDW(), x, FIRST)
    by = {tuple(g.producers): g for g in channels.groups}
    assert set(by) == {("stem/conv2d/0", "project/conv2d/0"), ("expand/conv2d/0",), ("branch/conv2d/0",),
                       ("down/conv2d/0",), ("head/linear/0",)}
    skip = by[("stem/conv2d/0", "project/conv2d/0")]
    assert skip.prunable and skip.followers == ["bn3/batch_norm/0"]
    assert {(c.node, c.offset) for c in skip.consumers} == {
        ("expand/conv2d/0", 0), ("branch/conv2d/0", 0), ("down/conv2d/0", 0)}
    assert [(c.node, c.offset) for c in by[("branch/conv2d/0",)].consumers] == [("down/conv2d/0", 32)]
    assert by[("expand/conv2d/0",)].followers == ["bn1/batch_norm/0", "dw/conv2d/0", "bn2/batch_norm/0"]
    assert "downsampling conv" in by[("down/conv2d/0",)].reason
    assert "model output" in by[("head/linear/0",)].reason


def test_residual_depthwise_concat_masked_equals_removed():
    # hand count, halving stem+project (32->16), expand (64->32), branch (16->8):
    # stem 448, expand 1568, bn1 64, dw 320, bn2 64, project 1552, branch 3464, bn3 48, down 5184
    _, shrunk = _check(ResidualDW(), torch.randn(2, 3, 8, 8), FIRST, 12712)
    assert shrunk.dw.groups == shrunk.dw.in_channels == shrunk.dw.out_channels == 32
    assert shrunk.bn3.num_features == 24 and shrunk.down.in_channels == 24


def test_flatten_into_linear_is_sliced_by_blocks():
    # also pruning the strided conv (24 -> 12): down 2604 more, head 10*(384-192) = 1920 more
    _, shrunk = _check(ResidualDW(), torch.randn(2, 3, 8, 8), FREE, 12712 + 2604 + 1920)
    assert shrunk.head.in_features == 12 * 16


def test_module_called_twice_is_shrunk_once():
    # stem 448->224, shared 2320->584, out 68->36
    channels, shrunk = _check(SharedTwice(), torch.randn(2, 3, 8, 8), FIRST, 224 + 1736 + 32)
    by = {tuple(g.producers): g for g in channels.groups}
    assert ("stem/conv2d/0", "shared/conv2d/0", "shared/conv2d/1") in by
    assert tuple(shrunk.shared.weight.shape) == (8, 8, 3, 3)


def test_sequential():
    # conv0 224, bn 16, conv3 3472, linear7 588, linear9 60
    channels, shrunk = _check(sequential(), torch.randn(2, 3, 8, 8), FIRST, 4360)
    assert isinstance(shrunk, nn.Sequential) and shrunk[7].in_features == 16 and shrunk[9].in_features == 12


def test_squeeze_excite_gate_joins_its_input():
    # stem 16->8, {conv, expand} 32->16, reduce 8->4: stem 448->224, conv 4640->1168, reduce 264->68,
    # expand 288->80, out (inputs only) 132->68
    channels, _ = _check(SqueezeExcite(), torch.randn(2, 3, 8, 8), FIRST, 224 + 3472 + 196 + 208 + 64)
    groups = {tuple(g.producers) for g in channels.groups.prunable()}
    assert ("conv/conv2d/0", "expand/conv2d/0") in groups and ("reduce/conv2d/0",) in groups


def test_token_mlp_prunes_the_hidden_layer_only():
    # fc1 64->32: 1088->544; fc2 in 1040->528
    channels, shrunk = _check(TokenMLP(), torch.randn(2, 5, 16), FIRST, 544 + 512)
    assert shrunk.fc1.out_features == 32 and shrunk.fc2.in_features == 32
    assert "no prunable layer produces" in channels.groups.group_of("fc2/linear/0").reason


def test_shrunk_model_exports_to_onnx_and_runs_in_onnxruntime(tmp_path):
    from nncompress.backends.torch.export import export_onnx

    x = torch.randn(2, 3, 8, 8)
    model = randomize_norms(ResidualDW())
    channels = model_channels(model, x, FREE)
    shrunk = remove_channels(model, channels, half_masks(channels.groups))
    path = export_onnx(shrunk, tmp_path / "shrunk.onnx", x)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, shrunk(x).numpy(), atol=1e-5, rtol=1e-5)
    assert path.stat().st_size < 0.6 * _params(model) * 4


class _Norms(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 1)
        self.gn = nn.GroupNorm(groups, 16)
        self.c2 = nn.Conv1d(16, 8, 1)
        self.up = nn.ConvTranspose2d(16, 16, 2, stride=2)
        self.c3 = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y = torch.relu(self.gn(self.c1(x)))
        y = self.c3(torch.relu(self.up(y)))
        return y.mean(dim=(2, 3))


def test_group_norm_per_channel_and_transposed_conv_shrink():
    # c1 16->8: 64->32 (-32); gn 32->16 (-16); up 16*16*4+16=1040 -> 8*8*4+8=264 (-776); c3 68->36 (-32)
    _, shrunk = _check(_Norms(16), torch.randn(2, 3, 4, 4), FREE, 32 + 16 + 776 + 32)
    assert shrunk.gn.num_groups == shrunk.gn.num_channels == 8


def test_group_norm_mixing_channels_blocks_its_group():
    channels = model_channels(_Norms(4), torch.randn(2, 3, 4, 4), FREE)
    group = channels.groups.group_of("c1/conv2d/0")
    assert "num_groups=4" in group.reason


class _Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 3, 1, 1))
        self.c2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c2(torch.nn.functional.conv2d(x, self.w))


def test_weights_outside_a_resizable_module_block_the_group():
    channels = model_channels(_Functional(), torch.randn(1, 3, 4, 4), FREE)
    group = channels.groups.group_of("conv2d/0")
    assert "cannot be resized" in group.reason


def test_bad_masks_are_refused():
    x = torch.randn(1, 3, 8, 8)
    model = ResidualDW()
    channels = model_channels(model, x, FIRST)
    down = channels.groups.group_of("down/conv2d/0")
    with pytest.raises(ValidationError, match="cannot be pruned: .*downsampling"):
        remove_channels(model, channels, {down.id: np.arange(24) < 8})
    expand = channels.groups.group_of("expand/conv2d/0")
    with pytest.raises(ValidationError, match="64 booleans"):
        remove_channels(model, channels, {expand.id: np.ones(10, bool)})
    with pytest.raises(ValidationError, match="at least one True"):
        remove_channels(model, channels, {expand.id: np.zeros(64, bool)})
    with pytest.raises(ValidationError, match="no channel group 99"):
        remove_channels(model, channels, {99: np.ones(3, bool)})


def test_capture_records_channel_attributes():
    from nncompress.backends.torch.capture import capture_graph

    graph = capture_graph(ResidualDW(), torch.randn(1, 3, 8, 8)).graph
    assert graph.node("down/conv2d/0").attrs["strides"] == (2, 2)
    assert graph.node("dw/conv2d/0").attrs["strides"] == (1, 1)
    assert graph.node("cat/0").attrs["axis"] == 1
    graph = capture_graph(SqueezeExcite(), torch.randn(1, 3, 8, 8)).graph
    attrs = graph.node("mean/0").attrs
    assert (attrs["axes"], attrs["keepdims"]) == ((2, 3), True)
    graph = capture_graph(_Norms(4), torch.randn(1, 3, 4, 4)).graph
    assert graph.node("gn/group_norm/0").attrs["num_groups"] == 4


def test_groups_are_the_same_on_the_onnx_graph(tmp_path):
    import onnx

    from nncompress.backends.registry import get_adapter
    from nncompress.backends.torch.export import export_onnx
    from nncompress.graph.channels import channel_groups

    model, x = ResidualDW().eval(), torch.randn(1, 3, 8, 8)
    proto = onnx.load(str(export_onnx(model, tmp_path / "m.onnx", x)))
    graph = get_adapter(proto).build_graph(proto)
    onnx_groups = channel_groups(graph, FIRST)
    torch_groups = model_channels(model, x, FIRST).groups

    def summary(groups, module_of):
        return sorted(
            (tuple(sorted(module_of(p) for p in g.producers)), g.prunable,
             tuple(sorted((module_of(c.node), c.offset, c.block) for c in g.consumers)))
            for g in groups
        )

    assert summary(onnx_groups, lambda n: n.split("/")[2]) == summary(torch_groups, lambda n: n.split("/")[0])


def _stack(conv, norm) -> nn.Sequential:
    return nn.Sequential(conv(3, 16, 3, padding=1), norm(16), nn.ReLU(), conv(16, 8, 1), nn.ReLU(), conv(8, 4, 1))


@pytest.mark.parametrize(
    ("model", "shape", "reduction"),
    [
        # conv0 16->8, conv3 8->4: conv0 3*16*k+16 halves, bn 32->16, conv3 16*8+8=136 -> 8*4+4=36, conv5 in 36->20
        (_stack(nn.Conv1d, nn.BatchNorm1d), (2, 3, 10), (3 * 3 * 8 + 8) + 16 + 100 + 16),
        (_stack(nn.Conv3d, nn.BatchNorm3d), (2, 3, 4, 4, 4), (3 * 27 * 8 + 8) + 16 + 100 + 16),
        # Linear 10->32 -> BatchNorm1d -> Linear 32->6: 352->176, bn 64->32, 198->102
        (nn.Sequential(nn.Linear(10, 32), nn.BatchNorm1d(32), nn.Tanh(), nn.Linear(32, 6)), (4, 10),
         176 + 32 + 96),
    ],
)
def test_conv1d_conv3d_and_linear_batch_norm(model, shape, reduction):
    _check(model, torch.randn(*shape), FIRST, reduction)
