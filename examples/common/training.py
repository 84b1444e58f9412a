"""The training loop every sample shares: common CLI options, seeding, DDP set-up, FP32 pre-training, the NNCF 2.x
compression fine-tuning loop, the best-checkpoint rule, resume and export.

A sample describes its task with a :class:`Task` (data, model, loss, metric) and calls :func:`main`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from examples.common.export import check_export, export


class SampleData(NamedTuple):
    """Tensors of the training and held-out splits; the first tensor of each is the model input."""

    train: tuple[torch.Tensor, ...]
    test: tuple[torch.Tensor, ...]


@dataclass
class Task:
    """What a sample trains: ``loss(net, batch, device)`` is the task loss of one loader batch,
    ``metric_fn(outputs, test)`` scores the model's outputs (numpy, one array per model output) on the test split."""

    metric: str  # result key: fp32_<metric>, init_<metric>, final_<metric>, epochs[i][<metric>]
    label: str  # printed name, e.g. "top-1"
    load_data: Callable[[dict], SampleData]
    make_model: Callable[[dict, SampleData], nn.Module]
    loss: Callable[[nn.Module, tuple, torch.device], torch.Tensor]
    metric_fn: Callable[[tuple[np.ndarray, ...], tuple[torch.Tensor, ...]], float]
    defaults: dict = field(default_factory=dict)  # the sample's own config keys and their defaults
    criterion: nn.Module | None = None  # for register_default_init_args (HAWQ precision init)
    checkpoint_key: str = "metric"  # the key of the epoch's metric in last.pth/best.pth
    output_names: tuple[str, ...] = ("output",)  # names of the plain-ONNX export's outputs (FP32 config)
    eval_batch: int = 512


COMMON_DEFAULTS = {"epochs": 2, "pretrain_epochs": 8, "batch_size": 64, "seed": 0, "pretrain_lr": 2e-3}


def add_common_args(p: argparse.ArgumentParser, default_checkpoint_dir: str) -> argparse.ArgumentParser:
    """The options every sample takes."""
    p.add_argument("--config", required=True, help="NNCF-style JSON (comments allowed)")
    p.add_argument("--epochs", type=int, help="compression fine-tuning epochs (overrides the config)")
    p.add_argument("--pretrain-epochs", type=int, help="FP32 epochs when no --weights/--resume is given")
    p.add_argument("--batch-size", type=int, help="per-process batch size (overrides the config)")
    p.add_argument("--lr", type=float, help="learning rate (overrides optimizer.base_lr)")
    p.add_argument("--weights", help="FP32 state_dict to start from instead of pre-training")
    p.add_argument("--resume", help="checkpoint written by this script (state_dict + compression_state)")
    p.add_argument("--checkpoint-dir", default=default_checkpoint_dir, help="where last.pth/best.pth/fp32.pth go")
    p.add_argument("--export", help="export the compressed model to this path (.onnx, or .xml for OpenVINO IR)")
    p.add_argument("--multiprocessing-distributed", action="store_true", help="spawn --world-size DDP processes")
    p.add_argument("--world-size", type=int, default=2, help="processes for --multiprocessing-distributed")
    p.add_argument("--seed", type=int, help="random seed (overrides the config; default 0)")
    return p


def load_sample_config(args: argparse.Namespace, defaults: dict) -> tuple[dict, Any]:
    """(training settings, NNCFConfig) from the JSON and the command line.

    The sample's own keys (model, dataset, epochs, optimizer, ...) sit at the root of the same JSON, as in
    NNCF's samples; the config schema accepts extra root keys. Command-line options win over the config,
    the config over ``defaults``.
    """
    import nncompress as nncf

    config = nncf.NNCFConfig.from_json(args.config)
    if "accuracy_aware_training" in config:  # this loop would ignore the section: say where it runs
        raise SystemExit(f"{args.config} has an accuracy_aware_training section: run it with "
                         "python bench/accuracy_aware.py --config ...")
    raw = dict(config)
    settings = COMMON_DEFAULTS | defaults | {k: raw[k] for k in COMMON_DEFAULTS.keys() | defaults.keys() if k in raw}
    for key in ("epochs", "pretrain_epochs", "batch_size", "seed", *defaults):  # a sample's own options win too
        if getattr(args, key, None) is not None:
            settings[key] = getattr(args, key)
    optimizer = {"type": "Adam", "base_lr": 1e-3, "weight_decay": 0.0} | dict(raw.get("optimizer", {}))
    if args.lr is not None:
        optimizer["base_lr"] = args.lr
    settings["optimizer"] = optimizer
    return settings, config


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---- distributed set-up --------------------------------------------------------------------------------


def init_distributed(local_rank: int | None, world: int | None) -> tuple[int, int]:
    """Join the process group of torchrun (env vars) or of --multiprocessing-distributed; (rank, world size)."""
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if local_rank is not None:  # spawned by --multiprocessing-distributed
        dist.init_process_group(backend, rank=local_rank, world_size=world)
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun
        dist.init_process_group(backend)
    else:
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(rank: int, *parts: Any) -> None:
    if rank == 0:
        print(*parts, flush=True)


def finish_distributed() -> None:
    """Free DDP's reducer (it sits in reference cycles and holds the group), then destroy the group."""
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


# ---- training pieces -----------------------------------------------------------------------------------


def make_loader(tensors: tuple[torch.Tensor, ...], batch_size: int, seed: int, shuffle: bool) -> DataLoader:
    dataset = TensorDataset(*tensors)
    sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed) if dist.is_initialized() else None
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      generator=gen, drop_last=False)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, device: torch.device, batch: int = 512) -> tuple[np.ndarray, ...]:
    """The model's outputs (a tuple of numpy arrays, one per output) on ``x`` in eval mode."""
    model.eval()
    chunks: list[tuple[np.ndarray, ...]] = []
    for start in range(0, len(x), batch):
        out = model(x[start : start + batch].to(device))
        out = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        chunks.append(tuple(o.float().cpu().numpy() for o in out))
    return tuple(np.concatenate(parts) for parts in zip(*chunks))


def evaluate(task: Task, model: nn.Module, data: SampleData, device: torch.device) -> float:
    """The task's metric on the whole held-out split (every rank evaluates the same data)."""
    return float(task.metric_fn(predict(model, data.test[0], device, task.eval_batch), data.test))


def param_groups(net: nn.Module, opt: dict) -> Any:
    """The parameters, with compression parameters (RB mask logits, quantizer scales) in a group of their own
    at ``optimizer.compression_lr`` when the config sets it (a sample key)."""
    if "compression_lr" not in opt:
        return net.parameters()
    from nncompress.backends.torch.hooks import is_storage_path

    named = list(net.named_parameters())
    compression = [p for name, p in named if is_storage_path(name)]
    model = [p for name, p in named if not is_storage_path(name)]
    return [{"params": model}, {"params": compression, "lr": float(opt["compression_lr"])}]


def make_optimizer(params, opt: dict) -> torch.optim.Optimizer:
    kind = opt.get("type", "Adam").lower()
    lr, wd = float(opt["base_lr"]), float(opt.get("weight_decay", 0.0))
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(opt.get("momentum", 0.9)), weight_decay=wd)
    raise SystemExit(f"optimizer.type {opt.get('type')!r} is not supported: valid types are Adam, SGD")


def pretrain_fp32(task: Task, model: nn.Module, data: SampleData, settings: dict, device, rank: int) -> None:
    """Plain FP32 training (one-cycle Adam); every rank trains the same model on its shard under DDP."""
    epochs = settings["pretrain_epochs"]
    loader = make_loader(data.train, settings["batch_size"], settings["seed"], shuffle=True)
    net = nn.parallel.DistributedDataParallel(model) if dist.is_initialized() else model
    lr = float(settings["pretrain_lr"])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, epochs * len(loader)))
    for epoch in range(epochs):
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        net.train()
        total, start = 0.0, time.perf_counter()
        for batch in loader:
            loss = task.loss(net, batch, device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        log(rank, f"FP32 pre-training epoch {epoch}: loss {total / max(1, len(loader)):.4f}, "
                  f"{time.perf_counter() - start:.1f} s")
    log(rank, f"FP32 pre-training: {epochs} epochs")


class StagedSchedule:
    """LR / weight decay of NNCF's staged QAT trainer (reference §2.9): poly LR drop, weight decay off."""

    def __init__(self, params: dict, optimizer: torch.optim.Optimizer) -> None:
        self.p, self.optimizer = params, optimizer
        self.base_lr, self.base_wd = float(params.get("base_lr", 1e-3)), float(params.get("base_wd", 1e-5))

    def update(self, epoch: float) -> None:
        lr = self.base_lr
        start, duration = self.p.get("lr_poly_drop_start_epoch"), int(self.p.get("lr_poly_drop_duration_epochs", 30))
        if start is not None and epoch >= start:
            lr = self.base_lr * max(0.0, (start + duration - epoch) / duration) ** 2.1
        wd_off = self.p.get("disable_wd_start_epoch")
        wd = 0.0 if wd_off is not None and epoch >= wd_off else self.base_wd
        for group in self.optimizer.param_groups:
            group["lr"], group["weight_decay"] = lr, wd


def _sections(nncf_dict: dict) -> list[dict]:
    sections = nncf_dict.get("compression", [])
    return [sections] if isinstance(sections, dict) else list(sections)


def algorithms(nncf_dict: dict) -> list[str]:
    return [section.get("algorithm") for section in _sections(nncf_dict)]


def staged_params(nncf_dict: dict) -> dict | None:
    for section in _sections(nncf_dict):
        if section.get("algorithm") in ("quantization", "binarization") and "params" in section:
            return dict(section["params"])
    return None


# ---- the compression loop --------------------------------------------------------------------------------


def is_better(stage: int, metric: float, best: tuple[int, float] | None) -> bool:
    """NNCF's rule: a higher compression stage wins; at equal stage, a higher metric."""
    return best is None or stage > best[0] or (stage == best[0] and metric > best[1])


def train_epoch(task: Task, net, ctrl, loader, optimizer, staged: StagedSchedule | None, epoch: int, device) -> float:
    """One epoch of the NNCF 2.x loop (``scheduler.step()`` per batch, ``loss + ctrl.loss()``); the mean task loss."""
    multiplier = int(staged.p.get("batch_multiplier", 1)) if staged else 1
    net.train()
    total, batches = 0.0, 0
    optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(loader):
        if ctrl is not None:
            ctrl.scheduler.step()
        if staged is not None:
            staged.update(epoch + i / max(1, len(loader)))
        task_loss = task.loss(net, batch, device)
        loss = task_loss + ctrl.loss() if ctrl is not None else task_loss
        (loss / multiplier).backward()
        if (i + 1) % multiplier == 0 or i + 1 == len(loader):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        total, batches = total + task_loss.item(), batches + 1
    return total / max(1, batches)


def save_checkpoint(path: Path, key: str, model, ctrl, optimizer, epoch: int, metric: float, stage: int, best) -> None:
    state = {
        "epoch": epoch, "arch": type(model).__name__, "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        key: metric, "compression_stage": stage, "best": best,
        "compression_state": ctrl.get_compression_state() if ctrl is not None else None,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def compress(model: nn.Module, config, loader, criterion, device, resume: dict | None):
    """(controller, compressed model); from the checkpoint's compression_state when resuming."""
    import nncompress as nncf

    if not config.get("compression"):
        return None, model  # the FP32 baseline config: plain fine-tuning
    config = nncf.torch.register_default_init_args(config, loader, criterion, device=device)
    state = resume.get("compression_state") if resume else None
    ctrl, compressed = nncf.create_compressed_model(model, config, compression_state=state)
    if resume:
        nncf.load_state(compressed, resume["state_dict"], is_resume=True)
    return ctrl, compressed


def save_stripped(ctrl, path: Path) -> None:
    """The stripped model's plain state_dict (sparsity masks baked into zeros), when strip leaves no hook: it
    loads with --weights (e.g. into the const_sparsity config)."""
    from nncompress.backends.torch.hooks import storage_of

    stripped = ctrl.strip()
    if storage_of(stripped) is None:
        torch.save(stripped.state_dict(), path)


def prepare_model(task: Task, args, settings: dict, data: SampleData, device, rank: int) -> tuple[nn.Module, float]:
    """The FP32 model (loaded or pre-trained) and its metric."""
    seed_everything(settings["seed"])
    model = task.make_model(settings, data).to(device)
    if args.weights:
        model.load_state_dict(torch.load(args.weights, map_location=device, weights_only=True))
    elif not args.resume:
        pretrain_fp32(task, model, data, settings, device, rank)
        if rank == 0:
            torch.save(model.state_dict(), Path(args.checkpoint_dir) / "fp32.pth")
    return model, evaluate(task, model, data, device)


def run_epoch(task: Task, net, ctrl, loader, optimizer, staged, epoch: int, data, device, rank: int) -> dict:
    if ctrl is not None:
        ctrl.scheduler.epoch_step()
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    start = time.perf_counter()
    loss = train_epoch(task, net, ctrl, loader, optimizer, staged, epoch, device)
    metric = evaluate(task, net, data, device)
    stage = int(ctrl.compression_stage()) if ctrl is not None else 0
    log(rank, f"epoch {epoch}: loss {loss:.4f}, {task.label} {metric:.4f}, compression stage {stage}, "
              f"{time.perf_counter() - start:.1f} s")
    if ctrl is not None:
        log(rank, ctrl.statistics().to_str())
    return {"epoch": epoch, "loss": loss, task.metric: metric, "stage": stage}


def run(task: Task, args: argparse.Namespace, local_rank: int | None = None) -> dict:
    """Pre-train (or load) the FP32 model, compress it, fine-tune, keep last/best checkpoints, export."""
    rank, world = init_distributed(local_rank, args.world_size if local_rank is not None else None)
    settings, config = load_sample_config(args, task.defaults)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", rank % torch.cuda.device_count()) if cuda else torch.device("cpu")
    Path(args.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    seed_everything(settings["seed"])
    data = task.load_data(settings)
    log(rank, f"dataset {settings.get('dataset')}: {len(data.train[0])} train / {len(data.test[0])} test, "
              f"{world} rank(s)")
    resume = torch.load(args.resume, map_location=device, weights_only=False) if args.resume else None
    model, fp32_metric = prepare_model(task, args, settings, data, device, rank)
    m = task.metric
    result: dict[str, Any] = {f"fp32_{m}": None if resume else fp32_metric, "epochs": []}
    log(rank, f"FP32 {task.label}: {fp32_metric:.4f}" if not resume
        else f"resuming from {args.resume} (epoch {resume['epoch']})")
    loader = make_loader(data.train, settings["batch_size"], settings["seed"], shuffle=True)
    ctrl, model = compress(model, config, loader, task.criterion, device, resume)
    staged_p = staged_params(config)
    # the staged scheduler's disabled quantizers and frozen RB masks get no gradients: DDP must not wait for them
    unused = bool(staged_p) or "rb_sparsity" in algorithms(config)
    net = nn.parallel.DistributedDataParallel(model, find_unused_parameters=unused) if world > 1 else model
    if ctrl is not None and world > 1:
        ctrl.distributed()
    result[f"init_{m}"] = evaluate(task, net, data, device)
    log(rank, f"{task.label} after compression init: {result[f'init_{m}']:.4f}")
    optimizer = make_optimizer(param_groups(net, settings["optimizer"]), settings["optimizer"])
    staged = StagedSchedule(staged_p, optimizer) if staged_p else None
    start, best = 0, None
    if resume:
        optimizer.load_state_dict(resume["optimizer"])
        start, best = resume["epoch"] + 1, resume.get("best")
    ckpt_dir = Path(args.checkpoint_dir)
    for epoch in range(start, settings["epochs"]):
        result["epochs"].append(run_epoch(task, net, ctrl, loader, optimizer, staged, epoch, data, device, rank))
        stage, metric = result["epochs"][-1]["stage"], result["epochs"][-1][m]
        saved = (task.checkpoint_key, model, ctrl, optimizer, epoch, metric, stage)
        if is_better(stage, metric, best):
            best = (stage, metric)
            if rank == 0:
                save_checkpoint(ckpt_dir / "best.pth", *saved, best)
        if rank == 0:
            save_checkpoint(ckpt_dir / "last.pth", *saved, best)
    result[f"final_{m}"] = evaluate(task, net, data, device)
    result["best"] = best
    if ctrl is not None and rank == 0:
        save_stripped(ctrl, ckpt_dir / "stripped.pth")
    if args.export and rank == 0:
        result["export"] = export(model, ctrl, args.export, data.test[0][:1], task.output_names)
        result |= _check_exported(task, model, args.export, data, device, rank)
    return result


def _check_exported(task: Task, model: nn.Module, path: str, data: SampleData, device, rank: int) -> dict:
    """The exported model run in ONNX Runtime / OpenVINO on the test split: its metric and its distance to PyTorch."""
    reference = predict(model, data.test[0], device, task.eval_batch)
    outputs, diff = check_export(path, data.test[0].numpy(), reference, task.eval_batch)
    metric = float(task.metric_fn(outputs, data.test))
    log(rank, f"exported {path}: {task.label} {metric:.4f}, max |exported - PyTorch| {diff['max_abs_diff']:.3g}, "
              f"mean {diff['mean_abs_diff']:.3g}")
    return {f"export_{task.metric}": metric} | diff


def _spawned(local_rank: int, task: Task, args: argparse.Namespace) -> None:
    result = run(task, args, local_rank)
    if local_rank == 0:
        print("RESULT " + json.dumps(result), flush=True)
    finish_distributed()


def main(task: Task, args: argparse.Namespace) -> None:
    """Run ``task`` with the parsed options (spawning DDP processes for --multiprocessing-distributed); the last
    line printed by rank 0 is ``RESULT {json}``."""
    if args.multiprocessing_distributed:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        torch.multiprocessing.spawn(_spawned, args=(task, args), nprocs=args.world_size, join=True)
        return
    result = run(task, args)
    if not dist.is_initialized() or dist.get_rank() == 0:
        print("RESULT " + json.dumps(result), flush=True)
    if dist.is_initialized():
        finish_distributed()
