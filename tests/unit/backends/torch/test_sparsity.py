"""backends.torch.sparsity: BinaryMask and RBMask as modules and as hooks on a weight's chain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nncompress.backends.torch.adapter import TorchAdapter
from nncompress.backends.torch.export import strip
from nncompress.backends.torch.hooks import storage_of
from nncompress.backends.torch.sparsity import BinaryMask, RBMask, mask_hooks
from nncompress.errors import ValidationError
from nncompress.graph.edits import MaskWeight
from nncompress.numerics import sparsity as sp


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_binary_mask_keeps_dtype_and_zeroes_gradients(dtype):
    mask = np.array([[1, 0, 1], [0, 0, 1]], dtype=np.float32)
    weight = torch.arange(1.0, 7.0).reshape(2, 3).to(dtype).requires_grad_()
    out = BinaryMask(mask)(weight)
    assert out.dtype is dtype
    assert out.tolist() == [[1.0, 0.0, 3.0], [0.0, 0.0, 6.0]]
    out.sum().backward()
    assert weight.grad.tolist() == mask.tolist()  # masked weights get zero gradient


def test_binary_mask_defaults_to_ones_set_mask_and_state_dict():
    module = BinaryMask((2, 2))
    w = torch.ones(2, 2)
    assert torch.equal(module(w), w)
    module.set_mask([[0, 1], [1, 0]])
    assert module(w).tolist() == [[0.0, 1.0], [1.0, 0.0]]
    other = BinaryMask((2, 2))
    other.load_state_dict(module.state_dict())  # const sparsity: masks come back from a checkpoint
    assert torch.equal(other(w), module(w)) and "_binary_mask" in module.state_dict()
    with pytest.raises(ValidationError, match="does not fit"):
        module.set_mask(np.ones(5))


def test_rb_mask_stochastic_in_training_deterministic_in_eval_and_frozen():
    module = RBMask((200, 50))
    with torch.no_grad():
        module.mask.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
    w = torch.ones(200, 50)
    deterministic = (module.mask.detach() > 0).float()
    module.eval()
    assert torch.equal(module(w), deterministic) and torch.equal(module(w), deterministic)
    module.train()
    first, second = module(w), module(w)
    assert not torch.equal(first, second)  # a fresh u every forward
    # P(keep) = sigmoid(m): the sampled keep rate follows the logits' mean keep probability
    assert first.mean().item() == pytest.approx(torch.sigmoid(module.mask).mean().item(), abs=0.02)
    module.freeze()
    assert torch.equal(module(w), deterministic) and not module.mask.requires_grad


def test_rb_mask_init_keeps_everything_and_same_generator_same_masks():
    a, b = RBMask((64, 64)), RBMask((64, 64))
    assert a.mask[0, 0].item() == pytest.approx(sp.RB_INIT_LOGIT)
    a.generator, b.generator = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    with torch.no_grad():
        a.mask.fill_(0.0), b.mask.fill_(0.0)
    assert torch.equal(a(torch.ones(64, 64)), b(torch.ones(64, 64)))  # same RNG state: same mask (DDP ranks)


def test_rb_mask_gradients_reach_logits_and_spare_masked_weights():
    module = RBMask((3,)).eval()
    with torch.no_grad():
        module.mask.copy_(torch.tensor([2.0, -2.0, 1.0]))
    weight = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    module(weight).sum().backward()
    assert weight.grad.tolist() == [1.0, 0.0, 1.0]
    # STE: d/dm = w * sigmoid'(m)
    expected = torch.tensor([1.0, 2.0, 3.0]) * torch.sigmoid(module.mask) * (1 - torch.sigmoid(module.mask))
    torch.testing.assert_close(module.mask.grad, expected.detach())
    bf = module(torch.ones(3, dtype=torch.bfloat16))
    assert bf.dtype is torch.bfloat16


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_mask_weight_edit_becomes_a_binary_mask_hook_and_strips():
    model = Net().eval()
    x = torch.randn(1, 3, 8, 8)
    adapter = TorchAdapter(example_input=x)
    conv = next(n for n in adapter.build_graph(model) if n.weight is not None)
    mask = (torch.rand(4, 3, 3, 3, generator=torch.Generator().manual_seed(1)) > 0.5).numpy()
    hooked = adapter.apply(model, [MaskWeight(conv.name, conv.weight.port, mask, "conv.weight")])
    [(name, module)] = list(mask_hooks(hooked))
    assert isinstance(module, BinaryMask) and module.tensor_name == "conv.weight"
    by_hand = Net().eval()
    with torch.no_grad():
        by_hand.conv.weight.mul_(torch.from_numpy(mask))
        torch.testing.assert_close(hooked(x), by_hand(x))
    assert torch.equal(model.conv.weight, Net().conv.weight)  # the input model is untouched
    stripped = strip(hooked)
    assert storage_of(stripped) is None and torch.equal(stripped.conv.weight, by_hand.conv.weight)
    trainable = adapter.apply(model, [MaskWeight(conv.name, conv.weight.port, mask, "conv.weight", trainable=True)])
    [(_, rb)] = list(mask_hooks(trainable))
    assert isinstance(rb, RBMask) and torch.equal(rb.binary_mask, torch.from_numpy(mask))  # logits start at the mask
    torch.testing.assert_close(trainable(x), by_hand(x))
    with pytest.raises(ValidationError, match="does not fit"):
        adapter.apply(model, [MaskWeight(conv.name, conv.weight.port, np.ones(5), "bad")])


def test_shared_generator_same_seed_same_masks_reseed_restarts_copy_keeps_seed():
    import copy

    from nncompress.backends.torch.sparsity import SharedGenerator

    def masks(generator, count=3):
        layer = RBMask((64,))
        with torch.no_grad():
            layer.mask.zero_()
        layer.generator = generator
        return [layer.train().sample() for _ in range(count)]

    a, b = SharedGenerator(7), SharedGenerator(7)
    first = masks(a)
    assert all(torch.equal(x, y) for x, y in zip(first, masks(b)))
    assert not torch.equal(first[0], first[1])  # the sequence moves on
    a.reseed(7)
    assert torch.equal(masks(a, 1)[0], first[0])
    clone = copy.deepcopy(a)
    assert clone.seed == 7 and torch.equal(masks(clone, 1)[0], first[0])
    assert not torch.equal(masks(SharedGenerator(8), 1)[0], first[0])
