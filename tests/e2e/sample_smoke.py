"""Helpers of the detection and segmentation sample smoke tests: run a sample in-process on a tiny synthetic set
and read its ``RESULT`` line; count the exported convolutions' filters."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
from pathlib import Path

TINY = ["--train-images", "48", "--test-images", "16", "--batch-size", "16"]


def run_sample(sample: str, *args: str) -> dict:
    """``examples/<sample>/main.py`` with ``args`` on 48 training and 16 held-out images; its RESULT dict."""
    import torch

    main = importlib.import_module(f"examples.{sample}.main")
    torch.set_num_threads(1)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        main.main([*args, *TINY])
    lines = [line for line in stdout.getvalue().splitlines() if line.startswith("RESULT ")]
    assert lines, stdout.getvalue()[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def conv_filters(path: Path) -> int:
    """Output channels summed over the 4-D initializers (conv weights) of an ONNX file."""
    import onnx

    return sum(t.dims[0] for t in onnx.load(str(path)).graph.initializer if len(t.dims) == 4)


def sparsity_of_stripped(path: Path) -> float:
    """Share of zeros among the conv weights of a sample's stripped.pth."""
    import torch

    weights = torch.load(path, weights_only=True)
    convs = [v for k, v in weights.items() if k.endswith("weight") and v.dim() == 4]
    return sum(int((v == 0).sum()) for v in convs) / sum(v.numel() for v in convs)
