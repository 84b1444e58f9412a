"""Small models with every weighted layer kind, in ONNX and OpenVINO, for weight-compression tests."""

from __future__ import annotations

import numpy as np

VOCAB, HIDDEN, FFN, OUT = 50, 64, 128, 32


def onnx_model(seed: int = 0, opset: int = 17):
    """ids [B, S] -> Gather(embedding) -> MatMul(+Add bias) -> Relu -> Gemm(transB, bias) -> MatMul (last).

    Also a Conv branch on a second input ``image`` [B, 3, 8, 8] -> Conv -> output ``conv``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = {
        "emb": rng.standard_normal((VOCAB, HIDDEN)),
        "w1": rng.standard_normal((HIDDEN, FFN)) / 8,
        "b1": rng.standard_normal(FFN) / 10,
        "w2": rng.standard_normal((FFN, FFN)) / 11,  # Gemm transB: [N, K]
        "b2": rng.standard_normal(FFN) / 10,
        "w3": rng.standard_normal((FFN, OUT)) / 11,
        "conv_w": rng.standard_normal((16, 3, 3, 3)) / 5,
        "conv_b": rng.standard_normal(16) / 10,
        "shape2d": np.array([-1, HIDDEN]),
    }
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="embedding", axis=0),
        helper.make_node("Reshape", ["e", "shape2d"], ["e2"], name="flatten"),
        helper.make_node("MatMul", ["e2", "w1"], ["h1"], name="fc1"),
        helper.make_node("Add", ["h1", "b1"], ["h1b"], name="fc1_bias"),
        helper.make_node("Relu", ["h1b"], ["a1"], name="relu"),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["h2"], name="fc2", transB=1),
        helper.make_node("Relu", ["h2"], ["a2"], name="relu2"),
        helper.make_node("MatMul", ["a2", "w3"], ["logits"], name="head"),
        helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 8, 8]),
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["rows", OUT]),
            helper.make_tensor_value_info("conv", TensorProto.FLOAT, ["batch", 16, 8, 8]),
        ],
        [numpy_helper.from_array(v.astype(np.int64 if k == "shape2d" else np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def inputs(seed: int = 1, batch: int = 2, seq: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "ids": rng.integers(0, VOCAB, (batch, seq)).astype(np.int64),
        "image": rng.standard_normal((batch, 3, 8, 8)).astype(np.float32),
    }


def openvino_model(seed: int = 0):
    """The same network converted to OpenVINO."""
    import tempfile
    from pathlib import Path

    import onnx
    import openvino as ov

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tiny.onnx"
        onnx.save(onnx_model(seed), path)
        return ov.convert_model(path)


def torch_model(seed: int = 0):
    """The same network as a torch module (Linear weights transposed to [out, in]); inputs as ``inputs()``."""
    import torch
    from onnx import numpy_helper
    from torch import nn

    weights = {t.name: numpy_helper.to_array(t) for t in onnx_model(seed).graph.initializer}

    def parameter(name: str, transpose: bool = False) -> nn.Parameter:
        value = weights[name].T if transpose else weights[name]
        return nn.Parameter(torch.from_numpy(np.array(value, dtype=np.float32)))

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(VOCAB, HIDDEN)
            self.fc1, self.fc2, self.head = nn.Linear(HIDDEN, FFN), nn.Linear(FFN, FFN), nn.Linear(FFN, OUT, bias=False)
            self.conv = nn.Conv2d(3, 16, 3, padding=1)
            self.embedding.weight = parameter("emb")
            self.fc1.weight, self.fc1.bias = parameter("w1", transpose=True), parameter("b1")
            self.fc2.weight, self.fc2.bias = parameter("w2"), parameter("b2")
            self.head.weight = parameter("w3", transpose=True)
            self.conv.weight, self.conv.bias = parameter("conv_w"), parameter("conv_b")

        def forward(self, ids, image):
            hidden = torch.relu(self.fc2(torch.relu(self.fc1(self.embedding(ids).reshape(-1, HIDDEN)))))
            return self.head(hidden), self.conv(image)

    return Tiny().eval()
