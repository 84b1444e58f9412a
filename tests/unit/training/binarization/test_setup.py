"""Which convolutions binarization selects: 2-D convs, first/last layers kept FP, scopes; the spec."""

import pytest
import torch
from torch import nn

from nncompress.backends.registry import get_adapter
from nncompress.errors import UnsupportedBackendError, ValidationError
from nncompress.training.binarization.setup import binarization_spec, select_layers
from nncompress.training.quantization.scopes import node_names


class FourConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8))
        self.conv1d = nn.Conv1d(8, 8, 1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.body(torch.relu(self.stem(x)))
        n, c, h, w = x.shape
        x = self.conv1d(x.reshape(n, c, h * w)).reshape(n, c, h, w)
        return self.head(x).mean((2, 3))


def _select(section):
    model = FourConvs()
    adapter = get_adapter(model, example_input=(torch.ones(1, 3, 6, 6),))
    graph = adapter.build_graph(model)
    return graph, select_layers(graph, node_names(graph, model), binarization_spec({"algorithm": "binarization",
                                                                                     **section}))


def test_inner_2d_convolutions_are_binarized_first_and_last_layers_stay_fp():
    graph, layers = _select({})
    assert [layer.node for layer in layers] == ["body/0/conv2d/0", "body/2/conv2d/0"]  # not stem, head, conv1d
    first = layers[0]
    assert first.tensor == ["relu/0", 0] and (first.in_channels, first.out_channels) == (8, 8)
    assert first.macs == 8 * 36 * 8 * 9  # out channels x 6x6 x fan-in 8*3*3
    assert layers[1].in_channels == 8 and layers[1].macs == 8 * 36 * 9  # depthwise: fan-in 1*3*3
    assert first.weight_hook == "body/0/conv2d/0|weights_binarizer"


def test_target_scopes_can_binarize_the_first_layer_and_ignored_scopes_skip():
    _, layers = _select({"target_scopes": ["FourConvs/Conv2d[stem]", "{re}body"]})
    assert [layer.node for layer in layers] == ["stem/conv2d/0", "body/0/conv2d/0", "body/2/conv2d/0"]
    _, layers = _select({"ignored_scopes": ["body.2"]})
    assert [layer.node for layer in layers] == ["body/0/conv2d/0"]
    with pytest.raises(ValidationError, match="nothing_here"):
        _select({"ignored_scopes": ["nothing_here"]})


def test_spec_defaults_and_refusals():
    spec = binarization_spec({"algorithm": "binarization"})
    assert spec.mode == "xnor" and spec.num_init_samples == 256 and spec.num_bn_adaptation_samples is None
    assert spec.staged.activations_quant_start_epoch == 1 and spec.staged.weights_quant_start_epoch == 1
    spec = binarization_spec({"algorithm": "binarization", "mode": "dorefa",
                              "initializer": {"range": {"num_init_samples": 32},
                                              "batchnorm_adaptation": {"num_bn_adaptation_samples": 64}},
                              "params": {"activations_quant_start_epoch": 2, "base_lr": 0.01}})
    assert (spec.mode, spec.num_init_samples, spec.num_bn_adaptation_samples) == ("dorefa", 32, 64)
    assert spec.staged.activations_quant_start_epoch == 2 and spec.staged.base_lr == 0.01
    with pytest.raises(UnsupportedBackendError, match="precision"):
        binarization_spec({"algorithm": "binarization", "initializer": {"precision": {"type": "hawq"}}})
