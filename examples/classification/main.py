"""Image classification with training-time compression (NNCF 2.x workflow) on offline datasets.

    python examples/classification/main.py --config examples/classification/configs/digits_int8_sym.json \
        --checkpoint-dir runs/int8 --export runs/int8/model.onnx
    torchrun --nproc_per_node 2 examples/classification/main.py --config ...     # DDP (gloo on CPU)
    python examples/classification/main.py --config ... --multiprocessing-distributed --world-size 2

Without --weights or --resume the FP32 model is trained first (``pretrain_epochs`` of the config), then
compressed with ``create_compressed_model`` and fine-tuned with the NNCF loop. The last line printed by
rank 0 is ``RESULT {json}`` with every top-1 figure (read by the tests and the benchmark).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample_data import DATASETS, load_dataset, make_model  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="NNCF-style JSON (comments allowed)")
    p.add_argument("--dataset", choices=DATASETS, help="overrides the config's dataset (default digits)")
    p.add_argument("--epochs", type=int, help="compression fine-tuning epochs (overrides the config)")
    p.add_argument("--pretrain-epochs", type=int, help="FP32 epochs when no --weights/--resume is given")
    p.add_argument("--batch-size", type=int, help="per-process batch size (overrides the config)")
    p.add_argument("--lr", type=float, help="learning rate (overrides optimizer.base_lr)")
    p.add_argument("--weights", help="FP32 state_dict to start from instead of pre-training")
    p.add_argument("--resume", help="checkpoint written by this script (state_dict + compression_state)")
    p.add_argument("--checkpoint-dir", default="runs/classification", help="where last.pth/best.pth/fp32.pth go")
    p.add_argument("--export", help="export the compressed model to this path (.onnx, or .xml for OpenVINO IR)")
    p.add_argument("--multiprocessing-distributed", action="store_true", help="spawn --world-size DDP processes")
    p.add_argument("--world-size", type=int, default=2, help="processes for --multiprocessing-distributed")
    p.add_argument("--seed", type=int, help="random seed (overrides the config; default 0)")
    return p.parse_args(argv)


def load_sample_config(args: argparse.Namespace) -> tuple[dict, Any]:
    """(training settings, NNCFConfig) from the JSON and the command line.

    The sample's own keys (model, dataset, epochs, optimizer, ...) sit at the root of the same JSON, as in
    NNCF's samples; the config schema accepts extra root keys.
    """
    import nncompress as nncf

    config = nncf.NNCFConfig.from_json(args.config)
    if "accuracy_aware_training" in config:  # this loop would ignore the section: say where it runs
        raise SystemExit(f"{args.config} has an accuracy_aware_training section: run it with "
                         "python bench/accuracy_aware.py --config ...")
    raw = dict(config)
    optimizer = dict(raw.get("optimizer", {}))
    if args.lr is not None:
        optimizer["base_lr"] = args.lr
    settings = {
        "model": raw.get("model", "small_cnn"),
        "dataset": args.dataset or raw.get("dataset", "digits"),
        "epochs": args.epochs if args.epochs is not None else raw.get("epochs", 2),
        "pretrain_epochs": args.pretrain_epochs if args.pretrain_epochs is not None else raw.get("pretrain_epochs", 8),
        "batch_size": args.batch_size or raw.get("batch_size", 64),
        "optimizer": {"type": "Adam", "base_lr": 1e-3, "weight_decay": 0.0} | optimizer,
        "seed": args.seed if args.seed is not None else raw.get("seed", 0),
    }
    return settings, config


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(rank: int, *parts: Any) -> None:
    if rank == 0:
        print(*parts, flush=True)


# ---- training pieces -----------------------------------------------------------------------------------


def make_loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, shuffle: bool) -> DataLoader:
    dataset = TensorDataset(x, y)
    sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed) if dist.is_initialized() else None
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      generator=gen, drop_last=False)


@torch.no_grad()
def top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    """Top-1 accuracy on the whole held-out split (every rank evaluates the same data)."""
    model.eval()
    correct = 0
    for start in range(0, len(x), 512):
        logits = model(x[start : start + 512].to(device))
        correct += int((logits.argmax(1).cpu() == y[start : start + 512]).sum())
    return correct / len(x)


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


def pretrain_fp32(model: nn.Module, data, settings: dict, device: torch.device, rank: int) -> None:
    """Plain FP32 training (one-cycle Adam); every rank trains the same model on its shard under DDP."""
    epochs = settings["pretrain_epochs"]
    loader = make_loader(data.x_train, data.y_train, settings["batch_size"], settings["seed"], shuffle=True)
    net = nn.parallel.DistributedDataParallel(model) if dist.is_initialized() else model
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=max(1, epochs * len(loader)))
    for epoch in range(epochs):
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        net.train()
        for xb, yb in loader:
            loss = F.cross_entropy(net(xb.to(device)), yb.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
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


def algorithms(nncf_dict: dict) -> list[str]:
    sections = nncf_dict.get("compression", [])
    return [section.get("algorithm") for section in ([sections] if isinstance(sections, dict) else sections)]


def staged_params(nncf_dict: dict) -> dict | None:
    sections = nncf_dict.get("compression", [])
    for section in [sections] if isinstance(sections, dict) else sections:
        if section.get("algorithm") in ("quantization", "binarization") and "params" in section:
            return dict(section["params"])
    return None


# ---- the compression loop --------------------------------------------------------------------------------


def is_better(stage: int, acc: float, best: tuple[int, float] | None) -> bool:
    """NNCF's rule: a higher compression stage wins; at equal stage, a higher top-1."""
    return best is None or stage > best[0] or (stage == best[0] and acc > best[1])


def train_epoch(net, ctrl, loader, optimizer, staged: StagedSchedule | None, epoch: int, device) -> float:
    """One epoch of the NNCF 2.x loop; returns the mean task loss."""
    multiplier = int(staged.p.get("batch_multiplier", 1)) if staged else 1
    net.train()
    total, batches = 0.0, 0
    optimizer.zero_grad(set_to_none=True)
    for i, (xb, yb) in enumerate(loader):
        if ctrl is not None:
            ctrl.scheduler.step()
        if staged is not None:
            staged.update(epoch + i / max(1, len(loader)))
        task_loss = F.cross_entropy(net(xb.to(device)), yb.to(device))
        loss = task_loss + ctrl.loss() if ctrl is not None else task_loss
        (loss / multiplier).backward()
        if (i + 1) % multiplier == 0 or i + 1 == len(loader):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        total, batches = total + task_loss.item(), batches + 1
    return total / max(1, batches)


def save_checkpoint(path: Path, model, ctrl, optimizer, epoch: int, acc: float, stage: int, best) -> None:
    state = {
        "epoch": epoch, "arch": type(model).__name__, "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "acc1": acc, "compression_stage": stage, "best": best,
        "compression_state": ctrl.get_compression_state() if ctrl is not None else None,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def compress(model: nn.Module, config, loader, device, resume: dict | None):
    """(controller, compressed model); from the checkpoint's compression_state when resuming."""
    import nncompress as nncf

    if not config.get("compression"):
        return None, model  # the FP32 baseline config: plain fine-tuning
    config = nncf.torch.register_default_init_args(config, loader, nn.CrossEntropyLoss(), device=device)
    state = resume.get("compression_state") if resume else None
    ctrl, compressed = nncf.create_compressed_model(model, config, compression_state=state)
    if resume:
        nncf.load_state(compressed, resume["state_dict"], is_resume=True)
    return ctrl, compressed


def prepare_model(args, settings: dict, data, device, rank: int) -> tuple[nn.Module, float]:
    """The FP32 model (loaded or pre-trained) and its top-1."""
    torch.manual_seed(settings["seed"])
    model = make_model(settings["model"], in_channels=data.x_train.shape[1]).to(device)
    if args.weights:
        model.load_state_dict(torch.load(args.weights, map_location=device, weights_only=True))
    elif not args.resume:
        pretrain_fp32(model, data, settings, device, rank)
        if rank == 0:
            torch.save(model.state_dict(), Path(args.checkpoint_dir) / "fp32.pth")
    return model, top1(model, data.x_test, data.y_test, device)


def run(args: argparse.Namespace, local_rank: int | None = None) -> dict:
    rank, world = init_distributed(local_rank, args.world_size if local_rank is not None else None)
    settings, config = load_sample_config(args)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", rank % torch.cuda.device_count()) if cuda else torch.device("cpu")
    Path(args.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    data = load_dataset(settings["dataset"])
    log(rank, f"dataset {settings['dataset']}: {len(data.x_train)} train / {len(data.x_test)} test, {world} rank(s)")
    resume = torch.load(args.resume, map_location=device, weights_only=False) if args.resume else None
    model, fp32_acc = prepare_model(args, settings, data, device, rank)
    result: dict[str, Any] = {"fp32_top1": None if resume else fp32_acc, "epochs": []}
    log(rank, f"FP32 top-1: {fp32_acc:.4f}" if not resume else f"resuming from {args.resume} (epoch {resume['epoch']})")
    loader = make_loader(data.x_train, data.y_train, settings["batch_size"], settings["seed"], shuffle=True)
    ctrl, model = compress(model, config, loader, device, resume)
    staged_p = staged_params(config)
    # the staged scheduler's disabled quantizers and frozen RB masks get no gradients: DDP must not wait for them
    unused = bool(staged_p) or "rb_sparsity" in algorithms(config)
    net = nn.parallel.DistributedDataParallel(model, find_unused_parameters=unused) if world > 1 else model
    if ctrl is not None and world > 1:
        ctrl.distributed()
    result["init_top1"] = top1(net, data.x_test, data.y_test, device)
    log(rank, f"top-1 after compression init: {result['init_top1']:.4f}")
    optimizer = make_optimizer(param_groups(net, settings["optimizer"]), settings["optimizer"])
    staged = StagedSchedule(staged_p, optimizer) if staged_p else None
    start, best = 0, None
    if resume:
        optimizer.load_state_dict(resume["optimizer"])
        start, best = resume["epoch"] + 1, resume.get("best")
    for epoch in range(start, settings["epochs"]):
        result["epochs"].append(run_epoch(net, model, ctrl, loader, optimizer, staged, epoch, data, device, rank, args))
        stage, acc = result["epochs"][-1]["stage"], result["epochs"][-1]["top1"]
        if is_better(stage, acc, best):
            best = (stage, acc)
            if rank == 0:
                save_checkpoint(Path(args.checkpoint_dir) / "best.pth", model, ctrl, optimizer, epoch, acc, stage, best)
        if rank == 0:
            save_checkpoint(Path(args.checkpoint_dir) / "last.pth", model, ctrl, optimizer, epoch, acc, stage, best)
    result["final_top1"] = top1(net, data.x_test, data.y_test, device)
    result["best"] = best
    if ctrl is not None and rank == 0:
        save_stripped(ctrl, Path(args.checkpoint_dir) / "stripped.pth")
    if args.export and rank == 0:
        result["export"] = export(model, ctrl, args.export, data.x_test[:1])
    return result


def run_epoch(net, model, ctrl, loader, optimizer, staged, epoch: int, data, device, rank: int, args) -> dict:
    if ctrl is not None:
        ctrl.scheduler.epoch_step()
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    start = time.perf_counter()
    loss = train_epoch(net, ctrl, loader, optimizer, staged, epoch, device)
    acc = top1(net, data.x_test, data.y_test, device)
    stage = int(ctrl.compression_stage()) if ctrl is not None else 0
    log(rank, f"epoch {epoch}: loss {loss:.4f}, top-1 {acc:.4f}, compression stage {stage}, "
              f"{time.perf_counter() - start:.1f} s")
    if ctrl is not None:
        log(rank, ctrl.statistics().to_str())
    return {"epoch": epoch, "loss": loss, "top1": acc, "stage": stage}


def export(model: nn.Module, ctrl, path: str, example: torch.Tensor) -> str:
    """The compressed model as standard ONNX QDQ (or OpenVINO IR for .xml); plain ONNX for the FP32 config."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if ctrl is not None:
        fmt = "openvino" if path.endswith(".xml") else "onnx"
        ctrl.export_model(path, save_format=fmt)
    else:
        model.eval()
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is the one we want
        torch.onnx.export(model, (example.to(next(model.parameters()).device),), path, dynamo=False, opset_version=13,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


def save_stripped(ctrl, path: Path) -> None:
    """The stripped model's plain state_dict (sparsity masks baked into zeros), when strip leaves no hook: it
    loads with --weights (e.g. into the const_sparsity config)."""
    from nncompress.backends.torch.hooks import storage_of

    stripped = ctrl.strip()
    if storage_of(stripped) is None:
        torch.save(stripped.state_dict(), path)


def _finish_distributed() -> None:
    """Free DDP's reducer (it sits in reference cycles and holds the group), then destroy the group."""
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def _spawned(local_rank: int, args: argparse.Namespace) -> None:
    result = run(args, local_rank)
    if local_rank == 0:
        print("RESULT " + json.dumps(result), flush=True)
    _finish_distributed()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.multiprocessing_distributed:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        torch.multiprocessing.spawn(_spawned, args=(args,), nprocs=args.world_size, join=True)
        return
    result = run(args)
    if not dist.is_initialized() or dist.get_rank() == 0:
        print("RESULT " + json.dumps(result), flush=True)
    if dist.is_initialized():
        _finish_distributed()


if __name__ == "__main__":
    main()
