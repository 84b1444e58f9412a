"""nncompress.training.distributed: single-process behaviour, a one-rank gloo group, and two real gloo ranks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from nncompress.errors import ValidationError  # noqa: E402
from nncompress.training import distributed as ddp  # noqa: E402


class _Quantizerish(nn.Module):
    """Parameters and buffers of every dtype a quantizer holds (float, int32, bool), one non-contiguous."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((3,), value))
        self.register_buffer("_num_bits", torch.tensor(8 if value == 0 else int(value), dtype=torch.int32))
        self.register_buffer("enabled", torch.tensor(value == 0))
        self.register_buffer("table", torch.arange(6.0).reshape(2, 3).t() * (value + 1))  # non-contiguous


def _modules(value: float) -> dict[str, nn.Module]:
    return {"b": _Quantizerish(value), "a": _Quantizerish(value + 0.5)}


def _snapshot(modules: dict[str, nn.Module]) -> dict[str, list]:
    return {f"{n}.{k}": t.detach().tolist() for n, m in modules.items() for k, t in m.state_dict().items()}


# ---- no process group -----------------------------------------------------------------------------------


def test_without_a_process_group_everything_is_single_rank_and_collectives_are_identities():
    assert not ddp.is_distributed() and ddp.rank() == 0 and ddp.world_size() == 1
    ddp.barrier()
    obj = {"k": [1, 2]}
    assert ddp.broadcast_object(obj) is obj
    t = torch.tensor([1.0, 3.0])
    assert ddp.all_reduce_mean(t) is t and t.tolist() == [1.0, 3.0]
    modules = _modules(2.0)
    before = _snapshot(modules)
    ddp.broadcast_modules(modules)
    assert _snapshot(modules) == before


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ddp.broadcast_object(1, src=1), r"src=1 is not a rank .* valid ranks are 0..0"),
        (lambda: ddp.broadcast_modules({}, src=-1), r"src=-1 is not a rank"),
        (lambda: ddp.broadcast_modules([nn.Linear(1, 1)]), r"mapping of name -> torch.nn.Module, got list"),
        (lambda: ddp.broadcast_modules({"q": torch.ones(1)}), r"entry 'q' is a Tensor, not a torch.nn.Module"),
        (lambda: ddp.all_reduce_mean(torch.ones(2, dtype=torch.int64)), r"floating-point tensor.*torch.int64"),
        (lambda: ddp.all_reduce_mean([1.0]), r"needs a torch.Tensor, got list"),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValidationError, match=message):
        call()


# ---- one-rank gloo group (the real collective code path, in this process) ---------------------------------


@pytest.fixture
def one_rank_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_one_rank_group_runs_the_collectives_and_keeps_values(one_rank_group):
    assert ddp.is_distributed() and ddp.rank() == 0 and ddp.world_size() == 1
    modules = _modules(3.0)
    before = _snapshot(modules)
    ddp.broadcast_modules(modules)
    assert _snapshot(modules) == before
    t = torch.tensor([2.0, 4.0]).t()
    assert ddp.all_reduce_mean(t).tolist() == [2.0, 4.0]
    assert ddp.broadcast_object(("x", 1)) == ("x", 1)
    ddp.barrier()


# ---- two real ranks ---------------------------------------------------------------------------------------


def _two_rank_worker(rank: int, store: str, out_dir: str) -> None:
    """Runs in a spawned process: every collective with rank-dependent inputs; writes what it saw."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        modules = _modules(float(rank))
        scale_object = modules["b"].scale
        ddp.broadcast_modules(modules, src=0)
        report = {
            "rank": ddp.rank(), "world": ddp.world_size(), "modules": _snapshot(modules),
            "same_parameter_object": modules["b"].scale is scale_object,
            "mean": ddp.all_reduce_mean(torch.tensor([rank + 1.0, 2.0 * (rank + 1)])).tolist(),
            "object": ddp.broadcast_object({"from": rank}, src=1),
        }
        extra = _modules(float(rank))
        if rank == 1:
            extra["c"] = nn.Linear(2, 2)  # a rank that built a different model
        try:
            ddp.broadcast_modules(extra)
            report["mismatch_error"] = None
        except ValidationError as error:
            report["mismatch_error"] = str(error)
        ddp.barrier()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_broadcast_reduce_and_detect_different_models(tmp_path):
    import torch.multiprocessing as mp

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.start_processes(_two_rank_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2,
                       start_method="spawn", join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["rank"], r0["world"], r1["rank"], r1["world"]) == (0, 2, 1, 2)
    expected = _snapshot(_modules(0.0))  # rank 0's values, every dtype, on both ranks
    assert r0["modules"] == expected and r1["modules"] == expected
    assert _snapshot(_modules(1.0)) != expected  # the ranks really started different
    assert r1["same_parameter_object"]  # in place: the optimizer's Parameter objects stay valid
    assert r0["mean"] == r1["mean"] == [1.5, 3.0]
    assert r0["object"] == r1["object"] == {"from": 1}
    for report in (r0, r1):
        assert "rank 1 holds different tensors than rank 0" in report["mismatch_error"]
        assert "c.weight" in report["mismatch_error"]
