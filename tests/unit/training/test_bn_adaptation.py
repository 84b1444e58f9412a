"""BatchNorm adaptation: only BatchNorm in train mode, no gradients, ceil(samples/batch) steps, flags restored."""

import pytest
import torch
from torch import nn

import nncompress
from nncompress.errors import ValidationError
from nncompress.training.bn_adaptation import adaptation_steps, run_bn_adaptation


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 1)
        self.bn = nn.BatchNorm2d(3, momentum=None)  # cumulative average: running stats = mean over batches
        self.drop = nn.Dropout(0.5)
        self.seen_training = []

    def forward(self, x):
        self.seen_training.append(self.drop.training)
        return self.drop(self.bn(self.conv(x)))


def test_steps_round_up():
    assert adaptation_steps(2000, 64) == 32
    assert adaptation_steps(10, 5) == 2
    assert adaptation_steps(1, 5) == 1


def test_runs_steps_with_only_batchnorm_training_and_restores_flags():
    torch.manual_seed(0)
    net = _Net().eval()
    net.conv.train()  # a mixed state must come back as it was
    batches = [torch.randn(4, 1, 5, 5) * 3 + 2 for _ in range(5)]
    done = run_bn_adaptation(net, (((b,), {}) for b in batches), steps=3)
    assert done == 3
    assert net.seen_training == [False, False, False]  # dropout stayed in eval mode
    assert not net.training and net.conv.training and not net.bn.training
    with torch.no_grad():
        outs = torch.cat([net.conv(b) for b in batches[:3]])
    expected = outs.transpose(0, 1).reshape(3, -1).mean(1)
    assert torch.allclose(net.bn.running_mean, expected, atol=1e-5)
    assert net.conv.weight.grad is None


def test_top_level_batch_norm_adaptation_returns_adapted_copy():
    torch.manual_seed(0)
    net = _Net().eval()
    data = [torch.randn(2, 1, 4, 4) + 5 for _ in range(4)]
    adapted = nncompress.batch_norm_adaptation(net, nncompress.Dataset(data), num_iterations=2)
    assert torch.equal(net.bn.running_mean, torch.zeros(3))  # the input model is not modified
    with torch.no_grad():
        outs = torch.cat([net.conv(b) for b in data[:2]])
    assert torch.allclose(adapted.bn.running_mean, outs.transpose(0, 1).reshape(3, -1).mean(1), atol=1e-5)
    with pytest.raises(ValidationError, match="num_iterations"):
        nncompress.batch_norm_adaptation(net, nncompress.Dataset(data), num_iterations=0)
