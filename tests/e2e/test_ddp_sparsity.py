"""RB sparsity under DDP: two real processes (torch.distributed.run, gloo, CPU) sample identical masks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from tests.e2e.test_ddp import _free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ddp_sparsity_worker.py")


@pytest.mark.slow
def test_rb_masks_are_sampled_identically_on_every_rank(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), str(WORKER), "--out", str(tmp_path),
    ]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"torchrun failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["rank"], r1["rank"], r0["world_size"]) == (0, 1, 2)
    # without distributed() the ranks would sample differently (else this test proves nothing)
    assert r0["seed_before"] != r1["seed_before"] and r0["sample_before"] != r1["sample_before"]
    assert r1["seed_after"] == r0["seed_after"] == r0["seed_before"]  # rank 0's seed everywhere
    assert len(r0["sampled"]) == 2 * 3 and r0["sampled"] == r1["sampled"]  # 2 masks x 3 forwards, identical
    assert r0["sampled"][1] != r0["sampled"][3], "masks must be stochastic from step to step"
    assert r0["logits"] == r1["logits"]
