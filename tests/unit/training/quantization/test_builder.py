"""QAT builder: trainable quantizers swapped in, unified groups share one module, compression_lr_multiplier."""

import torch
from torch import nn

import nncompress as nncf
from nncompress.backends.torch.hooks import storage_of
from tests.unit.training.models import SmallCNN


class _Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 1)
        self.b = nn.Conv2d(1, 2, 1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1))


def _config(**extra):
    return nncf.NNCFConfig.from_dict({
        "input_info": {"sample_size": [1, 1, 4, 4]},
        "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 4}}, **extra},
    })


def test_unified_concat_inputs_share_one_trainable_quantizer():
    data = [(torch.rand(2, 1, 4, 4), torch.zeros(2)) for _ in range(2)]
    config = nncf.torch.register_default_init_args(_config(), data)
    ctrl, model = nncf.create_compressed_model(_Concat(), config)
    unified = [c for c in ctrl.configs if c.unified is not None]
    assert len(unified) == 2
    first, second = (ctrl.modules[ctrl.configs.index(c)] for c in unified)
    assert first is second
    assert sum(1 for c in unified if c.name in ctrl.quantizers()) == 1  # listed once
    keys = [k for k in model.state_dict() if k.endswith(".scale") and "relu" in k]
    assert len(keys) == 2  # both hook names stay in the state dict (same tensor)
    storage = storage_of(model)
    assert storage.module(unified[0].name) is storage.module(unified[1].name)


def _grads(multiplier):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    extra = {} if multiplier is None else {"compression_lr_multiplier": multiplier}
    config = nncf.NNCFConfig.from_dict({
        "input_info": {"sample_size": [1, 1, 8, 8]},
        "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 8}}, **extra},
    })
    data = [(torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(3)), torch.zeros(8, dtype=torch.long))]
    config = nncf.torch.register_default_init_args(config, data)
    ctrl, compressed = nncf.create_compressed_model(model, config)
    compressed(data[0][0] * 1.5).square().sum().backward()
    quantizer_grads = {n: q.scale.grad.clone() for n, q in ctrl.quantizers().items()}
    return quantizer_grads, compressed.conv1.weight.grad.clone()


def test_compression_lr_multiplier_scales_only_quantizer_gradients():
    plain, w_plain = _grads(None)
    scaled, w_scaled = _grads(10.0)
    assert torch.equal(w_plain, w_scaled)
    nonzero = [n for n, g in plain.items() if g.abs().sum() > 0]
    assert nonzero
    for name in nonzero:
        assert torch.allclose(scaled[name], plain[name] * 10.0, rtol=1e-5)
