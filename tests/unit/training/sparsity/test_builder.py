"""Sparsity builders: which weights get masks (op kinds, scopes, shared weights), edits, builder state."""

import pytest
import torch
from torch import nn

import nncompress as nncf
from nncompress.backends.torch.hooks import storage_of
from nncompress.backends.torch.sparsity import BinaryMask, RBMask
from nncompress.errors import ValidationError
from nncompress.graph.edits import MaskWeight, Stage
from tests.unit.training.models import SmallCNN


class AllKinds(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.c1 = nn.Conv1d(4, 4, 3, padding=1)
        self.c2 = nn.Conv2d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.t2 = nn.ConvTranspose2d(2, 2, 2)
        self.c3 = nn.Conv3d(1, 2, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, tokens, image, volume):
        a = self.c1(self.emb(tokens).transpose(1, 2)).mean(-1)
        b = self.t2(self.bn(self.c2(image))).mean((1, 2, 3))
        return self.fc(a) + b[:, None] + self.c3(volume).mean()


def _all_kinds_config(**section):
    return nncf.NNCFConfig.from_dict({
        "input_info": [{"sample_size": [2, 5], "type": "long"}, {"sample_size": [2, 1, 4, 4]},
                       {"sample_size": [2, 1, 2, 2, 2]}],
        "compression": {"algorithm": "magnitude_sparsity", **section},
    })


def test_masks_on_conv_1d_2d_3d_transposed_linear_embedding_only():
    ctrl, model = nncf.create_compressed_model(AllKinds(), _all_kinds_config())
    assert sorted(ctrl.masks) == ["c1.weight", "c2.weight", "c3.weight", "emb.weight", "fc.weight", "t2.weight"]
    assert all(isinstance(m, BinaryMask) for m in ctrl.masks.values())
    assert tuple(ctrl.masks["t2.weight"].binary_mask.shape) == (2, 2, 2, 2)
    assert ctrl.masks["emb.weight"].tensor_name == "emb.weight"


def test_ignored_and_target_scopes_in_nncf_forms():
    ctrl, _ = nncf.create_compressed_model(AllKinds(), _all_kinds_config(
        ignored_scopes=["AllKinds/Conv1d[c1]/conv1d_0", "{re}.*emb.*"]))
    assert sorted(ctrl.masks) == ["c2.weight", "c3.weight", "fc.weight", "t2.weight"]
    ctrl, _ = nncf.create_compressed_model(AllKinds(), _all_kinds_config(target_scopes=["fc", "c2"]))
    assert sorted(ctrl.masks) == ["c2.weight", "fc.weight"]


def test_unmatched_scope_is_refused_unless_validate_scopes_is_false():
    with pytest.raises(ValidationError, match="nothing_like_this"):
        nncf.create_compressed_model(AllKinds(), _all_kinds_config(ignored_scopes=["nothing_like_this"]))
    ctrl, _ = nncf.create_compressed_model(
        AllKinds(), _all_kinds_config(ignored_scopes=["nothing_like_this"], validate_scopes=False))
    assert len(ctrl.masks) == 6


def test_everything_ignored_is_an_error_naming_the_scopes():
    with pytest.raises(ValidationError, match="no Conv/Linear/Embedding weight in scope"):
        nncf.create_compressed_model(AllKinds(), _all_kinds_config(target_scopes=["bn"]))


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(6, 4)
        self.head = nn.Linear(4, 6, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, tokens):
        return self.head(self.emb(tokens))


@pytest.mark.parametrize("algorithm", ["magnitude_sparsity", "rb_sparsity"])
def test_a_shared_weight_gets_one_mask_on_both_uses(algorithm):
    config = nncf.NNCFConfig.from_dict({"input_info": {"sample_size": [1, 3], "type": "long"},
                                        "compression": {"algorithm": algorithm}})
    ctrl, model = nncf.create_compressed_model(Tied(), config)
    assert list(ctrl.masks) == ["emb.weight"]
    storage = storage_of(model)
    hooks = [h for h in storage.keys if storage.stages[h] == Stage.SPARSITY_MASK]
    assert len(hooks) == 2 and storage.module(hooks[0]) is storage.module(hooks[1])
    if algorithm == "magnitude_sparsity":
        ctrl.set_sparsity_level(0.5)
        stripped = ctrl.strip()
        tokens = torch.tensor([[0, 3, 5]])
        assert torch.equal(stripped(tokens), model(tokens))
        assert stripped.head.weight is stripped.emb.weight and float((stripped.emb.weight == 0).float().mean()) > 0.4


def test_edits_are_mask_weights_of_ones_rb_trainable():
    from nncompress.backends.registry import get_adapter
    from nncompress.training.config.spec import AlgorithmSpec
    from nncompress.training.quantization.scopes import node_names
    from nncompress.training.sparsity.builder import RBSparsityBuilder

    model = SmallCNN()
    example = (torch.ones(1, 1, 8, 8),)
    adapter = get_adapter(model, example_input=example)
    graph = adapter.build_graph(model)
    builder = RBSparsityBuilder(AlgorithmSpec("rb_sparsity", {"algorithm": "rb_sparsity"}))
    edits = builder.edits(graph, node_names(graph, model), adapter.capabilities)
    assert [type(e) for e in edits] == [MaskWeight] * 3
    assert [e.name for e in edits] == ["conv1.weight", "conv2.weight", "fc.weight"]
    assert all(e.trainable and e.mask.all() for e in edits)
    assert edits[2].mask.shape == (10, 512)
    ctrl = builder.build_controller(adapter.apply(model, edits))
    assert all(isinstance(m, RBMask) for m in ctrl.masks.values())


def test_builder_state_round_trip_and_a_foreign_state_is_refused():
    config = nncf.NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]},
                                        "compression": {"algorithm": "magnitude_sparsity"}})
    ctrl, _ = nncf.create_compressed_model(SmallCNN(), config)
    state = ctrl.get_compression_state()
    assert state["builder_state"] == {"magnitude_sparsity": {"sparsified_weights": ["conv1.weight", "conv2.weight",
                                                                                    "fc.weight"]}}
    state["builder_state"]["magnitude_sparsity"]["sparsified_weights"] = ["conv9.weight"]
    with pytest.raises(ValidationError, match="conv9.weight"):
        nncf.create_compressed_model(SmallCNN(), config, compression_state=state)


def test_rb_compression_lr_multiplier_scales_mask_gradients():
    grads = []
    for multiplier in (None, 4.0):
        torch.manual_seed(0)
        extra = {} if multiplier is None else {"compression_lr_multiplier": multiplier}
        section = {"algorithm": "rb_sparsity", **extra}
        config = nncf.NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": section})
        ctrl, model = nncf.create_compressed_model(SmallCNN(), config)
        ctrl.set_sparsity_level(0.5)
        ctrl.loss().backward()
        grads.append(ctrl.masks["fc.weight"].mask.grad.clone())
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[1], 4.0 * grads[0])


def test_sparsity_on_a_non_trainable_backend_is_refused():
    from types import SimpleNamespace

    from nncompress.errors import UnsupportedBackendError
    from nncompress.training.config.spec import AlgorithmSpec
    from nncompress.training.sparsity.builder import MagnitudeSparsityBuilder

    builder = MagnitudeSparsityBuilder(AlgorithmSpec("magnitude_sparsity", {"algorithm": "magnitude_sparsity"}))
    with pytest.raises(UnsupportedBackendError, match="PyTorch"):
        builder.edits(None, {}, SimpleNamespace(trainable=False, name="onnx"))
