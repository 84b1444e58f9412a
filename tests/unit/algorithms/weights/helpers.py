"""Tiny neutral graphs, layers and statistics for the weight-compression unit tests."""

from __future__ import annotations

import numpy as np

from nncompress.algorithms.weights.activations import ActivationStats, StatsNeeds
from nncompress.algorithms.weights.config import LayerConfig
from nncompress.algorithms.weights.selection import WeightLayer
from nncompress.graph.ir import Graph, Node, TensorRef, WeightInfo
from nncompress.graph.ops import OpKind as K
from nncompress.parameters import CompressWeightsMode as M

IN, OUT = 32, 8


def relu_linear_graph(channels: int = IN) -> Graph:
    """x [4, 32] -> Relu -> Linear (weight [32, 8], in axis 0): AWQ's Activation->Linear pattern."""
    return Graph([
        Node("x", K.INPUT, "Parameter", [], [(4, channels)], ["float"]),
        Node("relu", K.RELU, "Relu", [TensorRef("x")], [(4, channels)], ["float"]),
        Node("fc", K.LINEAR, "MatMul", [TensorRef("relu"), None], [(4, OUT)], ["float"], {1: (channels, OUT)},
             weight=WeightInfo(1, (channels, OUT), 1, 0)),
        Node("output/out", K.OUTPUT, "Result", [TensorRef("fc")], [], []),
    ])


def linear_layer(mode=M.INT4_SYM, group: int = 16, in_axis: int = 0) -> WeightLayer:
    shape = (IN, OUT) if in_axis == 0 else (OUT, IN)
    info = WeightInfo(1, shape, 1 - in_axis, in_axis)
    return WeightLayer("fc", K.LINEAR, info, LayerConfig(mode, group), True, activation=TensorRef("relu"))


def weight(seed: int = 0, in_axis: int = 0) -> np.ndarray:
    w = np.random.default_rng(seed).standard_normal((OUT, IN)).astype(np.float32)
    return np.ascontiguousarray(w.T) if in_axis == 0 else w


def statistics(seed: int = 1, hessian: bool = True, samples: int = 6) -> ActivationStats:
    rng = np.random.default_rng(seed)
    stats = ActivationStats(StatsNeeds(means=True, hessian=hessian), 100)
    for _ in range(samples):
        stats.update(np.abs(rng.standard_normal((1, 5, IN))).astype(np.float32) * np.linspace(0.1, 4, IN))
    return stats


def snapshot(stats: ActivationStats) -> dict[str, np.ndarray]:
    """Every array the statistics hold (with the Hessian buffers), for before/after comparison."""
    arrays = {"means": np.stack(stats.means), "tokens": np.asarray(stats.tokens)}
    if stats.hessian_sum is not None:
        arrays["hessian_sum"] = stats.hessian_sum.copy()
    arrays["pending"] = np.concatenate(stats._pending) if stats._pending else np.zeros(0)
    arrays["state"] = np.asarray([stats.hessian_tokens, stats._pending_tokens, stats.count])
    return arrays


def assert_same(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> None:
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)


def tiny_llama(layers: int = 2):
    """A seeded random Llama (hidden 64, 4 heads, 2 key/value heads, vocabulary 96) in eval mode."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(config).eval()


def token_items(count: int = 6) -> list[dict]:
    """``count`` seeded items of 12 token ids for ``tiny_llama``."""
    import torch

    generator = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(0, 96, (1, 12), generator=generator)} for _ in range(count)]
