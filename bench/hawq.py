"""HAWQ-v2 mixed-precision benchmark: the trace estimate, the search, and QAT of the chosen configuration.

    python bench/hawq.py              # everything (~5 min on 2 cores); writes the BENCHMARKS.md section
    python bench/hawq.py --quick      # small settings, nothing written (a smoke run)

Figures:
1. Hutchinson average Hessian trace per layer vs the exact trace (autograd, one Hessian row at a time)
   on a 6-8-3 MLP (MSE) and a small digits CNN (cross-entropy), at the default iteration count (200)
   and at 1000 iterations: the relative error per layer.
2. A model with one highly sensitive layer (three parallel linear layers, one scaled by 30): its trace
   and the widths HAWQ chooses.
3. The digits CNN of bench/ptq.py at compression ratio 1.5 (TRIAL, bits [2, 4, 8]): the chosen width per
   layer, the ratio measured from the installed quantizers, and top-1 after init and after a short QAT
   fine-tune, against uniform INT8 and uniform 4-bit trained the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nncompress as nncf  # noqa: E402
from bench import common, harness  # noqa: E402
from examples import digits_cnn as digits  # noqa: E402
from nncompress.backends.torch.hessian import exact_hessian_traces, hutchinson_traces  # noqa: E402

BATCH = 32
QAT_LR = 1e-4
TARGET_RATIO = 1.5
FULL = {"qat_epochs": 2, "num_data_points": 64, "iter_number": 50, "trace_iters": (200, 1000)}
QUICK = {"qat_epochs": 1, "num_data_points": 32, "iter_number": 5, "trace_iters": (50,)}
VARIANTS = {"int8": "uniform INT8", "hawq": "HAWQ, bits [2, 4, 8]", "hawq48": "HAWQ, bits [4, 8]",
            "int4": "uniform 4-bit (W4A4)"}


# --- 1. trace vs exact ------------------------------------------------------------------------------
def _mlp_problem():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(256, 6), torch.randn(256, 3)
    return "MLP 6-8-3, MSE, 256 samples", net, [net[0].weight, net[2].weight], x, y, F.mse_loss


class TinyCNN(nn.Module):
    """8x8 input (the 16x16 digits average-pooled), two 3x3 convolutions, a linear head: 820 weights."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        x = F.avg_pool2d(x, 2)
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1))


def _cnn_problem(data):
    torch.manual_seed(0)
    net = TinyCNN()
    x, y = torch.from_numpy(data.x_train[:128]), torch.from_numpy(data.y_train[:128])
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(60):  # a partly trained net: cross-entropy curvature of a real task
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    params = [net.conv1.weight, net.conv2.weight, net.fc.weight]
    return "digits CNN 1-4-4 conv + linear, cross-entropy, 128 images", net, params, x, y, F.cross_entropy


def trace_vs_exact(problem, iters: tuple[int, ...]) -> dict:
    name, net, params, x, y, loss = problem
    start = time.perf_counter()
    exact = exact_hessian_traces(lambda: loss(net(x), y), params)
    exact_s = time.perf_counter() - start
    batches = [(x[i:i + 128], y[i:i + 128]) for i in range(0, len(x), 128)]

    def closure(index):
        xb, yb = batches[index]
        return loss(net(xb), yb), params, len(xb)

    rows = []
    for n in iters:
        start = time.perf_counter()
        estimate, _ = hutchinson_traces(closure, len(batches), iter_number=n, tolerance=0.0, seed=0)
        seconds = time.perf_counter() - start
        rows.append({"iterations": n, "seconds": seconds, "estimate": estimate,
                     "error_pct": [100 * abs(h - e) / abs(e) for e, h in zip(exact, estimate)]})
    return {"problem": name, "exact": exact, "exact_s": exact_s, "numel": [p.numel() for p in params], "runs": rows}


# --- 2. one sensitive layer ---------------------------------------------------------------------------
class Sensitive(nn.Module):
    """fc1(relu x) + fc2(tanh x) + 30·fc3(sigmoid x): equal cost, fc3's curvature ~900 times the others'."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(8, 4), nn.Linear(8, 4), nn.Linear(8, 4)

    def forward(self, x):
        return self.fc1(torch.relu(x)) + self.fc2(torch.tanh(x)) + 30.0 * self.fc3(torch.sigmoid(x))


def sensitive_layer() -> dict:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(32, 8, generator=g), torch.randn(32, 4, generator=g)) for _ in range(2)]
    config = nncf.NNCFConfig.from_dict({
        "input_info": {"sample_size": [1, 8]}, "target_device": "TRIAL",
        "compression": {"algorithm": "quantization", "initializer": {
            "range": {"num_init_samples": 64},
            "precision": {"type": "hawq", "bits": [4, 8], "num_data_points": 64, "iter_number": 50,
                          "compression_ratio": 1.3}}},
    })
    config = nncf.torch.register_default_init_args(config, data, criterion=nn.MSELoss())
    ctrl, _ = nncf.create_compressed_model(Sensitive(), config)
    summary = ctrl.precision_summary
    return {"layers": [{"name": r["name"].split("/")[0], "trace": r["trace"], "bits": r["bits"]}
                       for r in summary["layers"]], "ratio": summary["compression_ratio"]}


# --- 3. digits CNN at ratio 1.5 -------------------------------------------------------------------------
def _loader(data, shuffle: bool = True) -> torch.utils.data.DataLoader:
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(data.x_train), torch.from_numpy(data.y_train))
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=shuffle,
                                       generator=torch.Generator().manual_seed(0))


def _config(variant: str, settings: dict) -> nncf.NNCFConfig:
    init = {"range": {"num_init_samples": 512}, "batchnorm_adaptation": {"num_bn_adaptation_samples": 512}}
    bits = 4 if variant == "int4" else 8
    if variant.startswith("hawq"):
        init["precision"] = {"type": "hawq", "bits": [4, 8] if variant == "hawq48" else [2, 4, 8],
                             "num_data_points": settings["num_data_points"],
                             "iter_number": settings["iter_number"], "compression_ratio": TARGET_RATIO}
    return nncf.NNCFConfig.from_dict({
        "input_info": {"sample_size": [1, 1, 16, 16]}, "target_device": "TRIAL",
        "compression": {"algorithm": "quantization", "initializer": init,
                        "weights": {"bits": bits, "per_channel": True}, "activations": {"bits": bits}},
    })


def measured_ratio(ctrl) -> float:
    """``Σ FLOPs·8 / Σ FLOPs·max(weight bits, input activation bits)`` read from the installed modules."""
    bits = {c.name: int(m.num_bits) for c, m in zip(ctrl.configs, ctrl.modules)}
    full = used = 0
    for c in ctrl.configs:
        if c.group != "weights":
            continue
        inputs = [bits[a.name] for a in ctrl.configs if a.group == "activations" and c.nodes[0] in a.nodes[1:]]
        flops = ctrl.layer_flops[c.name]
        full, used = full + 8 * flops, used + flops * max([bits[c.name], *inputs])
    return full / used


def train_epoch(model, ctrl, loader, optimizer) -> None:
    ctrl.scheduler.epoch_step()
    model.train()
    for x, y in loader:
        ctrl.scheduler.step()
        loss = F.cross_entropy(model(x), y) + ctrl.loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def qat_variant(variant: str, fp32, data, settings: dict) -> dict:
    config = nncf.torch.register_default_init_args(_config(variant, settings), _loader(data, shuffle=False),
                                                   criterion=nn.CrossEntropyLoss())
    start = time.perf_counter()
    ctrl, model = nncf.create_compressed_model(fp32, config)
    result = {"variant": variant, "create_s": time.perf_counter() - start, "ratio": measured_ratio(ctrl),
              "init_top1": digits.accuracy_torch(model, data.x_test, data.y_test), "epoch_top1": []}
    optimizer = torch.optim.Adam(model.parameters(), lr=QAT_LR)
    loader = _loader(data)
    for _ in range(settings["qat_epochs"]):
        train_epoch(model, ctrl, loader, optimizer)
        result["epoch_top1"].append(digits.accuracy_torch(model, data.x_test, data.y_test))
    if variant.startswith("hawq"):
        summary = ctrl.precision_summary
        result["search_ratio"] = summary["compression_ratio"]
        result["candidates"] = summary["candidates"]
        result["trace_iterations"] = summary["trace_iterations"]
        result["layers"] = [{"name": r["name"].replace("/fq_weights_1", ""), "trace": r["trace"],
                             "flops": r["flops"], "bits": r["bits"]} for r in summary["layers"]]
        result["activations"] = summary["activations"]
        result["input_bits"] = {c.nodes[0].replace("/fq_weights_1", ""): max(
            [m.num_bits for a, m in zip(ctrl.configs, ctrl.modules) if a.group == "activations"
             and c.nodes[0] in a.nodes[1:]], default=0) for c in ctrl.configs if c.group == "weights"}
    return result


def run_all(settings: dict) -> dict:
    torch.manual_seed(0)
    data = digits.load_digits_data()
    torch.set_num_threads(1)  # tiny double-backward ops: a second thread only adds OpenMP barrier stalls
    result = {"traces": [trace_vs_exact(p, settings["trace_iters"]) for p in (_mlp_problem(), _cnn_problem(data))]}
    result["sensitive"] = sensitive_layer()
    torch.set_num_threads(common.NUM_THREADS)
    fp32 = digits.get_trained_digits_cnn()
    result["fp32_top1"] = digits.accuracy_torch(fp32, data.x_test, data.y_test)
    result["digits"] = [qat_variant(v, fp32, data, settings) for v in VARIANTS]
    return result


# --- report -------------------------------------------------------------------------------------------
def _pct(value: float) -> str:
    return f"{value * 100:.2f}%"


def tables(r: dict) -> str:
    trace_rows = []
    for t in r["traces"]:
        for run in t["runs"]:
            for i, (e, h, err) in enumerate(zip(t["exact"], run["estimate"], run["error_pct"])):
                trace_rows.append([t["problem"] if i == 0 and run is t["runs"][0] else "", f"layer {i + 1} "
                                   f"({t['numel'][i]} weights)", run["iterations"], f"{e:.5g}", f"{h:.5g}",
                                   f"{err:.2f}%"])
    out = [common.markdown_table(["network", "layer", "iterations", "exact avg trace", "Hutchinson", "error"],
                                 trace_rows)]
    sens = r["sensitive"]
    out.append(common.markdown_table(
        ["one sensitive layer (fc3 x30)", "avg trace", "HAWQ bits"],
        [[row["name"], f"{row['trace']:.4g}", row["bits"]] for row in sens["layers"]]))
    variants = {v["variant"]: v for v in r["digits"]}
    wide, narrow = variants["hawq"], variants["hawq48"]
    out.append(common.markdown_table(
        ["digits CNN layer (HAWQ, ratio 1.5)", "avg trace", "MFLOPs", "weight bits of [2, 4, 8]",
         "weight bits of [4, 8]", "input activation bits ([2, 4, 8] / [4, 8])"],
        [[row["name"], f"{row['trace']:.4g}", f"{row['flops'] / 1e6:.2f}", row["bits"], other["bits"],
          f"{_input_bits(wide, row['name'])} / {_input_bits(narrow, row['name'])}"]
         for row, other in zip(wide["layers"], narrow["layers"])]))
    rows = [["FP32", "-", _pct(r["fp32_top1"]), "-"]]
    for key, name in VARIANTS.items():
        v = variants[key]
        epochs = ", ".join(_pct(a) for a in v["epoch_top1"])
        rows.append([name, f"{v['ratio']:.3f}", _pct(v["init_top1"]), epochs])
    out.append(common.markdown_table(
        ["digits CNN", "measured compression ratio", "top-1 after init", "top-1 after each QAT epoch"], rows))
    return "\n\n".join(out)


def _input_bits(run: dict, layer: str) -> str:
    return str(run["input_bits"].get(layer, "-"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small settings; nothing written")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--allow-busy", action="store_true", help="measure even when the load exceeds the cores")
    args = parser.parse_args()
    harness.require_quiet(args.allow_busy)
    settings = QUICK if args.quick else FULL
    start = time.perf_counter()
    result = run_all(settings)
    result["total_s"] = time.perf_counter() - start
    print(json.dumps(result, indent=1))
    text = tables(result)
    print(text)
    if args.quick or args.no_write:
        return
    wide, narrow = (next(v for v in result["digits"] if v["variant"] == k) for k in ("hawq", "hawq48"))
    notes = (
        f"{harness.provenance('python bench/hawq.py')} Traces: Rademacher vectors, batches of 128, tolerance "
        "0 (every iteration runs), one torch thread; exact: the Hessian diagonal by autograd, one row per weight. "
        "Digits CNN of bench/ptq.py (594 held-out images); target_device TRIAL, weights per channel, symmetric; "
        "HAWQ on "
        f"{settings['num_data_points']} images, at most {settings['iter_number']} iterations "
        f"({wide['trace_iterations']} ran), {wide['candidates']} / {narrow['candidates']} monotone candidates "
        "for [2, 4, 8] / [4, 8], liberal activations (each follows the widest weight it feeds); measured "
        "ratio from the installed quantizers' widths and conv/linear FLOPs. Each variant: "
        f"range init 512 images, BN adaptation 512, then {settings['qat_epochs']} QAT epochs, Adam lr {QAT_LR}, "
        f"batch {BATCH}. Whole run {result['total_s']:.0f} s."
    )
    common.write_benchmarks_section("Mixed precision (HAWQ)", "python bench/hawq.py", text, notes)


if __name__ == "__main__":
    main()
