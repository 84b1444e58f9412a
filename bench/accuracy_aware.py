"""Accuracy-aware training on the digits (scikit-learn, 16x16, 594 held out) with the classification
sample's CNN: ``early_exit`` INT8 QAT and ``adaptive_compression_level`` filter pruning, per-epoch tables.

    python bench/accuracy_aware.py                         # both shipped configs, prints the tables
    python bench/accuracy_aware.py --write                 # ... and writes the BENCHMARKS.md section
    python bench/accuracy_aware.py --config examples/classification/configs/digits_aa_adaptive_pruning.json \
        --log-dir runs/aa_pruning                          # one config; CSV/JSON log and SVG chart in log-dir

The config is a classification-sample JSON (``model``, ``pretrain_epochs``, ``batch_size``, ``optimizer``
at its root) with an ``accuracy_aware_training`` section. The FP32 model is trained first; its top-1 is the
uncompressed accuracy the budget is measured from. Accuracy figures do not depend on machine load.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "examples" / "classification"))

import torch  # noqa: E402
from sample_data import load_dataset, make_model  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import nncompress as nncf  # noqa: E402
from nncompress.training.accuracy_aware import format_table  # noqa: E402

CONFIGS = REPO / "examples" / "classification" / "configs"
SHIPPED = ("digits_aa_early_exit_int8.json", "digits_aa_adaptive_pruning.json")
TITLE = "Accuracy-aware training (digits CNN)"


def _loader(x, y, batch_size: int, seed: int, shuffle: bool) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle,
                                       generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def pretrain(model: nn.Module, loader, epochs: int) -> nn.Module:
    """FP32 training, one-cycle Adam (as the classification sample)."""
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=max(1, epochs * len(loader)))
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            sched.step()
    return model.eval()


def run_config(path: Path, log_dir: Path | None, pretrain_epochs: int | None = None, seed: int = 0) -> dict:
    """Train the FP32 model, compress it, run the config's accuracy-aware loop; the figures as a dict."""
    config = nncf.NNCFConfig.from_json(path)
    torch.manual_seed(seed)
    data = load_dataset(config.get("dataset", "digits"))
    batch = int(config.get("batch_size", 64))
    train_loader = _loader(data.x_train, data.y_train, batch, seed, shuffle=True)
    model = make_model(config.get("model", "small_cnn"), in_channels=data.x_train.shape[1])
    pretrain(model, train_loader, pretrain_epochs if pretrain_epochs is not None else config.get("pretrain_epochs", 8))
    fp32 = top1(model, data.x_test, data.y_test)
    config = nncf.torch.register_default_init_args(config, train_loader, nn.CrossEntropyLoss())
    ctrl, compressed = nncf.create_compressed_model(model, config)
    lr = float(config.get("optimizer", {}).get("base_lr", 1e-3))

    def train_epoch_fn(compression_ctrl, model, optimizer, **kwargs):
        model.train()
        for xb, yb in train_loader:
            compression_ctrl.scheduler.step()
            loss = F.cross_entropy(model(xb), yb) + compression_ctrl.loss()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    def validate_fn(model, **kwargs):
        return top1(model, data.x_test, data.y_test)

    def configure_optimizers_fn():
        return torch.optim.Adam(compressed.parameters(), lr=lr), None

    loop = nncf.torch.create_accuracy_aware_training_loop(config, ctrl, fp32)
    start = time.perf_counter()
    loop.run(compressed, train_epoch_fn, validate_fn, configure_optimizers_fn=configure_optimizers_fn,
             log_dir=log_dir)
    stats = loop.statistics
    return {"config": path.name, "mode": loop.mode, "budget": loop.params.budget_text(), "fp32_top1": fp32,
            "final_top1": top1(compressed, data.x_test, data.y_test), "statistics": stats.__dict__,
            "visited_rates": getattr(loop, "visited_rates", None), "table": format_table(loop.records),
            "seconds": time.perf_counter() - start}


def report(result: dict) -> str:
    s = result["statistics"]
    rate = "" if s["compression_rate"] is None else f", compression rate {s['compression_rate']:.4f}"
    drop = f"drop {s['accuracy_drop']:+.4f}, {s['relative_accuracy_drop']:.2f}%"
    visited = "" if not result["visited_rates"] else f"; rates set by the search: {result['visited_rates']}"
    return (f"### `{result['config']}` — {result['mode']}, {result['budget']}\n\n"
            f"FP32 top-1 {result['fp32_top1']:.4f}; returned model: epoch {s['best_epoch']}, top-1 "
            f"{s['compressed_accuracy']:.4f} ({drop}){rate}, "
            f"within budget: {'yes' if s['within_budget'] else 'no'}; {s['epochs_trained']} epochs trained; "
            f"stopped: {s['stop_reason']}{visited}.\n\n{result['table']}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", help="config JSON (repeatable; default: the shipped two)")
    parser.add_argument("--log-dir", type=Path, help="per-epoch CSV/JSON log and SVG chart (a folder per config)")
    parser.add_argument("--pretrain-epochs", type=int, help="FP32 epochs (overrides the config)")
    parser.add_argument("--write", action="store_true", help="write the BENCHMARKS.md section")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    paths = [Path(p) for p in args.config] if args.config else [CONFIGS / name for name in SHIPPED]
    results = []
    for path in paths:
        log_dir = None if args.log_dir is None else args.log_dir / path.stem
        results.append(run_config(path, log_dir, args.pretrain_epochs))
        print(report(results[-1]), flush=True)
    print("RESULT " + json.dumps([{k: v for k, v in r.items() if k != "table"} for r in results]), flush=True)
    if args.write:
        from bench import common

        command = "nice -n 5 python bench/accuracy_aware.py " + " ".join(argv if argv is not None else sys.argv[1:])
        notes = ("Accuracy figures (load-independent). `compression rate` is the fraction of filters pruned per "
                 "group (filter pruning); early_exit with INT8 has no rate. `stage`: 0 uncompressed, 1 partially, "
                 "2 fully compressed. Epoch 0 is the compressed model before any training. The per-epoch CSV/JSON "
                 f"log and SVG chart are in the log folder. {common.machine_summary()}.")
        common.write_benchmarks_section(TITLE, command, "\n".join(report(r) for r in results), notes)


if __name__ == "__main__":
    main()
