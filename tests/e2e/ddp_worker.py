"""One rank of the 2-process DDP test (tests/e2e/test_ddp.py); started by ``torch.distributed.run``.

    python -m torch.distributed.run --nproc_per_node 2 tests/e2e/ddp_worker.py --mode qat --out DIR

Every rank builds the same small CNN (same seed) but reads DIFFERENT data (its own seed and scale), so
anything computed from data (quantizer ranges) differs per rank unless the library synchronises it.
Each rank writes DIR/rank<r>.json with the tensors it holds at each stage:

- mode "plain": a model initialised with a rank-dependent seed, before/after ``broadcast_modules`` and
  after a few DDP steps (the launcher and the helpers, no compression);
- mode "qat": quantizer tensors of ``create_compressed_model`` without a process group (what each rank's
  own data gives), after it with the group (range init broadcast), after ``ctrl.distributed()``, and
  after a few DDP training steps.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

STEPS = 3
BATCH = 8


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


def rank_data(rank: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-specific images (seed 100+rank, scale 1+2*rank) and labels."""
    gen = torch.Generator().manual_seed(100 + rank)
    x = torch.rand(count, 1, 8, 8, generator=gen) * (1.0 + 2.0 * rank)
    return x, torch.randint(0, 10, (count,), generator=gen)


def snapshot(named: dict[str, nn.Module]) -> dict[str, list]:
    return {
        f"{name}.{key}": value.detach().float().reshape(-1).tolist()
        for name, module in sorted(named.items())
        for key, value in module.state_dict().items()
    }


def parameters(model: nn.Module) -> dict[str, list]:
    """Parameters only: BatchNorm running statistics are per-rank between DDP's buffer broadcasts."""
    return {name: p.detach().reshape(-1).tolist() for name, p in model.named_parameters()}


def train_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctrl=None) -> None:
    ddp_model = nn.parallel.DistributedDataParallel(model)
    if ctrl is not None:
        ctrl.distributed()
    opt = torch.optim.SGD(ddp_model.parameters(), lr=0.05, momentum=0.9)
    ddp_model.train()
    for step in range(STEPS):
        xb, yb = x[step * BATCH : (step + 1) * BATCH], y[step * BATCH : (step + 1) * BATCH]
        if ctrl is not None:
            ctrl.scheduler.step()
        loss = F.cross_entropy(ddp_model(xb), yb)
        if ctrl is not None:
            loss = loss + ctrl.loss()
        opt.zero_grad()
        loss.backward()
        opt.step()


def run_plain(rank: int) -> dict:
    from nncompress.training import distributed

    torch.manual_seed(rank)  # deliberately different weights per rank
    model = small_cnn()
    before = snapshot({"model": model})
    distributed.broadcast_modules({"model": model})
    after_broadcast = snapshot({"model": model})
    x, y = rank_data(rank, STEPS * BATCH)
    train_steps(model, x, y)
    return {"before": before, "after_init": after_broadcast, "after_steps": parameters(model)}


def _compress(rank: int):
    import nncompress as nncf

    torch.manual_seed(0)
    model = small_cnn()
    x, y = rank_data(rank, 32)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)
    config = nncf.NNCFConfig.from_dict({
        "input_info": {"sample_size": [1, 1, 8, 8]},
        "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 32}}},
    })
    config = nncf.torch.register_default_init_args(config, loader, nn.CrossEntropyLoss())
    ctrl, compressed = nncf.create_compressed_model(model, config)
    return ctrl, compressed


def run_qat(rank: int) -> dict:
    ctrl, _ = _compress(rank)  # no process group yet: each rank's own data alone
    without_group = snapshot(ctrl.quantizers())
    dist.init_process_group("gloo")  # env:// from torchrun
    ctrl, compressed = _compress(rank)
    after_init = snapshot(ctrl.quantizers())
    x, y = rank_data(rank, STEPS * BATCH)
    train_steps(compressed, x, y, ctrl)
    return {"before": without_group, "after_init": after_init, "after_steps": snapshot(ctrl.quantizers()),
            "weights_after_steps": parameters(compressed)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["plain", "qat"], required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    if args.mode == "plain":
        dist.init_process_group("gloo")  # env:// from torchrun
        report = run_plain(rank)
    else:
        report = run_qat(rank)
    report["rank"], report["world_size"] = dist.get_rank(), dist.get_world_size()
    Path(args.out, f"rank{rank}.json").write_text(json.dumps(report))
    # DDP's reducer (in reference cycles) holds the gloo group: free it before the group is destroyed, or
    # the group's C++ threads can be torn down at interpreter exit instead (SIGABRT, "terminate called")
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
