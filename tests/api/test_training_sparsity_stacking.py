"""Sparsity stacked with INT8 QAT in one config: one apply, one composite controller, the mask before the
weight quantizer whatever the list order, export to ONNX / OpenVINO with the zeros kept."""

import numpy as np
import pytest
import torch
from torch import nn

import nncompress as nncf
from nncompress.backends.torch.hooks import storage_of
from nncompress.graph.edits import Stage
from nncompress.training import CompositeCompressionAlgorithmController, CompressionStage
from tests.unit.training.models import SmallCNN, loader, trained_cnn

QUANT = {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 64}}}
SPARSITY = {
    "magnitude_sparsity": {"algorithm": "magnitude_sparsity", "sparsity_init": 0.5,
                           "params": {"sparsity_target": 0.5, "sparsity_target_epoch": 1}},
    "rb_sparsity": {"algorithm": "rb_sparsity", "params": {"sparsity_target": 0.5, "sparsity_target_epoch": 1}},
    "const_sparsity": {"algorithm": "const_sparsity"},
}


def _stacked(sections, model=None):
    config = nncf.NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": sections})
    config = nncf.torch.register_default_init_args(config, loader(batch_size=32, limit=64))
    return nncf.create_compressed_model(model if model is not None else trained_cnn(), config)


def _sparsity_child(ctrl):
    return next(c for c in ctrl.children if c.name.endswith("sparsity"))


@pytest.mark.parametrize("quant_first", [False, True])
def test_the_weight_quantizer_reads_the_masked_weight_whatever_the_list_order(quant_first):
    sections = [SPARSITY["magnitude_sparsity"], QUANT]
    torch.manual_seed(0)
    ctrl, model = _stacked(sections[::-1] if quant_first else sections, SmallCNN())
    assert isinstance(ctrl, CompositeCompressionAlgorithmController)
    sparsity = _sparsity_child(ctrl)
    storage = storage_of(model)
    chain = storage.chain("pre", "conv2/conv2d/0", 1)
    assert [storage.stages[h] for h in chain] == [Stage.SPARSITY_MASK, Stage.WEIGHT_QUANTIZER]
    quantizer = storage.module(chain[1])
    seen = []
    handle = quantizer.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    model.eval()(torch.rand(2, 1, 8, 8))
    handle.remove()
    mask = sparsity.masks["conv2.weight"].binary_mask
    assert mask.float().mean() < 0.9  # the mask removes weights of this layer
    assert torch.equal(seen[0], model.conv2.weight.detach() * mask)


def _finetune(ctrl, model, steps=6):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    ctrl.scheduler.epoch_step()
    for step, (x, y) in enumerate(loader(batch_size=32, shuffle=True)):
        if step == steps:
            break
        ctrl.scheduler.step()
        loss = nn.functional.cross_entropy(model(x), y) + ctrl.loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    ctrl.scheduler.epoch_step()
    return model.eval()


def _onnx_weight(path, shape):
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    tensors = list(graph.initializer) + [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute
                                         if a.name == "value"]
    found = [numpy_helper.to_array(t) for t in tensors if tuple(t.dims) == shape]
    assert len(found) == 1, [t.shape for t in found]
    return found[0]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["magnitude_sparsity", "rb_sparsity", "const_sparsity"])
def test_stacked_with_int8_trains_and_exports_zeros_and_matching_outputs(algorithm, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    ov = pytest.importorskip("openvino")
    base = trained_cnn()
    if algorithm == "const_sparsity":
        with torch.no_grad():
            base.conv2.weight[base.conv2.weight.abs() < base.conv2.weight.abs().median()] = 0.0
    ctrl, model = _stacked([SPARSITY[algorithm], QUANT], base)
    sparsity = _sparsity_child(ctrl)
    if algorithm == "rb_sparsity":
        with torch.no_grad():  # as if RB training had reached 50% on conv2
            logits = sparsity.masks["conv2.weight"].mask
            logits[base.conv2.weight.abs() < base.conv2.weight.abs().median()] = -3.0
    model = _finetune(ctrl, model)
    assert ctrl.compression_stage() is CompressionStage.FULLY_COMPRESSED
    mask = sparsity.masks["conv2.weight"].binary_mask
    assert 0.45 <= 1 - mask.float().mean() <= 0.55

    x, _ = next(iter(loader("test", batch_size=128)))
    with torch.no_grad():
        want = model(x).numpy()
    onnx_path = ctrl.export_model(tmp_path / "m.onnx")
    int8 = _onnx_weight(onnx_path, (32, 16, 3, 3))
    assert int8.dtype == np.int8 and np.all(int8[~mask.numpy()] == 0)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for got in (session.run(None, {session.get_inputs()[0].name: x.numpy()})[0],
                ov.Core().compile_model(str(ctrl.export_model(tmp_path / "m.xml", save_format="openvino")),
                                        "CPU")(x.numpy())[0]):
        assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.99
        np.testing.assert_allclose(got, want, atol=0.05 * np.abs(want).max())
    stripped = ctrl.strip()
    assert torch.equal(stripped.conv2.weight == 0, ~mask) or bool((stripped.conv2.weight[~mask] == 0).all())
