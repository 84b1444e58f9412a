"""Quantized and weight-compressed PyTorch models convert with the standard tools, as NNCF's examples do:
``ov.convert_model(q, example_input=x)`` (TorchScript tracing), ``torch.export.export`` and
``torch.onnx.export(dynamo=True)``, with the outputs of the PyTorch model."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import nncompress as nncf  # noqa: E402
from nncompress.backends.torch.fake_quantize import FakeQuantizer  # noqa: E402

# f32 and no dynamic activation quantization: OpenVINO's CPU defaults (bf16, int8 activations for
# compressed-weight layers) would change the numbers being compared
OV_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv1(x)))
        x = self.layer1(x) + x
        return self.fc(x.mean((2, 3)))


class TinyLM(nn.Module):
    """One pre-norm transformer block with causal attention and an LM head: the shapes of an LLM."""

    def __init__(self, vocab: int = 64, dim: int = 32):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(dim, dim) for _ in range(4))
        self.up_proj, self.down_proj = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, input_ids):
        h = self.embed_tokens(input_ids)
        x = self.norm(h)
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        mask = torch.triu(torch.ones(scores.shape[-2:], dtype=torch.bool), 1)
        h = h + self.o_proj(torch.softmax(scores.masked_fill(mask, float("-inf")), -1) @ v)
        h = h + self.down_proj(nn.functional.gelu(self.up_proj(self.norm(h))))
        return self.lm_head(h)


def _quantized_cnn():
    torch.manual_seed(0)
    model = CNN().eval()
    data = [torch.randn(1, 3, 16, 16) for _ in range(4)]
    return model, nncf.quantize(model, nncf.Dataset(data), subset_size=4), data[0]


def _quantized_lm():
    torch.manual_seed(0)
    model = TinyLM().eval()
    data = [torch.randint(0, 64, (1, 12)) for _ in range(4)]
    quantized = nncf.quantize(model, nncf.Dataset(data), subset_size=4, model_type=nncf.ModelType.TRANSFORMER)
    return model, quantized, data[0]


def _compressed(mode):
    torch.manual_seed(0)
    model = TinyLM().eval()
    four_bit = mode in (nncf.CompressWeightsMode.INT4_SYM, nncf.CompressWeightsMode.INT4_ASYM)
    options = {"group_size": 16, "ratio": 1.0, "all_layers": True} if four_bit else {}
    return model, nncf.compress_weights(model, mode=mode, **options), torch.randint(0, 64, (1, 12))


MODELS = {"cnn": _quantized_cnn, "lm": _quantized_lm}
WEIGHT_MODES = [nncf.CompressWeightsMode.INT8_ASYM, nncf.CompressWeightsMode.INT4_SYM,
                nncf.CompressWeightsMode.INT4_ASYM]


def _count_quantizers(model, on_constants: bool | None = None) -> int:
    """Fake quantizers of ``model`` (weight ones only, activation ones only, or all of them)."""
    return sum(isinstance(m, FakeQuantizer) and on_constants in (None, m.on_constant) for m in model.modules())


def _check_close_to_quantized(float_model, quantized, x, out):
    """``out`` equals the quantized model's output up to tie-rounding steps of the standard fake-quantize
    op, and is much nearer to it than the float model is (the quantizers are really there)."""
    ref = quantized(x).detach().numpy()
    quantization_error = np.abs(float_model(x).detach().numpy() - ref).max()
    assert quantization_error > 0
    assert np.abs(out - ref).max() <= 0.1 * quantization_error


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_ov_convert_model_traces_a_quantized_model_into_fake_quantize_ops(name):
    ov = pytest.importorskip("openvino")
    model, quantized, x = MODELS[name]()
    before = quantized(x).detach().clone()
    ov_model = ov.convert_model(quantized, example_input=x)
    # activation quantizers stay FakeQuantize (OpenVINO merges identical ones on one tensor); it stores
    # fake-quantized weights as int8 constants
    fake_quantizes = [op for op in ov_model.get_ops() if op.get_type_name() == "FakeQuantize"]
    assert 0 < len(fake_quantizes) <= _count_quantizers(quantized, on_constants=False)
    int8 = [op for op in ov_model.get_ops() if op.get_type_name() == "Constant" and op.get_element_type().is_integral()
            and op.get_element_type().bitwidth == 8]
    assert len(int8) >= _count_quantizers(quantized, on_constants=True) > 0
    out = ov.compile_model(ov_model, "CPU", OV_CONFIG)(x.numpy())[0]
    _check_close_to_quantized(model, quantized, x, out)
    assert torch.equal(quantized(x), before)  # tracing left no state behind


@pytest.mark.parametrize("name", MODELS)
def test_torch_export_of_a_quantized_model_runs_with_its_outputs(name):
    model, quantized, x = MODELS[name]()
    program = torch.export.export(quantized, (x,))
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert sum("fake_quantize_per_" in t for t in targets) == _count_quantizers(quantized)
    _check_close_to_quantized(model, quantized, x, program.module()(x).detach().numpy())


@pytest.mark.parametrize("mode", WEIGHT_MODES, ids=lambda m: m.value)
def test_torch_export_of_compressed_weights_gives_the_same_outputs(mode):
    model, compressed, ids = _compressed(mode)
    ref = compressed(ids).detach()
    assert not torch.equal(ref, model(ids))  # the weights really are compressed
    program = torch.export.export(compressed, (ids,))
    torch.testing.assert_close(program.module()(ids), ref, rtol=0, atol=1e-6)
    assert torch.equal(compressed(ids), ref)


@pytest.mark.slow
@pytest.mark.parametrize("mode", WEIGHT_MODES, ids=lambda m: m.value)
def test_ov_convert_model_of_compressed_weights_gives_the_same_outputs(mode):
    ov = pytest.importorskip("openvino")
    model, compressed, ids = _compressed(mode)
    ref = compressed(ids).detach()
    ov_model = ov.convert_model(compressed, example_input=ids)
    out = ov.compile_model(ov_model, "CPU", OV_CONFIG)(ids.numpy())[0]
    np.testing.assert_allclose(out, ref.numpy(), rtol=0, atol=1e-5)
    assert torch.equal(compressed(ids), ref)  # tracing left no state behind


@pytest.mark.parametrize("name", MODELS)
def test_torch_onnx_export_dynamo_of_a_quantized_model(name, tmp_path):
    pytest.importorskip("onnxscript")  # the dynamo exporter's dependency
    ort = pytest.importorskip("onnxruntime")
    model, quantized, x = MODELS[name]()
    path = tmp_path / "model.onnx"
    torch.onnx.export(quantized, (x,), str(path), dynamo=True)
    session = ort.InferenceSession(str(path))
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    _check_close_to_quantized(model, quantized, x, out)


def _exported(name):
    """(float module, its torch.export GraphModule, calibration items) as in NNCF's torch_fx examples."""
    torch.manual_seed(0)
    if name == "cnn":
        model, data = CNN().eval(), [torch.randn(1, 3, 16, 16) for _ in range(3)]
    else:
        model, data = TinyLM().eval(), [torch.randint(0, 64, (1, 12)) for _ in range(3)]
    return model, torch.export.export(model, (data[0],)).module(), data


@pytest.mark.parametrize("name", MODELS)
def test_quantize_accepts_a_torch_export_graph_module_like_the_module_it_came_from(name):
    model, graph_module, data = _exported(name)
    x = data[0]
    before = graph_module(x).detach().clone()
    model_type = nncf.ModelType.TRANSFORMER if name == "lm" else None
    from_module = nncf.quantize(model, nncf.Dataset(data), subset_size=3, model_type=model_type)
    quantized = nncf.quantize(graph_module, nncf.Dataset(data), subset_size=3, model_type=model_type)
    assert isinstance(quantized, torch.fx.GraphModule) and quantized is not graph_module
    assert _count_quantizers(quantized) == _count_quantizers(from_module) > 0
    torch.testing.assert_close(quantized(x), from_module(x), rtol=0, atol=0)
    assert not torch.equal(quantized(x), before)
    assert torch.equal(graph_module(x), before) and _count_quantizers(graph_module) == 0  # the input is untouched
    # a GraphModule's deepcopy rebuilds it from its graph: the quantizers must come along (strip copies too)
    assert torch.equal(copy.deepcopy(quantized)(x), quantized(x))
    torch.testing.assert_close(nncf.strip(quantized)(x), quantized(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", WEIGHT_MODES[:2], ids=lambda m: m.value)
def test_compress_weights_accepts_a_torch_export_graph_module_without_data(mode):
    model, graph_module, data = _exported("lm")
    options = {"group_size": 16, "ratio": 1.0} if mode is nncf.CompressWeightsMode.INT4_SYM else {}
    from_module = nncf.compress_weights(model, mode=mode, **options)
    compressed = nncf.compress_weights(graph_module, mode=mode, **options)
    assert isinstance(compressed, torch.fx.GraphModule)
    torch.testing.assert_close(compressed(data[1]), from_module(data[1]), rtol=0, atol=0)
    assert not torch.equal(compressed(data[1]), graph_module(data[1]))


@pytest.mark.slow
def test_ov_convert_model_of_a_quantized_graph_module():
    ov = pytest.importorskip("openvino")
    model, graph_module, data = _exported("cnn")
    quantized = nncf.quantize(graph_module, nncf.Dataset(data), subset_size=3)
    out = ov.compile_model(ov.convert_model(quantized, example_input=data[0]), "CPU", OV_CONFIG)(data[0].numpy())[0]
    _check_close_to_quantized(graph_module, quantized, data[0], out)
