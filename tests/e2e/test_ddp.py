"""Two real processes under ``torch.distributed.run`` (gloo, CPU): ranks end up with identical tensors.

The worker (tests/e2e/ddp_worker.py) gives each rank different data; these tests read what each rank
wrote and compare rank 0 with rank 1 exactly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(mode: str, out: Path) -> tuple[dict, dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), str(WORKER), "--mode", mode, "--out", str(out),
    ]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"torchrun failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["rank"], r1["rank"], r0["world_size"], r1["world_size"]) == (0, 1, 2, 2)
    return r0, r1


def _changed(a: dict, b: dict) -> list[str]:
    return [name for name in a if a[name] != b[name]]


def test_torchrun_two_ranks_plain_model_broadcast_then_ddp_steps_stay_identical(tmp_path):
    r0, r1 = _launch("plain", tmp_path)
    assert _changed(r0["before"], r1["before"]), "the ranks must start with different weights"
    assert r0["after_init"] == r0["before"]  # rank 0 is the source
    assert r1["after_init"] == r0["before"]  # rank 1 received rank 0's weights, every tensor
    assert r0["after_steps"] == r1["after_steps"]  # DDP kept the parameters identical on different data
    initial = {name: r0["after_init"][f"model.{name}"] for name in r0["after_steps"]}
    assert _changed(initial, r0["after_steps"]) == list(initial), "training must have changed every parameter"


@pytest.mark.slow
def test_torchrun_two_ranks_qat_ranges_identical_after_init_and_after_steps(tmp_path):
    r0, r1 = _launch("qat", tmp_path)
    assert r0["before"].keys() == r1["before"].keys() and r0["before"], "same quantizers on both ranks"
    differing = _changed(r0["before"], r1["before"])
    assert differing, "each rank's own data alone must give different ranges (else this test proves nothing)"
    assert r0["after_init"] == r1["after_init"], "range init must be identical on every rank"
    assert r0["after_steps"] == r1["after_steps"], "quantizer parameters must stay identical during DDP training"
    assert r0["weights_after_steps"] == r1["weights_after_steps"]
    assert _changed(r0["after_init"], r0["after_steps"]), "training must have moved some quantizer parameter"
