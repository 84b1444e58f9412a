"""nncompress.prune / RBLoss / pruning_statistic on PyTorch models (NNCF 3.x's unstructured pruning API)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import nncompress as nncf
from nncompress.backends.torch.sparsity import BinaryMask, RBLoss, RBMask, mask_hooks
from nncompress.errors import UnsupportedBackendError, ValidationError
from nncompress.numerics import sparsity as sp

Mode = nncf.PruneMode


class Net(nn.Module):
    """Embedding -> Conv1d -> ConvTranspose1d -> Linear, plus a tied output head (reads the embedding table)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(50, 16)
        self.conv = nn.Conv1d(16, 24, 3, padding=1)
        self.up = nn.ConvTranspose1d(24, 16, 3, padding=1)
        self.fc = nn.Linear(16, 16)
        self.norm = nn.LayerNorm(16)

    def forward(self, ids):
        x = self.emb(ids).transpose(1, 2)
        x = self.up(torch.relu(self.conv(x))).transpose(1, 2)
        x = self.norm(self.fc(x))
        return F.linear(x, self.emb.weight)


IDS = torch.arange(12).reshape(1, 12) % 50
WEIGHTS = ("emb.weight", "conv.weight", "up.weight", "fc.weight")


def _zeroed(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    by_hand = Net().eval()
    by_hand.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name, mask in masks.items():
            by_hand.get_parameter(name).mul_(mask)
    return by_hand


def _masks(pruned) -> dict[str, torch.Tensor]:
    return {m.tensor_name: m.binary_mask for _, m in mask_hooks(pruned)}


def test_local_prunes_each_weight_to_the_ratio_smallest_first():
    model = Net().eval()
    before = model(IDS).detach()
    pruned = nncf.prune(model, Mode.UNSTRUCTURED_MAGNITUDE_LOCAL, ratio=0.3, examples_inputs=IDS)
    masks = _masks(pruned)
    assert sorted(masks) == sorted(WEIGHTS)  # LayerNorm is not pruned; the tied head shares emb's mask
    for name, mask in masks.items():
        w = model.get_parameter(name).detach().abs().flatten()
        n = w.numel()
        assert int((~mask).sum()) == int((n - 1) * 0.3) + 1  # sorted[int((n-1)*S)] and everything below it
        assert w[~mask.flatten()].max() < w[mask.flatten()].min()  # the smallest magnitudes go
    torch.testing.assert_close(pruned(IDS), _zeroed(model, masks)(IDS))
    assert torch.equal(model(IDS), before)  # the input model is untouched
    assert all(isinstance(m, BinaryMask) for _, m in mask_hooks(pruned))


def test_global_uses_one_normed_threshold_over_all_weights():
    model = Net().eval()
    pruned = nncf.prune(model, Mode.UNSTRUCTURED_MAGNITUDE_GLOBAL, ratio=0.6, examples_inputs=IDS)
    masks = _masks(pruned)
    params = {name: model.get_parameter(name).detach() for name in WEIGHTS}
    threshold = sp.threshold_by_sort([sp.importance(p) for p in params.values()], 0.6)
    total = sum(p.numel() for p in params.values())
    for name, p in params.items():
        assert torch.equal(masks[name], sp.importance(p) > threshold)
    assert sum(int((~m).sum()) for m in masks.values()) == int((total - 1) * 0.6) + 1
    levels = {name: float((~m).float().mean()) for name, m in masks.items()}
    assert max(levels.values()) - min(levels.values()) > 0.05  # not the same level everywhere
    stat = nncf.pruning_statistic(pruned)
    assert stat.pruning_ratio == pytest.approx((int((total - 1) * 0.6) + 1) / total)
    assert {t.tensor_name: t.pruned_ratio for t in stat.pruned_tensors} == pytest.approx(levels)
    table = stat.to_str()
    assert "conv.weight" in table and "[24, 16, 3]" in table and str(stat) == table


def test_regularization_based_masks_train_towards_the_target():
    model = Net().eval()
    pruned = nncf.prune(model, Mode.UNSTRUCTURED_REGULARIZATION_BASED, examples_inputs=IDS)
    assert all(isinstance(m, RBMask) for _, m in mask_hooks(pruned)) and len(_masks(pruned)) == 4
    torch.testing.assert_close(pruned(IDS), model(IDS))  # logit(0.99): every weight kept at first
    loss = RBLoss(pruned, target_ratio=0.5, p=0.05)
    assert loss().item() == pytest.approx((0.5 / 0.05) ** 2)  # K/N = 1, density target 0.5
    assert loss.current_ratio() == 0.0
    logits = list({id(m): m.mask for _, m in mask_hooks(pruned)}.values())  # the tied weight has one mask
    assert len(logits) == 4 and len(loss.masks) == 4
    for param in pruned.parameters():
        param.requires_grad_(any(param is logit for logit in logits))
    optimizer = torch.optim.Adam(logits, lr=0.2)
    target = model(IDS).detach()
    pruned.train()  # stochastic masks; the task loss keeps the important weights, RBLoss pulls to the level
    for _ in range(60):
        optimizer.zero_grad()
        (nn.functional.mse_loss(pruned(IDS), target) + loss()).backward()
        optimizer.step()
    pruned.eval()
    assert 0.3 < loss.current_ratio() < 0.7
    assert nncf.pruning_statistic(pruned).pruning_ratio == pytest.approx(loss.current_ratio())
    for _, m in mask_hooks(pruned):
        m.freeze()
    assert loss().item() == 0.0  # frozen: the loss is off


def test_ignored_scope_keeps_a_layer_dense():
    model = Net().eval()
    graph = nncf.build_graph(model, example_input=IDS)
    fc = next(n.name for n in graph.nodes.values() if n.name.startswith("fc/"))
    pruned = nncf.prune(
        model, Mode.UNSTRUCTURED_MAGNITUDE_LOCAL, ratio=0.5, examples_inputs=IDS, ignored_scope=nncf.IgnoredScope([fc])
    )
    assert sorted(_masks(pruned)) == ["conv.weight", "emb.weight", "up.weight"]
    with pytest.raises(ValidationError, match="nothing"):
        nncf.prune(model, Mode.UNSTRUCTURED_MAGNITUDE_LOCAL, ratio=0.5, examples_inputs=IDS,
                   ignored_scope=nncf.IgnoredScope(["nothing"]))


def test_bf16_model_stays_bf16():
    model = Net().eval().to(torch.bfloat16)
    pruned = nncf.prune(model, "unstructured_magnitude_local", ratio=0.5, examples_inputs=IDS)
    out = pruned(IDS)
    assert out.dtype is torch.bfloat16
    assert nncf.pruning_statistic(pruned).pruning_ratio == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("ratio", [1.0, -0.1, 2, "half"])
def test_bad_ratio(ratio):
    with pytest.raises(ValidationError, match=r"ratio must be .*\[0, 1\)"):
        nncf.prune(Net(), Mode.UNSTRUCTURED_MAGNITUDE_GLOBAL, ratio=ratio, examples_inputs=IDS)


def test_missing_or_misplaced_arguments():
    with pytest.raises(ValidationError, match="needs ratio"):
        nncf.prune(Net(), Mode.UNSTRUCTURED_MAGNITUDE_LOCAL, examples_inputs=IDS)
    with pytest.raises(ValidationError, match="RBLoss"):
        nncf.prune(Net(), Mode.UNSTRUCTURED_REGULARIZATION_BASED, ratio=0.5, examples_inputs=IDS)
    with pytest.raises(ValidationError, match="examples_inputs"):
        nncf.prune(Net(), Mode.UNSTRUCTURED_MAGNITUDE_LOCAL, ratio=0.5)
    with pytest.raises(ValidationError, match="mode must be one of 'unstructured_magnitude_local'"):
        nncf.prune(Net(), "structured", ratio=0.5, examples_inputs=IDS)
    with pytest.raises(ValidationError, match="no RB masks"):
        RBLoss(Net(), target_ratio=0.5)
    with pytest.raises(ValidationError, match="no Conv/Linear/Embedding"):
        nncf.prune(nn.Sequential(nn.ReLU()), Mode.UNSTRUCTURED_MAGNITUDE_LOCAL, ratio=0.5, examples_inputs=IDS.float())


def test_other_backends_are_refused_by_name_and_their_statistic_counts_zeros(tmp_path):
    onnx = pytest.importorskip("onnx")
    ov = pytest.importorskip("openvino")
    fc = nn.Linear(8, 4)
    with torch.no_grad():
        fc.weight[:, :2] = 0  # a quarter of the weights already zero
    path = tmp_path / "fc.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(fc, (torch.ones(1, 8),), str(path), dynamo=False)
    for model, name in ((onnx.load(str(path)), "an onnx"), (ov.convert_model(str(path)), "an openvino")):
        with pytest.raises(UnsupportedBackendError, match=f"PyTorch models .* only; got {name} model"):
            nncf.prune(model, Mode.UNSTRUCTURED_MAGNITUDE_LOCAL, ratio=0.5, examples_inputs=np.ones((1, 8)))
        stat = nncf.pruning_statistic(model)
        assert stat.pruning_ratio == 0.25 and [t.shape for t in stat.pruned_tensors] in ([(4, 8)], [(8, 4)])


def test_statistic_of_an_unpruned_and_of_a_stripped_model():
    model = Net().eval()
    stat = nncf.pruning_statistic(model)
    assert [t.tensor_name for t in stat.pruned_tensors] == ["emb.weight", "conv.weight", "up.weight", "fc.weight"]
    assert stat.pruning_ratio == 0.0 and "All 4 weights: 0.0% pruned" in stat.to_str()
    pruned = nncf.prune(model, Mode.UNSTRUCTURED_MAGNITUDE_LOCAL, ratio=0.4, examples_inputs=IDS)
    stripped = nncf.strip(pruned)
    # masks baked into the weights; the tied embedding (read by two operations) keeps its mask hook, as strip
    # does for every hook on a shared weight
    assert [m.tensor_name for _, m in mask_hooks(stripped)] == ["emb.weight", "emb.weight"]
    assert float((stripped.conv.weight == 0).float().mean()) == pytest.approx(0.4, abs=0.01)
    assert nncf.pruning_statistic(stripped).pruning_ratio == pytest.approx(nncf.pruning_statistic(pruned).pruning_ratio)
    assert nncf.pruning_statistic(stripped).pruning_ratio == pytest.approx(0.4, abs=0.01)
