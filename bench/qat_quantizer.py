"""Cost of the trainable QAT quantizers: a training step of a small CNN with and without them.

    python bench/qat_quantizer.py [--allow-busy] [--batch 64] [--steps 5]

The CNN (3 conv + fc on 3x32x32, batch 64) gets, by hand, a QAT quantizer on each conv/fc input
(symmetric per-tensor, or asymmetric with ``--asym``) and each weight (symmetric per-channel, narrow
range). One figure is the time of ``--steps`` SGD steps (forward, cross-entropy, backward, update);
FP32 and QAT run interleaved in the same process and the ratio is taken per round (median, min-max).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench import harness  # noqa: E402
from nncompress.backends.torch.qat import make_qat_quantizer  # noqa: E402


class QuantizedLayer(nn.Module):
    """``layer`` with a QAT quantizer on its input and on its weight (or none: FP32)."""

    def __init__(self, layer: nn.Module, quantize: bool, act_mode: str):
        super().__init__()
        self.layer = layer
        ndim = layer.weight.ndim
        self.input_q = self.weight_q = None
        if quantize:
            self.input_q = make_qat_quantizer(mode=act_mode, num_bits=8, signed=None, per_channel=False, axis=None,
                                              channels=None, ndim=ndim, is_weights=False, narrow_range=False,
                                              half_range=False, logarithm_scale=False)
            self.weight_q = make_qat_quantizer(mode="symmetric", num_bits=8, signed=True, per_channel=True, axis=0,
                                               channels=layer.weight.shape[0], ndim=ndim, is_weights=True,
                                               narrow_range=True, half_range=False, logarithm_scale=False)
            with torch.no_grad():
                self.weight_q.scale.copy_(layer.weight.detach().abs().amax(dim=tuple(range(1, ndim)), keepdim=True))
                if act_mode == "symmetric":
                    self.input_q.scale.fill_(3.0)
                else:
                    self.input_q.input_low.fill_(-1.0)
                    self.input_q.input_range.fill_(4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_q is None:
            return self.layer(x)
        weight = self.weight_q(self.layer.weight)
        x = self.input_q(x)
        if isinstance(self.layer, nn.Conv2d):
            return nn.functional.conv2d(x, weight, self.layer.bias, padding=self.layer.padding)
        return nn.functional.linear(x, weight, self.layer.bias)


def make_cnn(quantize: bool, act_mode: str) -> nn.Module:
    torch.manual_seed(0)

    def q(layer):
        return QuantizedLayer(layer, quantize, act_mode)

    return nn.Sequential(
        q(nn.Conv2d(3, 32, 3, padding=1)), nn.ReLU(), nn.MaxPool2d(2),
        q(nn.Conv2d(32, 64, 3, padding=1)), nn.ReLU(), nn.MaxPool2d(2),
        q(nn.Conv2d(64, 64, 3, padding=1)), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        q(nn.Linear(64, 10)),
    )


def stepper(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
        return time.perf_counter() - start

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allow-busy", action="store_true", help="measure even when the load exceeds the cores")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed figure")
    parser.add_argument("--asym", action="store_true", help="asymmetric activation quantizers")
    parser.add_argument("--repeats", type=int, default=harness.REPEATS)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    harness.require_quiet(args.allow_busy)
    torch.manual_seed(0)
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    act_mode = "asymmetric" if args.asym else "symmetric"
    runs = {"fp32": stepper(make_cnn(False, act_mode), x, y, args.steps),
            "qat": stepper(make_cnn(True, act_mode), x, y, args.steps)}
    figures, load = harness.interleaved(runs, repeats=args.repeats)
    ratio = harness.ratio(figures["qat"], figures["fp32"])
    per_step = {name: f"{spread.median / args.steps * 1e3:.1f} ms" for name, spread in figures.items()}
    print(f"activations {act_mode}, batch {args.batch}, {torch.get_num_threads()} threads: step {per_step}")
    print(f"QAT / FP32 step time: median {ratio.median:.3f} (min {min(ratio.values):.3f}, max "
          f"{max(ratio.values):.3f}, {len(ratio.values)} interleaved rounds; load {max(load.readings):.1f})")


if __name__ == "__main__":
    main()
