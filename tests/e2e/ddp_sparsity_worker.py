"""One rank of the 2-process RB sparsity DDP test (tests/e2e/test_ddp_sparsity.py); started by
``torch.distributed.run``:

    python -m torch.distributed.run --nproc_per_node 2 tests/e2e/ddp_sparsity_worker.py --out DIR

Every rank builds the same model but seeds torch's global RNG differently after that, so each rank's RB
masks draw their noise from a different seed unless ``ctrl.distributed()`` makes them agree. Each rank
writes DIR/rank<r>.json: its seed before and after ``distributed()``, a mask sampled before it, the mask
of every RB forward during a few DDP steps (rank-specific data), and the mask logits afterwards.
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


def main() -> None:
    import nncompress as nncf

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # env:// from torchrun
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    torch.manual_seed(1000 + rank)  # a different mask-sampling seed on each rank
    config = nncf.NNCFConfig.from_dict({"input_info": {"sample_size": [1, 1, 8, 8]},
                                        "compression": {"algorithm": "rb_sparsity"}})
    ctrl, compressed = nncf.create_compressed_model(model, config)
    with torch.no_grad():
        for mask in ctrl.masks.values():
            mask.mask.zero_()  # keep probability 0.5: every sample is random
    masks = list(ctrl.masks.values())
    report = {"seed_before": ctrl.generator.seed, "sample_before": masks[1].train().sample().flatten().tolist()}
    ctrl.generator.reseed(ctrl.generator.seed)  # restart the sequence the sample above used
    sampled: list[list[float]] = []
    for mask in masks:
        mask.register_forward_hook(lambda module, args, out: sampled.append((out != 0).flatten().float().tolist()))
    ddp = nn.parallel.DistributedDataParallel(compressed)
    ctrl.distributed()
    report["seed_after"] = ctrl.generator.seed
    gen = torch.Generator().manual_seed(rank)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    ddp.train()
    for _ in range(STEPS):
        ctrl.scheduler.step()
        x, y = torch.rand(BATCH, 1, 8, 8, generator=gen), torch.randint(0, 10, (BATCH,), generator=gen)
        loss = F.cross_entropy(ddp(x), y) + ctrl.loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    report["sampled"] = sampled
    report["logits"] = [m.mask.detach().flatten().tolist() for m in masks]
    report["rank"], report["world_size"] = dist.get_rank(), dist.get_world_size()
    Path(args.out, f"rank{rank}.json").write_text(json.dumps(report))
    gc.collect()  # free DDP's reducer before the group goes (see tests/e2e/ddp_worker.py)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
