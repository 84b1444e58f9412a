"""Filter pruning with real channel removal: a residual CNN (inverted residuals with depthwise convs, a
concat block) pruned to 30% fewer modelled FLOPs, full vs shrunk.

    python bench/pruning.py [--allow-busy]

No fine-tuning here (random weights, L2 importance, the default feasibility rules): the figures are the
structural ones. Reports parameters, modelled FLOPs (§6.1), bytes (PyTorch state, ONNX file, OpenVINO IR)
of the full and the shrunk model, checks that the shrunk model equals the masked one and its ONNX export,
and measures ONNX Runtime and OpenVINO latency of both, interleaved in one process (shrunk/full per round).
Prints the table; it does not write BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench import common, harness  # noqa: E402
from nncompress.algorithms.pruning import group_importances, masks_for_flops_target, model_cost  # noqa: E402
from nncompress.backends.torch.channel_removal import model_channels, remove_channels  # noqa: E402
from nncompress.backends.torch.export import export_onnx  # noqa: E402
from nncompress.backends.torch.pruning_mask import insert_pruning_masks  # noqa: E402

FLOPS_TARGET = 0.3
INPUT = (1, 3, 128, 128)


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


class InvertedResidual(nn.Module):
    def __init__(self, c: int, expand: int = 4):
        super().__init__()
        hidden = c * expand
        self.expand = conv_bn(c, hidden)
        self.dw = conv_bn(hidden, hidden, 3, groups=hidden)
        self.project = conv_bn(hidden, c)

    def forward(self, x):
        y = nn.functional.relu6(self.expand(x))
        y = nn.functional.relu6(self.dw(y))
        return x + self.project(y)


class Fire(nn.Module):
    """squeeze 1x1 -> (expand 1x1 | expand 3x3) concatenated."""

    def __init__(self, c: int):
        super().__init__()
        self.squeeze = conv_bn(c, c // 2)
        self.e1 = conv_bn(c // 2, c)
        self.e3 = conv_bn(c // 2, c, 3)

    def forward(self, x):
        s = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.e1(s)), torch.relu(self.e3(s))], dim=1)


class ResidualDWNet(nn.Module):
    def __init__(self, classes: int = 100, in_channels: int = 3):
        super().__init__()
        self.stem = conv_bn(in_channels, 32, 3, 2)
        self.stage1 = nn.Sequential(InvertedResidual(32), InvertedResidual(32))
        self.down1 = conv_bn(32, 64, 3, 2)
        self.stage2 = nn.Sequential(InvertedResidual(64), InvertedResidual(64))
        self.fire = Fire(64)
        self.down2 = conv_bn(128, 128, 3, 2)
        self.stage3 = nn.Sequential(InvertedResidual(128), InvertedResidual(128))
        self.head = nn.Linear(128, classes)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = self.stage2(torch.relu(self.down1(self.stage1(x))))
        x = self.stage3(torch.relu(self.down2(self.fire(x))))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _latency_ms(run) -> float:
    return 1000.0 / harness.rate(run, 1, 1.0)()


def _sizes(model: nn.Module, x: torch.Tensor, tmp: Path, name: str):
    import openvino as ov

    onnx_path = export_onnx(model, tmp / f"{name}.onnx", x)
    ov_model = ov.convert_model(str(onnx_path))
    return onnx_path, ov_model, common.onnx_size_bytes(onnx_path), common.openvino_size_bytes(ov_model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allow-busy", action="store_true", help="measure even when the load exceeds the cores")
    harness.require_quiet(parser.parse_args().allow_busy)
    torch.manual_seed(0)
    model = ResidualDWNet().eval()
    x = torch.randn(*INPUT)
    channels = model_channels(model, x)
    imps = group_importances(channels.groups, lambda n: channels.weight_of(model, n))
    found = masks_for_flops_target(channels.groups, imps, FLOPS_TARGET)
    masked = insert_pruning_masks(model, channels, found.masks)
    shrunk = remove_channels(model, channels, found.masks)
    with torch.no_grad():
        diff = float((masked(x) - shrunk(x)).abs().max())
    shrunk_cost = model_cost(channels_of(shrunk, x))
    with tempfile.TemporaryDirectory() as tmp:
        full_onnx, full_ov, full_onnx_b, full_ov_b = _sizes(model, x, Path(tmp), "full")
        small_onnx, small_ov, small_onnx_b, small_ov_b = _sizes(shrunk, x, Path(tmp), "shrunk")
        ort_diff = _onnx_diff(small_onnx, shrunk, x)
        runs = {}
        for name, path, ov_model in (("full", full_onnx, full_ov), ("shrunk", small_onnx, small_ov)):
            ort_run, _ = common.onnx_run(path, x.numpy())
            ov_run, _ = common.openvino_run(ov_model, x.numpy())
            runs[f"ort {name}"] = lambda run=ort_run: _latency_ms(run)
            runs[f"ov {name}"] = lambda run=ov_run: _latency_ms(run)
        spreads, load = harness.interleaved(runs)
    ort_ratio = harness.ratio(spreads["ort shrunk"], spreads["ort full"])
    ov_ratio = harness.ratio(spreads["ov shrunk"], spreads["ov full"])
    params = (sum(p.numel() for p in model.parameters()), sum(p.numel() for p in shrunk.parameters()))
    rows = [
        ["parameters", params[0], params[1], f"{params[1] / params[0]:.3f}"],
        ["modelled MFLOPs", f"{found.full.flops / 1e6:.1f}", f"{shrunk_cost.flops / 1e6:.1f}",
         f"{shrunk_cost.flops / found.full.flops:.3f}"],
        ["PyTorch state bytes", common.torch_state_bytes(model), common.torch_state_bytes(shrunk),
         f"{common.torch_state_bytes(shrunk) / common.torch_state_bytes(model):.3f}"],
        ["ONNX bytes", full_onnx_b, small_onnx_b, f"{small_onnx_b / full_onnx_b:.3f}"],
        ["OpenVINO IR bytes", full_ov_b, small_ov_b, f"{small_ov_b / full_ov_b:.3f}"],
        ["ONNX Runtime latency ms", spreads["ort full"].format(".2f"), spreads["ort shrunk"].format(".2f"),
         ort_ratio.format(".3f")],
        ["OpenVINO latency ms", spreads["ov full"].format(".2f"), spreads["ov shrunk"].format(".2f"),
         ov_ratio.format(".3f")],
    ]
    print(common.markdown_table(["figure", "full", "shrunk", "shrunk/full"], rows))
    prunable = len(channels.groups.prunable())
    print(f"\nuniform level {found.level:.3f} over {prunable} of {len(channels.groups)} groups; "
          f"modelled FLOPs -{1 - found.pruned.flops / found.full.flops:.3f} (target {FLOPS_TARGET}); "
          f"max |masked - shrunk| {diff:.2e}; max |ONNX Runtime - PyTorch| (shrunk) {ort_diff:.2e}; "
          f"input {INPUT}; {load.describe()}")
    print(harness.provenance("python bench/pruning.py"))


def channels_of(model: nn.Module, x: torch.Tensor):
    from nncompress.backends.torch.capture import capture_graph

    return capture_graph(model, x).graph


def _onnx_diff(path: Path, model: nn.Module, x: torch.Tensor) -> float:
    session = common.onnx_session(path)
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        return float(np.abs(got - model(x).numpy()).max())


if __name__ == "__main__":
    main()
