"""Binarization benchmark: the digits CNN in FP32 vs XNOR and DoReFa binarization (weights and activations)
after staged training (`create_compressed_model` + the NNCF 2.x loop).

    python bench/binarization.py                 # everything; writes the BENCHMARKS.md section
    python bench/binarization.py --epochs 3 --no-write --allow-busy   # a quick check

Figures: top-1 on 594 held-out digits of the FP32 CNN (bench/ptq.py's), of the same CNN fine-tuned in FP32
with the same schedule, and of XNOR / DoReFa binarization after each staged epoch; the time per training
epoch of each (the three runs' epochs interleaved, FP32, XNOR, DoReFa, ratio per epoch); the exported ONNX
(±1 int8 weight codes + DequantizeLinear, Greater/Cast/Mul activations) in ONNX Runtime vs PyTorch: top-1
agreement and the largest logit difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nncompress as nncf  # noqa: E402
from bench import common, harness  # noqa: E402
from examples import digits_cnn as digits  # noqa: E402

BATCH = 32
MODES = ("xnor", "dorefa")
BASE_LR = 1e-3


def staged_params(epochs: int) -> dict:
    """Activations from epoch 1, weights from 2, poly LR drop and weight decay off over the last third."""
    drop = max(2, epochs - max(1, epochs // 3))
    return {"activations_quant_start_epoch": 1, "weights_quant_start_epoch": min(2, epochs - 1),
            "lr_poly_drop_start_epoch": drop, "lr_poly_drop_duration_epochs": max(1, epochs - drop),
            "disable_wd_start_epoch": drop, "base_lr": BASE_LR, "base_wd": 1e-5}


def _loader(data) -> torch.utils.data.DataLoader:
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(data.x_train), torch.from_numpy(data.y_train))
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True,
                                       generator=torch.Generator().manual_seed(0))


def compress(model, data, mode: str, epochs: int):
    config = nncf.NNCFConfig.from_dict({
        "input_info": {"sample_size": [1, 1, 16, 16]},
        "compression": {"algorithm": "binarization", "mode": mode, "initializer": {"range": {"num_init_samples": 512}},
                        "params": staged_params(epochs)},
    })
    config = nncf.torch.register_default_init_args(config, _loader(data), torch.nn.CrossEntropyLoss())
    return nncf.create_compressed_model(model, config)


class Run:
    """One model trained epoch by epoch (FP32: the same LR/WD schedule, nothing compressed)."""

    def __init__(self, name: str, model, ctrl, data, epochs: int):
        self.name, self.model, self.ctrl, self.data = name, model, ctrl, data
        self.loader = _loader(data)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=BASE_LR, weight_decay=1e-5)
        if ctrl is not None:
            ctrl.scheduler.attach_optimizer(self.optimizer)
        else:  # FP32: the staged LR/WD schedule through a scheduler with no binarizers to drive
            from nncompress.training.config.spec import StagedParams
            from nncompress.training.schedulers import StagedQuantizationScheduler

            self.schedule = StagedQuantizationScheduler(StagedParams(**staged_params(epochs)), lambda g, on: None,
                                                        lambda g: None)
            self.schedule.attach_optimizer(self.optimizer)
        self.top1: list[float] = []
        self.stages: list[int] = []

    @property
    def scheduler(self):
        return self.ctrl.scheduler if self.ctrl is not None else self.schedule

    def epoch(self) -> float:
        """Train one epoch; returns its wall time in seconds (evaluation excluded)."""
        self.scheduler.epoch_step()
        self.model.train()
        start = time.perf_counter()
        for x, y in self.loader:
            self.scheduler.step()
            loss = F.cross_entropy(self.model(x), y)
            if self.ctrl is not None:
                loss = loss + self.ctrl.loss()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        elapsed = time.perf_counter() - start
        self.top1.append(digits.accuracy_torch(self.model, self.data.x_test, self.data.y_test))
        self.stages.append(int(self.ctrl.compression_stage()) if self.ctrl is not None else 0)
        return elapsed


def train_interleaved(runs: list[Run], epochs: int) -> tuple[dict, harness.LoadRecord]:
    """Every run's epochs in rounds (FP32, XNOR, DoReFa, FP32, ...); epoch times per run."""
    times: dict[str, list[float]] = {run.name: [] for run in runs}
    load = harness.LoadRecord()
    for _ in range(epochs):
        load.read()
        for run in runs:
            times[run.name].append(run.epoch())
    load.read()
    return {name: harness.Spread(tuple(v)) for name, v in times.items()}, load


def onnx_parity(ctrl, model, data, tmp: Path, name: str) -> dict:
    """Top-1 agreement and largest logit difference of the exported ONNX in ONNX Runtime vs PyTorch."""
    import onnx
    import onnxruntime as ort

    path = ctrl.export_model(str(tmp / f"{name}.onnx"))
    proto = onnx.load(str(path))
    ops = [node.op_type for node in proto.graph.node]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(data.x_test)
    out = session.run(None, {session.get_inputs()[0].name: x})[0]
    model.eval()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    return {"ort_agreement": float((out.argmax(1) == ref.argmax(1)).mean()),
            "ort_top1": float((out.argmax(1) == data.y_test).mean()),
            "ort_max_abs_diff": float(np.abs(out - ref).max()),
            "dequantize_nodes": ops.count("DequantizeLinear"), "greater_nodes": ops.count("Greater")}


def run_all(epochs: int) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(common.NUM_THREADS)
    data = digits.load_digits_data()
    fp32 = digits.get_trained_digits_cnn()
    result = {"epochs": epochs, "fp32_top1": digits.accuracy_torch(fp32, data.x_test, data.y_test)}
    runs = [Run("fp32", digits.get_trained_digits_cnn(), None, data, epochs)]
    for mode in MODES:
        ctrl, model = compress(fp32, data, mode, epochs)
        runs.append(Run(mode, model, ctrl, data, epochs))
        result[f"{mode}_binarized_convs"] = len(ctrl.layers)
        result[f"{mode}_init_top1"] = digits.accuracy_torch(model, data.x_test, data.y_test)
    times, load = train_interleaved(runs, epochs)
    result["epoch_load"], result["epoch_busy"] = load.describe(), load.busy
    for run in runs:
        result[run.name] = {"epoch_top1": run.top1, "stages": run.stages, "epoch_s": times[run.name].as_dict()}
        if run.name != "fp32":
            result[run.name]["epoch_ratio"] = harness.ratio(times[run.name], times["fp32"]).as_dict()
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs[1:]:
            result[run.name] |= onnx_parity(run.ctrl, run.model, data, Path(tmp), run.name)
    return result


def _pct(value: float) -> str:
    return f"{value * 100:.2f}%"


def _spread(figure: dict, spec: str) -> str:
    return f"{figure['median']:{spec}} ({figure['min']:{spec}}-{figure['max']:{spec}})"


def table(r: dict) -> str:
    rows = [["FP32 (pre-trained)", _pct(r["fp32_top1"]), "-", "-", "-", "-", "-"]]
    fp = r["fp32"]
    rows.append([f"FP32 fine-tuned, same schedule ({r['epochs']} epochs)", _pct(fp["epoch_top1"][-1]),
                 f"{(fp['epoch_top1'][-1] - r['fp32_top1']) * 100:+.2f} pp", _spread(fp["epoch_s"], ".2f"), "1",
                 "-", "-"])
    for mode in MODES:
        m = r[mode]
        rows.append([
            f"{mode.upper()} W + {{0,S}} A, staged ({r[f'{mode}_binarized_convs']} of 5 convs)",
            _pct(m["epoch_top1"][-1]), f"{(m['epoch_top1'][-1] - r['fp32_top1']) * 100:+.2f} pp",
            _spread(m["epoch_s"], ".2f"), _spread(m["epoch_ratio"], ".2f"),
            f"{_pct(m['ort_agreement'])} ({_pct(m['ort_top1'])})", f"{m['ort_max_abs_diff']:.1e}",
        ])
    headers = ["model", "top-1", "vs FP32", "s / epoch", "epoch / FP32 epoch", "ORT top-1 agreement (ORT top-1)",
               "max |logit diff| ORT vs PyTorch"]
    per_epoch = [["per-epoch top-1 (stage): " + name,
                  ", ".join(f"{_pct(a)} ({s})" for a, s in zip(r[name]["epoch_top1"], r[name]["stages"]))]
                 for name in ("fp32", *MODES)]
    return common.markdown_table(headers, rows) + "\n\n" + common.markdown_table(["run", "epochs"], per_epoch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10, help="staged training epochs (default 10, at least 3)")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--allow-busy", action="store_true", help="measure even when the load exceeds the cores")
    args = parser.parse_args()
    if args.epochs < 3:
        parser.error("--epochs must be at least 3 (activations from epoch 1, weights from epoch 2)")
    harness.require_quiet(args.allow_busy)
    result = run_all(args.epochs)
    print(json.dumps(result, indent=1))
    text = table(result)
    print(text)
    if not args.no_write:
        p = staged_params(args.epochs)
        notes = (
            f"{harness.provenance('python bench/binarization.py')} Epoch-time load: {result['epoch_load']}"
            f"{' (BUSY)' if result['epoch_busy'] else ''}. Digits CNN of bench/ptq.py (5 convolutions, one residual "
            "add, linear head), 1,203 training / 594 held-out images, batch 32, no augmentation, no distillation. "
            "Binarization: every convolution but the first (kept FP32 by default, as the reference's configs); "
            "activation scales from the top-0.1% value over 512 images. Staged schedule (the reference's, "
            f"shortened): activations from epoch {p['activations_quant_start_epoch']}, weights from epoch "
            f"{p['weights_quant_start_epoch']}, Adam at base_lr {BASE_LR}, poly LR drop from epoch "
            f"{p['lr_poly_drop_start_epoch']} over {p['lr_poly_drop_duration_epochs']} epochs, weight decay "
            f"{p['base_wd']} until then and 0 after, driven by `ctrl.scheduler.attach_optimizer`; the FP32 row is "
            "fine-tuned with the same LR/WD schedule. Epoch times: the three runs' epochs interleaved (one FP32, one "
            f"XNOR, one DoReFa epoch per round), {common.NUM_THREADS} torch threads, evaluation excluded; the ratio "
            "is taken per round. ONNX: `ctrl.export_model`, ONNX Runtime CPU on the 594 test images."
        )
        common.write_benchmarks_section("Binarization (XNOR, DoReFa)", "python bench/binarization.py", text, notes)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
