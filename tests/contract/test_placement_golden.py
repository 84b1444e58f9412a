"""Golden placement (the MinMax placement template): the same network gets the same quantizers in OpenVINO,
ONNX and PyTorch (PyTorch and ONNX keep Q/DQ on both inputs of a residual Add, as ONNX Runtime needs)."""

from __future__ import annotations

import re

import pytest

from nncompress.algorithms.quantization.placement import PlacementOptions, find_quantization_setup
from nncompress.backends import registry
from nncompress.hardware.rules import CPU_RULES
from tests.contract.backends import as_backend
from tests.contract.models import build

# OpenVINO's ONNX import fuses q·kᵀ → Softmax → ·v into one ScaledDotProductAttention named after the
# last MatMul; its Q and K inputs are the inputs of the ONNX scores MatMul.
OPENVINO_ALIASES = {"/MatMul_1": "/MatMul"}


def torch_aliases(linear_op: str) -> dict:
    """Torch op names ("conv1/conv2d/0") as the ONNX exporter names the same operations."""
    return {"add/0": "/Add", "matmul/0": "/MatMul", "conv2d": "Conv", "linear": linear_op}


def _norm(name: str, aliases: dict | None = None) -> str:
    name = re.sub(r"/WithoutBiases$", "", name)
    aliases = aliases or {}
    match = re.fullmatch(r"(\w+)/(conv2d|linear)/0", name)
    if match and match.group(2) in aliases:
        return f"/{match.group(1)}/{aliases[match.group(2)]}"
    return aliases.get(name, name)


def describe(graph, transformer: bool = False, aliases: dict | None = None, arithmetic: bool = True) -> dict:
    options = PlacementOptions(
        rules=CPU_RULES, transformer=transformer, overflow_fix_first_layer=True, fuse_linear_arithmetic=arithmetic
    )
    setup = find_quantization_setup(graph, {}, options)
    acts = set()
    for q in setup.activations:
        flags = ("per-channel" if q.per_channel else "") + ("unified" if q.unified is not None else "")
        sym = "sym-only" if q.modes == frozenset({"symmetric"}) else ""
        acts.add((tuple(sorted(_norm(t, aliases) for t in q.targets)), flags, sym))
    weights = {_norm(w.node, aliases): w.half_range for w in setup.weights}
    return {"activations": acts, "weights": weights}


GOLDEN = {
    "conv_bn_relu_pool_linear": {
        "activations": {(("/conv1/Conv",), "", ""), (("/conv2/Conv",), "", ""), (("/fc/Gemm",), "", "")},
        "weights": {"/conv1/Conv": True, "/conv2/Conv": False, "/fc/Gemm": False},
    },
    "residual": {
        # stem output feeds conv and the skip input of the fused Add: one merged quantizer
        "activations": {(("/stem/Conv",), "", ""), (("/Add", "/conv/Conv"), "", ""), (("/head/Conv",), "", "")},
        "weights": {"/stem/Conv": True, "/conv/Conv": False, "/head/Conv": False},
    },
    "concat": {
        "activations": {(("/a/Conv", "/b/Conv"), "", ""), (("/head/Conv",), "unified", "")},
        "weights": {"/a/Conv": True, "/b/Conv": False, "/head/Conv": False},
    },
    "depthwise": {
        "activations": {(("/pw/Conv",), "", ""), (("/dw/Conv",), "per-channel", ""), (("/head/Conv",), "", "")},
        "weights": {"/pw/Conv": True, "/dw/Conv": False, "/head/Conv": False},
    },
    "swish_branch": {
        # the swish output feeds MaxPool (-> head) and a float Softmax: the quantizer stays before MaxPool
        "activations": {(("/conv/Conv",), "", ""), (("/head/Conv",), "", "")},
        "weights": {"/conv/Conv": True, "/head/Conv": False},
    },
}

# ONNX Runtime runs QLinearConv + QLinearAdd only with Q/DQ on every Add input: no Conv+Add fusion there.
ONNX_GOLDEN = GOLDEN | {
    "residual": {
        "activations": {
            (("/stem/Conv",), "", ""), (("/Add", "/conv/Conv"), "", ""), (("/Add",), "", ""), (("/head/Conv",), "", "")
        },
        "weights": GOLDEN["residual"]["weights"],
    },
}

TRANSFORMER_GOLDEN = {
    "attention": {
        "activations": {
            (("/k/MatMul", "/q/MatMul", "/v/MatMul"), "", ""),
            (("/MatMul",), "", "sym-only"),
            (("/o/MatMul",), "", ""),
        },
        "weights": {"/q/MatMul": False, "/k/MatMul": False, "/v/MatMul": False, "/o/MatMul": False},
    },
}


# Whether a backend fuses a residual Add into the preceding Conv/MatMul decides which golden applies.
FUSES_ARITHMETIC = {"openvino": True, "onnx": False, "torch": False}  # torch: exports run in ONNX Runtime


def _graph(name: str, backend: str, tmp_path):
    module, example = build(name)
    model = as_backend(module, example, backend, tmp_path)
    item = example if backend == "torch" else example.numpy()
    adapter = registry.get_adapter(model, example_input=item)
    adapter.check_inputs(model, item)
    assert adapter.capabilities.fuse_linear_arithmetic is FUSES_ARITHMETIC[backend]
    return adapter.build_graph(model)


def _aliases(backend: str, linear_op: str) -> dict | None:
    return {"openvino": OPENVINO_ALIASES, "torch": torch_aliases(linear_op)}.get(backend)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_cnn_placement_matches_golden(name, backend, tmp_path):
    arithmetic = FUSES_ARITHMETIC[backend]
    described = describe(_graph(name, backend, tmp_path), arithmetic=arithmetic, aliases=_aliases(backend, "Gemm"))
    assert described == (GOLDEN if arithmetic else ONNX_GOLDEN)[name]


@pytest.mark.parametrize("name", sorted(TRANSFORMER_GOLDEN))
def test_transformer_placement_matches_golden(name, backend, tmp_path):
    graph = _graph(name, backend, tmp_path)
    aliases = _aliases(backend, "MatMul")
    described = describe(graph, transformer=True, arithmetic=FUSES_ARITHMETIC[backend], aliases=aliases)
    assert described == TRANSFORMER_GOLDEN[name]
