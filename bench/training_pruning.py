"""Filter pruning through ``create_compressed_model``: a residual CNN with depthwise convs and a concat
(bench/pruning.py's ``ResidualDWNet``, 1 input channel) trained on the digits (16x16, 594 held out),
pruned to 30% fewer modelled FLOPs (``pruning_flops_target`` 0.3, exponential schedule) and fine-tuned
with the NNCF 2.x loop; the stripped/exported model has the pruned channels removed.

    python bench/training_pruning.py [--allow-busy] [--pretrain-epochs 15] [--epochs 6] [--limit N]

Figures: FP32 vs pruned top-1 (target: within 1 pp), epochs and wall time of the fine-tune, parameters,
modelled FLOPs and bytes (PyTorch state, ONNX, OpenVINO IR) of the full vs the exported model, and ONNX
Runtime / OpenVINO latency of the full vs the shrunk model, interleaved in one process (ratio per round).
``pruning_rows(args)`` returns them as rows for bench/training_compression.py; it does not write
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import nncompress as nncf  # noqa: E402
from bench import common, harness  # noqa: E402
from bench.pruning import ResidualDWNet  # noqa: E402
from examples import digits_cnn as digits  # noqa: E402

FLOPS_TARGET = 0.3
BATCH = 32
CONFIG = {
    "input_info": {"sample_size": [1, 1, 16, 16]},
    "compression": {
        "algorithm": "filter_pruning",
        "pruning_init": 0.1,
        "initializer": {"batchnorm_adaptation": {"num_bn_adaptation_samples": 512}},
        "params": {"schedule": "exponential", "pruning_flops_target": FLOPS_TARGET, "pruning_steps": 3},
    },
}
DEFAULTS = {"pretrain_epochs": 15, "epochs": 6, "limit": None, "lr": 5e-4, "seed": 0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``pruning_rows`` reads (bench/training_compression.py may add them to its parser)."""
    parser.add_argument("--pretrain-epochs", type=int, default=DEFAULTS["pretrain_epochs"])
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="pruning fine-tune epochs")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images only (smoke runs)")


def _option(args, name: str):
    value = getattr(args, name, None)
    return DEFAULTS[name] if value is None else value


def _loader(x: np.ndarray, y: np.ndarray, seed: int) -> torch.utils.data.DataLoader:
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def train_fp32(loader, epochs: int, seed: int) -> torch.nn.Module:
    """A fresh ResidualDWNet trained with Adam and a one-cycle schedule; eval mode."""
    torch.manual_seed(seed)
    model = ResidualDWNet(classes=digits.NUM_CLASSES, in_channels=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=max(1, epochs * len(loader)))
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


QUANTIZATION = {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 512}}}


def fine_tune(fp32: torch.nn.Module, loader, epochs: int, lr: float, config: dict = CONFIG):
    """(controller, compressed model in eval mode) after ``epochs`` of the NNCF 2.x loop."""
    config = nncf.torch.register_default_init_args(nncf.NNCFConfig.from_dict(config), loader,
                                                   torch.nn.CrossEntropyLoss())
    ctrl, model = nncf.create_compressed_model(fp32, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        ctrl.scheduler.epoch_step()
        model.train()
        for x, y in loader:
            ctrl.scheduler.step()
            loss = F.cross_entropy(model(x), y) + ctrl.loss()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return ctrl, model.eval()


def _latency_ms(run) -> float:
    return 1000.0 / harness.rate(run, 1, 1.0)()


def _exports(full: torch.nn.Module, ctrl, tmp: Path) -> dict:
    import openvino as ov

    from nncompress.backends.torch.export import export_onnx

    x = torch.zeros(1, 1, 16, 16)
    paths = {"full": export_onnx(full, tmp / "full.onnx", x), "pruned": ctrl.export_model(tmp / "pruned.onnx")}
    return {name: (path, ov.convert_model(str(path))) for name, path in paths.items()}


def _latencies(exports: dict) -> tuple[dict, object]:
    x = np.zeros((1, 1, 16, 16), np.float32)
    runs = {}
    for name, (path, ov_model) in exports.items():
        ort_run, _ = common.onnx_run(path, x)
        ov_run, _ = common.openvino_run(ov_model, x)
        runs[f"ort {name}"] = lambda run=ort_run: _latency_ms(run)
        runs[f"ov {name}"] = lambda run=ov_run: _latency_ms(run)
    return harness.interleaved(runs)


def _row(figure: str, full, pruned, ratio=None) -> dict:
    if ratio is None and isinstance(full, (int, float)) and full:
        ratio = f"{pruned / full:.3f}"
    return {"algorithm": "filter_pruning", "figure": figure, "full": full, "pruned": pruned, "ratio": ratio}


def pruning_rows(args) -> list[dict]:
    """Rows ``{"algorithm", "figure", "full", "pruned", "ratio"}``: accuracy, training, size and latency
    figures of the filter-pruning benchmark (``args``: pretrain_epochs, epochs, limit; missing ones take
    the defaults)."""
    data = digits.load_digits_data()
    limit, seed = _option(args, "limit"), DEFAULTS["seed"]
    loader = _loader(data.x_train[:limit], data.y_train[:limit], seed)
    fp32 = train_fp32(loader, _option(args, "pretrain_epochs"), seed)
    fp32_top1 = digits.accuracy_torch(fp32, data.x_test, data.y_test)
    start = time.perf_counter()
    ctrl, pruned = fine_tune(fp32, loader, _option(args, "epochs"), DEFAULTS["lr"])
    seconds = time.perf_counter() - start
    pruned_top1 = digits.accuracy_torch(pruned, data.x_test, data.y_test)
    shrunk = ctrl.strip()
    cost = ctrl.pruned_cost()
    with tempfile.TemporaryDirectory() as tmp:
        exports = _exports(fp32, ctrl, Path(tmp))
        ort_top1 = float((digits.predict_onnx(_onnx(exports["pruned"][0]), data.x_test) == data.y_test).mean())
        ov_top1 = float((digits.predict_openvino(exports["pruned"][1], data.x_test) == data.y_test).mean())
        onnx_b = {k: common.onnx_size_bytes(p) for k, (p, _) in exports.items()}
        ov_b = {k: common.openvino_size_bytes(m) for k, (_, m) in exports.items()}
        spreads, load = _latencies(exports)
    params = (sum(p.numel() for p in fp32.parameters()), sum(p.numel() for p in shrunk.parameters()))
    stacked = stacked_rows(fp32, loader, data, _option(args, "epochs"))
    return [
        _row("top-1 (PyTorch)", f"{fp32_top1:.4f}", f"{pruned_top1:.4f}", f"{100 * (pruned_top1 - fp32_top1):+.2f} pp"),
        _row("top-1 of the pruned export (ONNX Runtime / OpenVINO)", None, f"{ort_top1:.4f} / {ov_top1:.4f}"),
        _row("fine-tune epochs / wall s", None, f"{_option(args, 'epochs')} / {seconds:.1f}"),
        _row("compression stage", None, ctrl.compression_stage().name),
        _row("parameters", *params),
        _row("modelled MFLOPs", round(ctrl.full.flops / 1e6, 3), round(cost.flops / 1e6, 3)),
        _row("PyTorch state bytes", common.torch_state_bytes(fp32), common.torch_state_bytes(shrunk)),
        _row("ONNX bytes", onnx_b["full"], onnx_b["pruned"]),
        _row("OpenVINO IR bytes", ov_b["full"], ov_b["pruned"]),
        _row("ONNX Runtime latency ms", spreads["ort full"].format(".3f"), spreads["ort pruned"].format(".3f"),
             harness.ratio(spreads["ort pruned"], spreads["ort full"]).format(".3f")),
        _row("OpenVINO latency ms", spreads["ov full"].format(".3f"), spreads["ov pruned"].format(".3f"),
             harness.ratio(spreads["ov pruned"], spreads["ov full"]).format(".3f")),
        _row("load during latency", None, load.describe()),
        *stacked,
    ]


def stacked_rows(fp32: torch.nn.Module, loader, data, epochs: int) -> list[dict]:
    """Filter pruning + INT8 QAT in one config: fine-tune, export (ONNX QDQ, OpenVINO IR), compare with PyTorch."""
    import onnxruntime as ort
    import openvino as ov

    config = dict(CONFIG, compression=[CONFIG["compression"], QUANTIZATION])
    ctrl, model = fine_tune(fp32, loader, epochs, DEFAULTS["lr"], config)
    with torch.no_grad():
        want = model(torch.from_numpy(data.x_test)).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = ctrl.export_model(Path(tmp) / "stacked.onnx")
        ov_path = ctrl.export_model(Path(tmp) / "stacked.xml", save_format="openvino")
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        got = {"ONNX Runtime": session.run(None, {session.get_inputs()[0].name: data.x_test})[0]}
        compiled = ov.Core().compile_model(str(ov_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        got["OpenVINO"] = np.asarray(compiled(data.x_test)[0])
        size = onnx_path.stat().st_size
    top1 = float((want.argmax(1) == data.y_test).mean())
    rows = [_row("pruning + INT8 QAT: top-1 (PyTorch), stage", None, f"{top1:.4f}, {ctrl.compression_stage().name}"),
            _row("pruning + INT8 export: ONNX bytes (QDQ, int8 weights)", None, size)]
    for name, out in got.items():
        agreement = float((out.argmax(1) == want.argmax(1)).mean())
        difference = f"{float(np.abs(out - want).max()):.4f} of {float(np.abs(want).max()):.2f}"
        rows.append(_row(f"pruning + INT8 export, {name}: top-1 agreement with PyTorch, max abs difference", None,
                         f"{100 * agreement:.2f}%, {difference}"))
    return rows


def _onnx(path: Path):
    import onnx

    return onnx.load(str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allow-busy", action="store_true", help="measure even when the load exceeds the cores")
    add_arguments(parser)
    args = parser.parse_args()
    harness.require_quiet(args.allow_busy)
    rows = pruning_rows(args)
    table = [[r["figure"], r["full"] if r["full"] is not None else "-", r["pruned"], r["ratio"] or "-"] for r in rows]
    print(common.markdown_table(["figure", "FP32 / full", "pruned", "pruned/full"], table))
    print(f"\npruning_flops_target {FLOPS_TARGET}, exponential schedule over 3 epochs from 0.1, BN adaptation "
          "512 samples")
    print(harness.provenance("python bench/training_pruning.py"))


if __name__ == "__main__":
    main()
