"""Quantization-aware training benchmark (`create_compressed_model` + the NNCF 2.x loop) on the digits CNN.

    python bench/qat.py                     # everything; writes the BENCHMARKS.md section
    python bench/qat.py --case memory:qat   # one memory figure in this process, printed as JSON

Figures: top-1 on 594 held-out digits of the FP32 CNN (the one bench/ptq.py quantizes), of post-training
INT8 (`nncompress.quantize`, 300 calibration images) and of INT8 QAT after each of <= 2 epochs; top-1
agreement of the exported ONNX (QDQ) in ONNX Runtime and in OpenVINO with the PyTorch QAT model; the QAT
training-step time over the FP32 step time (interleaved in one process, ratio per round); the training
memory of both (parameter + buffer bytes, and the peak-RSS rise over 20 training steps, each in its own
process).
"""

from __future__ import annotations

import argparse
import copy
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
QAT_LR = 1e-4
STEPS_PER_FIGURE = 10
STEP_THREADS = 1
MEMORY_STEPS = 20
QAT_CONFIG = {
    "input_info": {"sample_size": [1, 1, 16, 16]},
    "compression": {
        "algorithm": "quantization",
        "initializer": {"range": {"num_init_samples": 512}, "batchnorm_adaptation": {"num_bn_adaptation_samples": 512}},
    },
}


def _loader(data, shuffle: bool = True) -> torch.utils.data.DataLoader:
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(data.x_train), torch.from_numpy(data.y_train))
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=shuffle,
                                       generator=torch.Generator().manual_seed(0))


def compress(model: torch.nn.Module, data):
    """(controller, QAT model) of the default INT8 config, ranges from the training images."""
    config = nncf.NNCFConfig.from_dict(QAT_CONFIG)
    config = nncf.torch.register_default_init_args(config, _loader(data), torch.nn.CrossEntropyLoss())
    return nncf.create_compressed_model(model, config)


def train_epoch(model, ctrl, loader, optimizer) -> None:
    """One epoch of the NNCF 2.x loop."""
    ctrl.scheduler.epoch_step()
    model.train()
    for x, y in loader:
        ctrl.scheduler.step()
        loss = F.cross_entropy(model(x), y) + ctrl.loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def ptq_accuracy(model, data) -> float:
    calibration = nncf.Dataset(list(data.x_train[:300]), lambda image: torch.from_numpy(image[None]))
    return digits.accuracy_torch(nncf.quantize(model, calibration), data.x_test, data.y_test)


def export_agreement(ctrl, qat_model, data, tmp: Path) -> dict:
    """Top-1 agreement (and accuracy) of the exported ONNX in ONNX Runtime and OpenVINO vs PyTorch."""
    import onnx

    path = tmp / "qat.onnx"
    ctrl.export_model(str(path))
    reference = digits.predict_torch(qat_model, data.x_test)
    proto = onnx.load(str(path))
    qdq = sum(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in proto.graph.node)
    ort_pred = digits.predict_onnx(proto, data.x_test)
    ov_pred = digits.predict_openvino(digits.to_openvino(path), data.x_test)
    return {
        "qdq_nodes": qdq,
        "ort_agreement": float((ort_pred == reference).mean()), "ort_top1": float((ort_pred == data.y_test).mean()),
        "ov_agreement": float((ov_pred == reference).mean()), "ov_top1": float((ov_pred == data.y_test).mean()),
    }


def accuracy_figures(data, qat_epochs: int) -> tuple[dict, torch.nn.Module, object, torch.nn.Module]:
    fp32 = digits.get_trained_digits_cnn()
    figures = {"fp32_top1": digits.accuracy_torch(fp32, data.x_test, data.y_test)}
    figures["ptq_top1"] = ptq_accuracy(fp32, data)
    start = time.perf_counter()
    ctrl, qat = compress(fp32, data)
    figures["create_compressed_model_s"] = time.perf_counter() - start
    figures["qat_init_top1"] = digits.accuracy_torch(qat, data.x_test, data.y_test)
    optimizer = torch.optim.Adam(qat.parameters(), lr=QAT_LR)
    loader = _loader(data)
    figures["qat_epoch_top1"] = []
    for _ in range(qat_epochs):
        train_epoch(qat, ctrl, loader, optimizer)
        figures["qat_epoch_top1"].append(digits.accuracy_torch(qat, data.x_test, data.y_test))
    figures["qat_top1"] = figures["qat_epoch_top1"][-1] if qat_epochs else figures["qat_init_top1"]
    return figures, fp32, ctrl, qat


def _step_runner(model, ctrl, x, y):
    """A figure-returning run: seconds per training step, averaged over STEPS_PER_FIGURE steps."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)

    def run() -> float:
        model.train()
        start = time.perf_counter()
        for _ in range(STEPS_PER_FIGURE):
            loss = F.cross_entropy(model(x), y)
            if ctrl is not None:
                ctrl.scheduler.step()
                loss = loss + ctrl.loss()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return (time.perf_counter() - start) / STEPS_PER_FIGURE

    return run


def step_time_figures(fp32, ctrl, qat, data) -> dict:
    """FP32 and QAT training steps interleaved (batch 32), ratio per round."""
    x, y = torch.from_numpy(data.x_train[:BATCH]), torch.from_numpy(data.y_train[:BATCH])
    runs = {"fp32": _step_runner(copy.deepcopy(fp32), None, x, y), "qat": _step_runner(qat, ctrl, x, y)}
    threads = torch.get_num_threads()
    torch.set_num_threads(STEP_THREADS)  # one thread: an oversubscribed machine stalls OpenMP barriers
    try:
        spreads, load = harness.interleaved(runs)
    finally:
        torch.set_num_threads(threads)
    ratio = harness.ratio(spreads["qat"], spreads["fp32"])
    return {
        "fp32_step_ms": _spread_ms(spreads["fp32"]), "qat_step_ms": _spread_ms(spreads["qat"]),
        "step_ratio": ratio.as_dict(), "step_load": load.describe(), "step_busy": load.busy,
    }


def _spread_ms(spread: harness.Spread) -> dict:
    return harness.Spread(tuple(v * 1000 for v in spread.values)).as_dict()


def saved_for_backward_bytes(model, ctrl, x, y) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward pass of one training step."""
    seen: dict[tuple[int, int], int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = F.cross_entropy(model(x), y) + (ctrl.loss() if ctrl is not None else 0)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_case(kind: str) -> dict:
    """Parameter + buffer bytes and the peak-RSS rise over MEMORY_STEPS training steps of one model."""
    data = digits.load_digits_data()
    model, ctrl = digits.get_trained_digits_cnn(), None
    if kind == "qat":
        ctrl, model = compress(model, data)
    x, y = torch.from_numpy(data.x_train[:BATCH]), torch.from_numpy(data.y_train[:BATCH])
    run = _step_runner(model, ctrl, x, y)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        reset = True
    except OSError:
        reset = False
    before = _rss_kib("VmRSS")
    for _ in range(MEMORY_STEPS // STEPS_PER_FIGURE):
        run()
    saved = saved_for_backward_bytes(model, ctrl, x, y)
    return {
        "case": f"memory:{kind}", "state_bytes": common.torch_state_bytes(model), "saved_for_backward_bytes": saved,
        "train_rss_rise_mb": (_rss_kib("VmHWM") - before) / 1024, "hwm_reset": reset,
        "quantizers": len(ctrl.quantizers()) if ctrl is not None else 0,
    }


def _pct(value: float) -> str:
    return f"{value * 100:.2f}%"


def _spread(figure: dict, spec: str) -> str:
    return f"{figure['median']:{spec}} ({figure['min']:{spec}}-{figure['max']:{spec}})"


def table(r: dict) -> str:
    epochs = ", ".join(_pct(a) for a in r["qat_epoch_top1"])
    mem = {m["case"]: m for m in r["memory"]}
    fp32_mem, qat_mem = mem.get("memory:fp32"), mem.get("memory:qat")
    rows = [
        ["FP32 top-1 (PyTorch)", _pct(r["fp32_top1"])],
        ["post-training INT8 top-1 (`nncompress.quantize`, 300 images)", _pct(r["ptq_top1"])],
        ["QAT INT8 top-1 after range init + BN adaptation (epoch 0)", _pct(r["qat_init_top1"])],
        [f"QAT INT8 top-1 after each of {len(r['qat_epoch_top1'])} epochs", epochs],
        ["QAT - FP32", f"{(r['qat_top1'] - r['fp32_top1']) * 100:+.2f} pp"],
        ["QAT - post-training INT8", f"{(r['qat_top1'] - r['ptq_top1']) * 100:+.2f} pp"],
        ["exported ONNX (QDQ nodes)", str(r["qdq_nodes"])],
        ["ONNX Runtime top-1 agreement with PyTorch QAT (its top-1)",
         f"{_pct(r['ort_agreement'])} ({_pct(r['ort_top1'])})"],
        ["OpenVINO top-1 agreement with PyTorch QAT (its top-1)", f"{_pct(r['ov_agreement'])} ({_pct(r['ov_top1'])})"],
        ["FP32 training step, ms (batch 32)", _spread(r["fp32_step_ms"], ".2f")],
        ["QAT training step, ms (batch 32)", _spread(r["qat_step_ms"], ".2f")],
        ["**QAT step / FP32 step** (per round)",
         _spread(r["step_ratio"], ".2f") + (" BUSY (see load below)" if r["step_busy"] else "")],
        ["create_compressed_model (capture, range init, BN adaptation), s", f"{r['create_compressed_model_s']:.2f}"],
    ]
    if fp32_mem and qat_mem:
        rows += [
            ["parameters + buffers, KiB: FP32 / QAT",
             f"{fp32_mem['state_bytes'] / 1024:.1f} / {qat_mem['state_bytes'] / 1024:.1f} "
             f"(+{(qat_mem['state_bytes'] - fp32_mem['state_bytes']) / 1024:.1f} KiB, {qat_mem['quantizers']} "
             "quantizers)"],
            [f"tensors saved for backward in one step (batch {BATCH}), MiB: FP32 / QAT",
             f"{fp32_mem['saved_for_backward_bytes'] / 2**20:.2f} / {qat_mem['saved_for_backward_bytes'] / 2**20:.2f}"],
            [f"peak-RSS rise over {MEMORY_STEPS} training steps, MiB: FP32 / QAT",
             f"{fp32_mem['train_rss_rise_mb']:.1f} / {qat_mem['train_rss_rise_mb']:.1f}"],
        ]
    return common.markdown_table(["figure", "value"], rows)


def run_all(qat_epochs: int) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(common.NUM_THREADS)
    data = digits.load_digits_data()
    result, fp32, ctrl, qat = accuracy_figures(data, qat_epochs)
    with tempfile.TemporaryDirectory() as tmp:
        result |= export_agreement(ctrl, qat, data, Path(tmp))
    result |= step_time_figures(fp32, ctrl, qat, data)
    result["memory"] = common.run_cases_in_subprocesses(__file__, ["memory:fp32", "memory:qat"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=["memory:fp32", "memory:qat"], help="one memory figure, printed as JSON")
    parser.add_argument("--qat-epochs", type=int, default=2, choices=[0, 1, 2], help="QAT epochs (default 2)")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--allow-busy", action="store_true", help="measure even when the load exceeds the cores")
    args = parser.parse_args()
    if args.case:
        torch.set_num_threads(common.NUM_THREADS)
        print("RESULT " + json.dumps(memory_case(args.case.split(":")[1])))
        return
    harness.require_quiet(args.allow_busy)
    result = run_all(args.qat_epochs)
    print(json.dumps(result, indent=1))
    text = table(result)
    print(text)
    if not args.no_write:
        notes = (
            f"{harness.provenance('python bench/qat.py')} Step-time load: {result['step_load']}. "
            f"Digits CNN of bench/ptq.py (0.36M parameters, one residual add), 594 held-out images. QAT: default "
            "INT8 config (symmetric; weights per channel, activations per tensor; mixed_min_max range init on 512 "
            "images, BN adaptation 512), "
            f"Adam lr {QAT_LR}, batch {BATCH}, no augmentation. Step times: FP32 and QAT steps (forward, backward, "
            f"Adam) on the same batch interleaved, {harness.REPEATS} rounds of {STEPS_PER_FIGURE} steps after a "
            f"warm-up, the ratio taken per round, {STEP_THREADS} torch thread. Memory: each model in its own "
            "process; saved tensors: distinct storages autograd keeps for backward (hooked); the peak-RSS rise "
            "is VmHWM (reset before the loop) minus VmRSS before it (allocator noise of a few MiB)."
        )
        common.write_benchmarks_section("Quantization-aware training", "python bench/qat.py", text, notes)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
