"""PyTorch weight compression: module-tree graph, packed storage decompressed in forward, exactness,
memory, state_dict, generate, tied weights, low-rank corrections, and the data-free API."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import nncompress  # noqa: E402
from nncompress.backends.torch.adapter import TorchAdapter  # noqa: E402
from nncompress.backends.torch.capture import capture_graph  # noqa: E402
from nncompress.backends.torch.hooks import storage_of  # noqa: E402
from nncompress.backends.torch.module_graph import module_capture  # noqa: E402
from nncompress.backends.torch.weight_storage import CompressedStorage  # noqa: E402
from nncompress.graph.edits import AddLowRankCorrection, CompressWeight  # noqa: E402
from nncompress.graph.ops import OpKind  # noqa: E402
from nncompress.numerics.encoding import encode  # noqa: E402
from nncompress.numerics.lowbit import mode_bits  # noqa: E402
from nncompress.parameters import CompressWeightsMode as M  # noqa: E402

transformers.logging.set_verbosity_error()
MODES = [M.INT8_ASYM, M.INT8_SYM, M.INT4_SYM, M.INT4_ASYM, M.NF4, M.MXFP4, M.FP4, M.NVFP4, M.FP8_E4M3,
         M.MXFP8_E4M3, M.CB4_F8E4M3]
CONV_KINDS = (OpKind.CONV, OpKind.DEPTHWISE_CONV, OpKind.CONV_TRANSPOSE)


class MixedNet(nn.Module):
    """Embedding -> Linear -> ReLU -> Linear (no bias), plus a Conv2d/depthwise/Conv1d branch."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 32)
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 16, bias=False)
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.depthwise = nn.Conv2d(16, 16, 3, groups=16)
        self.conv1d = nn.Conv1d(16, 8, 5)
        self.head = nn.Linear(8 * 32, 10)

    def forward(self, ids, image):
        text = self.fc2(torch.relu(self.fc1(self.embed(ids))))
        x = self.depthwise(torch.relu(self.conv(image)))
        x = self.conv1d(x.flatten(2)).flatten(1)
        return text, self.head(x)


def mixed_inputs(seed: int = 1) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 50, (2, 5), generator=gen), torch.randn(2, 3, 8, 8, generator=gen)


def tiny_gpt2(seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=2, vocab_size=96, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config).eval()


def tiny_llama(seed: int = 0, tied: bool = False):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=96, tie_word_embeddings=tied, bos_token_id=0, eos_token_id=1, pad_token_id=0,
    )
    return transformers.LlamaForCausalLM(config).eval()


def token_ids(seed: int = 2):
    return torch.randint(0, 96, (2, 7), generator=torch.Generator().manual_seed(seed))


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def model_bytes(model: nn.Module) -> int:
    return nbytes(list(model.parameters()) + list(model.buffers()))


def group_size(mode, node) -> int:
    if mode in (M.INT8_ASYM, M.INT8_SYM, M.CB4_F8E4M3) or node.kind in CONV_KINDS:
        return -1
    return {M.MXFP4: 32, M.MXFP8_E4M3: 32}.get(mode, 16)


def compress_all(model, mode, example=None):
    """(compressed model, edits): every weighted node encoded in ``mode`` through the adapter."""
    adapter = TorchAdapter(example_input=example)
    edits = []
    for node in adapter.build_graph(model):
        if node.weight is None:
            continue
        weight = adapter.get_constant(model, node.name, node.weight.port)
        compressed = encode(weight, mode, node.weight.in_axis, group_size(mode, node), node.weight.out_axis)
        edits.append(CompressWeight(node.name, node.weight.port, compressed, f"{node.name}/w"))
    return adapter.apply(model, edits), edits


def scope_of(model, node: str) -> nn.Module:
    scope = ".".join(node.split("/")[:-2])  # "<module path>/<op>/<index>"
    return model.get_submodule(scope) if scope else model


def reference_model(model, edits):
    """A float copy whose weights are the decompressed values."""
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for edit in edits:
            scope_of(reference, edit.node).weight.copy_(torch.from_numpy(edit.weight.decompress()))
    return reference


def snapshot(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_outputs(a, b, inputs) -> None:
    with torch.no_grad():
        out_a, out_b = a(*inputs), b(*inputs)
    flat_a = out_a if isinstance(out_a, tuple) else (out_a.logits,) if hasattr(out_a, "logits") else (out_a,)
    flat_b = out_b if isinstance(out_b, tuple) else (out_b.logits,) if hasattr(out_b, "logits") else (out_b,)
    for x, y in zip(flat_a, flat_b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


# --------------------------------------------------------------------------- graph


@pytest.mark.parametrize("name", ["mixed", "gpt2", "llama"])
def test_module_graph_matches_the_capture(name):
    model, example = {
        "mixed": (MixedNet(), mixed_inputs()),
        "gpt2": (tiny_gpt2(), {"input_ids": token_ids()}),
        "llama": (tiny_llama(tied=True), {"input_ids": token_ids()}),
    }[name]
    modules, captured = module_capture(model), capture_graph(model, example)

    def weighted(capture):
        return {
            n.name: (n.kind, n.weight, n.bias and n.bias.port, capture.port_params[n.name, n.weight.port])
            for n in capture.graph
            if n.weight is not None
        }

    from_modules, from_capture = weighted(modules), weighted(captured)
    # the capture folds an embedding read with constant indices (GPT-2 positions); the module tree has it
    assert {k: from_modules[k] for k in from_capture} == from_capture
    assert set(from_modules) - set(from_capture) <= {"transformer/wpe/embedding/0"}
    names = [n.name for n in modules.graph]
    if name != "mixed":
        assert names[-1] == "lm_head/linear/0"  # registration order puts the head last
        head, embedding = modules.port_params[(names[-1], 1)], modules.port_params[(names[0], 1)]
        assert head == embedding and modules.param_uses[head] == 2  # the tied weight is one parameter


def test_build_graph_needs_no_example_but_statistics_do():
    model = tiny_gpt2()
    adapter = TorchAdapter()
    graph = adapter.build_graph(model)
    assert {n.kind for n in graph} == {OpKind.LINEAR, OpKind.EMBEDDING}
    node = graph.node("transformer/h/0/attn/c_attn/addmm/0")
    assert node.weight.port == 2 and node.weight.out_axis == 1 and node.weight.in_axis == 0
    np.testing.assert_array_equal(
        adapter.get_constant(model, node.name, 2), model.transformer.h[0].attn.c_attn.weight.detach().numpy()
    )
    with pytest.raises(nncompress.errors.GraphCaptureError, match="example input"):
        adapter.capture(model)


# --------------------------------------------------------------------------- storage


@pytest.mark.parametrize("mode", MODES)
def test_mixed_net_storage_is_exact(mode):
    model = MixedNet().eval()
    before = snapshot(model)
    compressed, edits = compress_all(model, mode)
    for key, value in model.state_dict().items():  # the user's model is untouched
        assert torch.equal(value, before[key])
    assert isinstance(compressed, MixedNet) and storage_of(compressed) is None
    for edit in edits:
        module = scope_of(compressed, edit.node)
        assert "weight" not in module._parameters
        assert module.weight.device.type == "meta" and tuple(module.weight.shape) == edit.weight.shape
        assert torch.equal(module.weight_compressed(), torch.from_numpy(edit.weight.decompress()))
    assert_same_outputs(compressed, reference_model(model, edits), mixed_inputs())


@pytest.mark.parametrize("mode", MODES)
def test_gpt2_storage_exact_tied_and_generates(mode):
    model = tiny_gpt2()
    compressed, edits = compress_all(model, mode)
    reference = reference_model(model, edits)
    assert_same_outputs(compressed, reference, (token_ids(),))
    wte, head = compressed.transformer.wte, compressed.lm_head
    assert head.weight_compressed is wte.weight_compressed  # tied weights compressed once
    ids = token_ids()[:1]
    generated = compressed.generate(ids, max_new_tokens=4, do_sample=False)
    assert torch.equal(generated, reference.generate(ids, max_new_tokens=4, do_sample=False))


def _linear_weight_ratio(model, compressed) -> float:
    floats, stored = 0, 0
    for name, module in compressed.named_modules():
        storage = module._modules.get("weight_compressed")
        if isinstance(storage, CompressedStorage) and not isinstance(module, nn.Embedding) and len(storage.shape) == 2:
            floats += nbytes([model.get_submodule(name).weight])
            stored += nbytes(storage.buffers())
    return stored / floats


@pytest.mark.parametrize("mode", [M.INT8_ASYM, M.INT4_SYM, M.INT4_ASYM, M.NF4])
def test_llama_memory_shrinks_and_outputs_match(mode):
    model = tiny_llama()
    compressed, edits = compress_all(model, mode)
    assert_same_outputs(compressed, reference_model(model, edits), (token_ids(),))
    ratio = _linear_weight_ratio(model, compressed)
    assert ratio < (0.35 if mode_bits(mode) == 4 else 0.3), ratio
    assert model_bytes(compressed) < model_bytes(model) * (0.35 if mode_bits(mode) == 4 else 0.3)
    ids = token_ids()[:1]
    assert compressed.generate(ids, max_new_tokens=3, do_sample=False).shape == (1, ids.shape[1] + 3)


@pytest.mark.parametrize("mode", [M.INT8_SYM, M.INT4_ASYM, M.NF4])
def test_state_dict_round_trip_into_another_compressed_copy(mode):
    first, _ = compress_all(tiny_gpt2(seed=0), mode)
    second, _ = compress_all(tiny_gpt2(seed=1), mode)
    state = first.state_dict()
    assert any(key.endswith("weight_compressed.data") for key in state)
    assert not any(v.device.type == "meta" for v in state.values())
    second.load_state_dict(state)
    assert_same_outputs(first, second, (token_ids(),))


def test_deepcopy_pickle_and_dtype():
    compressed, edits = compress_all(tiny_llama(tied=True), M.INT4_SYM)
    buffer = io.BytesIO()
    torch.save(compressed, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for other in (loaded, copy.deepcopy(compressed)):
        assert_same_outputs(compressed, other, (token_ids(),))
    half, edits = compress_all(MixedNet().to(torch.bfloat16).eval(), M.NF4)
    for edit in edits:
        value = scope_of(half, edit.node).weight_compressed()
        assert value.dtype == torch.bfloat16
        assert torch.equal(value, torch.from_numpy(edit.weight.decompress()).to(torch.bfloat16))


def test_low_rank_correction_float_and_compressed_factors():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 16)).eval()
    adapter = TorchAdapter()
    x = torch.randn(4, 32)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 32)).astype(np.float32) / 4, rng.standard_normal((48, 4)).astype(np.float32) / 4
    weight = adapter.get_constant(model, "0/linear/0", 1)
    compressed = encode(weight, M.INT4_SYM, 1, 16, 0)
    for fa, fb in ((a, b), (encode(a, M.INT8_ASYM, 1, -1, 0), encode(b, M.INT8_ASYM, 1, -1, 0))):
        lora = AddLowRankCorrection("0/linear/0", 0, fa, fb, "lora")
        edits = [CompressWeight("0/linear/0", 1, compressed, "w0"), lora]
        result = adapter.apply(model, edits)
        da, db = (torch.from_numpy(f.decompress() if hasattr(f, "decompress") else f) for f in (fa, fb))
        hidden = F.linear(x, torch.from_numpy(compressed.decompress()), model[0].bias) + (x @ da.T) @ db.T
        expected = model[2](torch.relu(hidden))
        with torch.no_grad():
            torch.testing.assert_close(result(x), expected, rtol=1e-6, atol=1e-6)


class SharedReader(nn.Module):
    """The root's forward reads a child's parameter (no module pre-hook can decompress it)."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(16, 8)

    def forward(self, x):
        return F.linear(x, self.inner.weight, self.inner.bias) * 2


def test_weight_read_outside_its_module_uses_a_hook():
    model = SharedReader().eval()
    x = torch.randn(3, 16)
    compressed, edits = compress_all(model, M.INT4_ASYM, example=(x,))
    assert [e.node for e in edits] == ["linear/0"]
    assert storage_of(compressed) is not None  # decompressed by a hook in the hooked forward
    assert "inner.weight" not in dict(compressed.named_parameters())  # the float weight is freed
    assert_same_outputs(compressed, reference_model_shared(model, edits), (x,))


def reference_model_shared(model, edits):
    reference = copy.deepcopy(model)
    with torch.no_grad():
        reference.inner.weight.copy_(torch.from_numpy(edits[0].weight.decompress()))
    return reference


# --------------------------------------------------------------------------- API


@pytest.mark.parametrize("mode", [M.INT8_ASYM, M.INT4_SYM, M.NF4])
def test_data_free_api_needs_no_dataset(mode):
    model = tiny_gpt2()
    kwargs = {} if mode_bits(mode) == 8 else {"group_size": 16}
    compressed = nncompress.compress_weights(model, mode=mode, **kwargs)
    assert isinstance(compressed, type(model)) and storage_of(compressed) is None
    assert compressed.lm_head.weight_compressed is compressed.transformer.wte.weight_compressed
    assert model_bytes(compressed) < model_bytes(model) * 0.35
    ids = token_ids()[:1]
    assert compressed.generate(ids, max_new_tokens=3, do_sample=False).shape == (1, ids.shape[1] + 3)


def test_data_aware_api_on_llama():
    model = tiny_llama()
    items = [{"input_ids": token_ids(seed)} for seed in range(4)]
    compressed = nncompress.compress_weights(
        model, mode=M.INT4_SYM, group_size=16, dataset=nncompress.Dataset(items), awq=True, scale_estimation=True,
    )
    assert isinstance(compressed, type(model))
    with torch.no_grad():
        float_logits, logits = model(token_ids()).logits, compressed(token_ids()).logits
    assert torch.nn.functional.cosine_similarity(float_logits.flatten(), logits.flatten(), dim=0) > 0.9
    assert compressed.generate(token_ids()[:1], max_new_tokens=2, do_sample=False).shape[1] == 9


def test_data_aware_reaches_gpt2_conv1d_layers():
    """GPT-2's Conv1D computes addmm(bias, x, W): the activation is port 1, the weight port 2."""
    model = tiny_gpt2()
    items = [{"input_ids": token_ids(seed)} for seed in range(4)]
    kwargs = {"mode": M.INT4_SYM, "group_size": 16, "ratio": 1.0}
    plain = nncompress.compress_weights(model, **kwargs)
    estimated = nncompress.compress_weights(model, dataset=nncompress.Dataset(items), scale_estimation=True, **kwargs)
    for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        a = plain.transformer.h[0].get_submodule(name).weight_compressed()
        b = estimated.transformer.h[0].get_submodule(name).weight_compressed()
        assert not torch.equal(a, b), f"{name}: scale estimation did not change the weight"


def test_awq_without_dataset_on_pytorch_asks_for_one():
    """Without a dataset the module graph has no edges: AWQ cannot find patterns and says so."""
    model = tiny_llama()
    with pytest.raises(nncompress.errors.ValidationError, match="dataset="):
        nncompress.compress_weights(model, mode=M.INT4_SYM, group_size=16, awq=True)
    items = [{"input_ids": token_ids(seed)} for seed in range(2)]
    nncompress.compress_weights(model, mode=M.INT4_SYM, group_size=16, awq=True, dataset=nncompress.Dataset(items))
    assert any(n.startswith("AWQ applied") for n in nncompress.last_report().notes)


def test_data_free_awq_on_pytorch_uses_the_dataset_item_as_example_input():
    """Data-free AWQ scales (no statistics): the first dataset item only traces the graph, as ONNX needs none."""
    model = tiny_llama()
    items = [{"input_ids": token_ids(seed)} for seed in range(2)]
    free = nncompress.AdvancedCompressionParameters(
        awq_params=nncompress.AdvancedAWQParameters(prefer_data_aware_scaling=False)
    )
    kwargs = {"mode": M.INT4_SYM, "group_size": 16, "dataset": nncompress.Dataset(items)}
    scaled = nncompress.compress_weights(model, awq=True, advanced_parameters=free, **kwargs)
    report = nncompress.last_report()
    assert any(n.startswith("AWQ applied") for n in report.notes)
    assert report.calibration_items == 0  # no statistics pass: data-free scales
    plain = nncompress.compress_weights(model, **kwargs)
    ids = token_ids(7)
    with torch.no_grad():
        assert not torch.equal(scaled(input_ids=ids).logits, plain(input_ids=ids).logits)


def test_statistics_cache_on_pytorch(tmp_path):
    items = [{"input_ids": token_ids(seed)} for seed in range(3)]
    advanced = nncompress.AdvancedCompressionParameters(statistics_path=tmp_path)
    kwargs = {"mode": M.INT4_SYM, "group_size": 16, "scale_estimation": True, "advanced_parameters": advanced}
    first = nncompress.compress_weights(tiny_llama(), dataset=nncompress.Dataset(items), **kwargs)
    second = nncompress.compress_weights(tiny_llama(), dataset=nncompress.Dataset(items), **kwargs)
    assert any(n.startswith("statistics loaded from") for n in nncompress.last_report().notes)
    with torch.no_grad():
        torch.testing.assert_close(first(token_ids()).logits, second(token_ids()).logits, rtol=0, atol=0)
