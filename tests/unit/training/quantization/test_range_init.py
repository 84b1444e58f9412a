"""Range init: ceil(num_init_samples / batch) batches (weights: one), eval + no_grad, flags restored."""

import math

import pytest
import torch

import nncompress as nncf
from nncompress.errors import CalibrationError
from tests.unit.training.models import SmallCNN


class _Recording:
    def __init__(self, inner):
        self.inner, self.calls, self.grad = inner, 0, []

    def update(self, x):
        self.calls += 1
        self.grad.append(torch.is_grad_enabled())
        self.inner.update(x)

    def result(self):
        return self.inner.result()


def _build(batches, range_section, monkeypatch=None, **extra):
    config = nncf.NNCFConfig.from_dict({
        "input_info": {"sample_size": [1, 1, 8, 8]},
        "compression": {"algorithm": "quantization", "initializer": {"range": range_section}, **extra},
    })
    config = nncf.torch.register_default_init_args(config, batches)
    torch.manual_seed(0)
    return nncf.create_compressed_model(SmallCNN().train(), config)


def _batches(n=5, size=10):
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(size, 1, 8, 8, generator=g) * (i + 1), torch.zeros(size, dtype=torch.long)) for i in range(n)]


def test_batch_counts_and_no_grad(monkeypatch):
    import nncompress.statistics.range_init as ri

    made = []
    real = ri.make_range_collector

    def recording(*args, **kwargs):
        made.append((kwargs["is_weights"], _Recording(real(*args, **kwargs))))
        return made[-1][1]

    monkeypatch.setattr(ri, "make_range_collector", recording)
    ctrl, model = _build(_batches(), {"type": "min_max", "num_init_samples": 25})
    acts = [c for w, c in made if not w]
    weights = [c for w, c in made if w]
    assert len(acts) == 3 and len(weights) == 3
    assert all(c.calls == math.ceil(25 / 10) for c in acts)
    assert all(c.calls == 1 for c in weights)
    assert not any(g for c in acts + weights for g in c.grad)
    assert model.training and model.bn1.training  # training flags restored


def test_min_max_ranges_are_those_of_the_batches_seen():
    data = _batches()
    ctrl, model = _build(data, {"type": "min_max", "num_init_samples": 25})
    quantizers = ctrl.quantizers()
    seen = torch.cat([x for x, _ in data[:3]])
    assert quantizers["x/fq_output_0"].scale.item() == pytest.approx(float(seen.max()), rel=1e-6)
    assert not quantizers["x/fq_output_0"].signed  # inputs >= 0: unsigned grid
    w = model.conv1.weight.detach().abs().amax(dim=(1, 2, 3)).clamp_min(0.1)  # per output channel, floored at 0.1
    torch.testing.assert_close(quantizers["conv1/conv2d/0/fq_weights_1"].scale.detach().reshape(-1), w, rtol=1e-6,
                               atol=0)
    assert all(q.initialized for q in quantizers.values())


def test_zero_samples_skip_data_init_and_missing_loader_warns(caplog):
    ctrl, _ = _build(_batches(), {"num_init_samples": 0})
    assert not any(q.initialized for q in ctrl.quantizers().values())
    config = nncf.NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]},
                                        "compression": {"algorithm": "quantization"}})
    ctrl, _ = nncf.create_compressed_model(SmallCNN(), config)
    assert not any(q.initialized for q in ctrl.quantizers().values())
    ctrl.initialize(_batches(2))  # explicit initialisation later
    assert all(q.initialized for q in ctrl.quantizers().values())


def test_empty_loader_is_an_error():
    config = nncf.NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]},
                                        "compression": {"algorithm": "quantization"}})
    ctrl, _ = nncf.create_compressed_model(SmallCNN(), config)
    with pytest.raises((CalibrationError, nncf.ValidationError)):
        ctrl.initialize([])
    assert all(q._collector is None for q in ctrl.quantizers().values())  # nothing left collecting


def test_bn_adaptation_runs_after_range_init_when_configured():
    data = _batches(4)
    model = SmallCNN().eval()
    config = nncf.NNCFConfig.from_dict({
        "input_info": {"sample_size": [1, 1, 8, 8]},
        "compression": {"algorithm": "quantization", "initializer": {
            "range": {"num_init_samples": 10}, "batchnorm_adaptation": {"num_bn_adaptation_samples": 20}}},
    })
    config = nncf.torch.register_default_init_args(config, data)
    _, compressed = nncf.create_compressed_model(model, config)
    assert int(compressed.bn1.num_batches_tracked) == 2  # ceil(20 / 10) steps
    assert int(model.bn1.num_batches_tracked) == 0 and not compressed.training
    config = nncf.NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]},
                                        "compression": {"algorithm": "quantization"}})  # no section: NNCF skips
    config = nncf.torch.register_default_init_args(config, data)
    _, compressed = nncf.create_compressed_model(model, config)
    assert int(compressed.bn1.num_batches_tracked) == 0
