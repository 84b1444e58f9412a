"""Training-time compression benchmark (`create_compressed_model` + the NNCF 2.x loop) on the digits CNN.

    python bench/training_compression.py                      # everything; writes the BENCHMARKS.md section
    python bench/training_compression.py --epochs 1 --limit 256 --no-write --allow-busy   # a smoke run

Sparsity part: the FP32 digits CNN (examples/digits_cnn.py, the one bench/qat.py uses) fine-tuned with
magnitude sparsity to 50 % (polynomial schedule) and with RB sparsity to 50 % (exponential schedule of the
loss target; mask logits in their own Adam group); top-1 on 594 held-out digits after each epoch, the
measured sparsity, epochs and wall time. Then magnitude sparsity 50 % stacked with INT8 QAT: trained,
exported to ONNX (QDQ) and OpenVINO IR, the exported int8 weights checked for the zeros, and the outputs of
ONNX Runtime and OpenVINO compared with the PyTorch model.

Pruning part (bench/training_pruning.py's ``pruning_rows``): a residual CNN with depthwise convs and a
concat pruned to 30 % fewer FLOPs and fine-tuned; accuracy, size, and ONNX Runtime / OpenVINO latency of
the full vs the physically shrunk export. It gets its own BENCHMARKS.md section; ``--part`` runs one part.
"""

from __future__ import annotations

import argparse
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
LR = 1e-4
MASK_LR = 0.15  # Adam moves RB logits (from logit(0.99) = 4.6) by about this per step
INPUT = {"sample_size": [1, 1, 16, 16]}


def _loader(data, limit: int | None) -> torch.utils.data.DataLoader:
    x, y = torch.from_numpy(data.x_train[:limit]), torch.from_numpy(data.y_train[:limit])
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH, shuffle=True,
                                       generator=torch.Generator().manual_seed(0))


def sparsity_section(algorithm: str, epochs: int) -> dict:
    """50 % reached at epoch ``epochs - 2`` and masks frozen for the last epoch (weights fine-tune under fixed
    masks); with one epoch, 50 % from the start."""
    target_epoch, freeze_epoch = max(epochs - 2, 0), max(epochs - 1, 0)
    if algorithm == "magnitude_sparsity":
        return {"algorithm": algorithm, "sparsity_init": 0.5 if target_epoch == 0 else 0.2,
                "params": {"schedule": "polynomial", "power": 1, "sparsity_target": 0.5,
                           "sparsity_target_epoch": target_epoch, "sparsity_freeze_epoch": freeze_epoch}}
    return {"algorithm": algorithm,
            "params": {"schedule": "exponential", "sparsity_target": 0.5, "sparsity_target_epoch": target_epoch,
                       "sparsity_freeze_epoch": freeze_epoch}}


def compress(model, sections: list[dict], loader):
    config = nncf.NNCFConfig.from_dict({"input_info": INPUT, "compression": sections})
    config = nncf.torch.register_default_init_args(config, loader, torch.nn.CrossEntropyLoss())
    return nncf.create_compressed_model(model, config)


def optimizer_for(model) -> torch.optim.Optimizer:
    from nncompress.backends.torch.hooks import is_storage_path

    named = list(model.named_parameters())
    return torch.optim.Adam([
        {"params": [p for n, p in named if not is_storage_path(n)]},
        {"params": [p for n, p in named if is_storage_path(n)], "lr": MASK_LR},
    ], lr=LR)


def fine_tune(ctrl, model, loader, data, epochs: int) -> list[float]:
    """The NNCF 2.x loop for ``epochs`` epochs; top-1 after each."""
    optimizer = optimizer_for(model)
    top1 = []
    for _ in range(epochs):
        ctrl.scheduler.epoch_step()
        model.train()
        for x, y in loader:
            ctrl.scheduler.step()
            loss = F.cross_entropy(model(x), y) + ctrl.loss()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        top1.append(digits.accuracy_torch(model, data.x_test, data.y_test))
    return top1


def sparsity_case(algorithm: str, args, data, fp32) -> dict:
    """One sparsity algorithm fine-tuned from the FP32 CNN: top-1 per epoch, sparsity, wall time."""
    torch.manual_seed(0)
    loader = _loader(data, args.limit)
    start = time.perf_counter()
    ctrl, model = compress(fp32, [sparsity_section(algorithm, args.epochs)], loader)
    init_top1 = digits.accuracy_torch(model, data.x_test, data.y_test)
    top1 = fine_tune(ctrl, model, loader, data, args.epochs)
    wall = time.perf_counter() - start
    stripped = ctrl.strip()
    return {"case": algorithm, "init_top1": init_top1, "epoch_top1": top1, "top1": top1[-1],
            "sparsity": ctrl.measured_level(), "stage": ctrl.compression_stage().name,
            "zeros_after_strip": _zero_share(stripped, ctrl.masks), "epochs": args.epochs, "wall_s": wall}


def _zero_share(model, masks: dict) -> float:
    from nncompress.backends.torch.inputs import named_tensor

    zeros = sum(int((named_tensor(model, name) == 0).sum()) for name in masks)
    return zeros / sum(m.binary_mask.numel() for m in masks.values())


def stacked_case(args, data, fp32) -> dict:
    """Magnitude 50 % + INT8 QAT: train, export, zeros in the int8 weights, runtimes vs PyTorch."""
    torch.manual_seed(0)
    loader = _loader(data, args.limit)
    quant = {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 512},
                                                          "batchnorm_adaptation": {"num_bn_adaptation_samples": 512}}}
    magnitude = {"algorithm": "magnitude_sparsity", "sparsity_init": 0.5, "params": {"sparsity_target": 0.5}}
    start = time.perf_counter()
    ctrl, model = compress(fp32, [magnitude, quant], loader)
    top1 = fine_tune(ctrl, model, loader, data, args.epochs)
    wall = time.perf_counter() - start
    sparsity = next(c for c in ctrl.children if c.name == "magnitude_sparsity")
    model.eval()
    x = data.x_test
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = ctrl.export_model(Path(tmp) / "stacked.onnx")
        ov_path = ctrl.export_model(Path(tmp) / "stacked.xml", save_format="openvino")
        import onnx

        proto = onnx.load(str(onnx_path))
        got = {"ort": _ort(onnx_path, x),
               "ov": _openvino(ov_path, x)}
        zeros = _onnx_int8_zero_share(proto, sparsity.masks)
    result = {"case": "magnitude_sparsity+int8", "epoch_top1": top1, "top1": top1[-1], "epochs": args.epochs,
              "wall_s": wall, "sparsity": sparsity.measured_level(), "onnx_int8_zero_share": zeros}
    for name, out in got.items():
        result[f"{name}_agreement"] = float((out.argmax(1) == want.argmax(1)).mean())
        result[f"{name}_max_abs_diff"] = float(np.abs(out - want).max())
        result[f"{name}_top1"] = float((out.argmax(1) == data.y_test).mean())
    result["torch_output_range"] = float(np.abs(want).max())
    return result


def _ort(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _openvino(path, x: np.ndarray) -> np.ndarray:
    import openvino as ov

    return ov.Core().compile_model(str(path), "CPU")(x)[0]


def _onnx_int8_zero_share(proto, masks: dict) -> float:
    """Zeros among the int8 weight constants shaped like the sparsified weights (the masked share)."""
    from onnx import numpy_helper

    shapes = {tuple(m.binary_mask.shape) for m in masks.values()}
    tensors = list(proto.graph.initializer) + [a.t for n in proto.graph.node if n.op_type == "Constant"
                                               for a in n.attribute if a.name == "value"]
    arrays = [numpy_helper.to_array(t) for t in tensors if tuple(t.dims) in shapes and t.data_type == 3]  # INT8
    total = sum(a.size for a in arrays)
    return sum(int((a == 0).sum()) for a in arrays) / total if total else 0.0


def sparsity_rows(args) -> list[dict]:
    """The sparsity part: FP32, magnitude 50 %, RB 50 %, magnitude 50 % + INT8 (one dict per case)."""
    torch.set_num_threads(common.NUM_THREADS)
    data = digits.load_digits_data()
    fp32 = digits.get_trained_digits_cnn()
    rows: list[dict] = [{"case": "fp32", "top1": digits.accuracy_torch(fp32, data.x_test, data.y_test)}]
    for algorithm in ("magnitude_sparsity", "rb_sparsity"):
        rows.append(sparsity_case(algorithm, args, data, fp32))
        print(rows[-1], flush=True)
    rows.append(stacked_case(args, data, fp32))
    print(rows[-1], flush=True)
    return rows


def pruning_table(args) -> str:
    """The filter-pruning part (bench/training_pruning.py) as a markdown table."""
    from bench.training_pruning import pruning_rows

    options = argparse.Namespace(pretrain_epochs=args.pretrain_epochs, epochs=args.pruning_epochs, limit=args.limit)
    rows = pruning_rows(options)
    lines = [[r["figure"], r["full"] if r["full"] is not None else "-", r["pruned"], r["ratio"] or "-"] for r in rows]
    return common.markdown_table(["figure", "FP32 / full", "pruned", "pruned/full"], lines)


def _pct(value: float) -> str:
    return f"{value * 100:.2f}%"


def table(rows: list[dict]) -> str:
    fp32 = next(r["top1"] for r in rows if r["case"] == "fp32")
    lines = [["FP32 top-1 (PyTorch)", _pct(fp32)]]
    for r in rows:
        if r["case"] in ("magnitude_sparsity", "rb_sparsity"):
            lines.append([
                f"{r['case']} 50 %: top-1 after each of {r['epochs']} epochs (Δ vs FP32)",
                ", ".join(_pct(a) for a in r["epoch_top1"]) + f" ({(r['top1'] - fp32) * 100:+.2f} pp)"])
            lines.append([f"{r['case']}: measured sparsity / zeros after strip, stage, wall time",
                          f"{_pct(r['sparsity'])} / {_pct(r['zeros_after_strip'])}, {r['stage']}, {r['wall_s']:.1f} s"])
        elif r["case"] == "magnitude_sparsity+int8":
            lines.append([f"magnitude 50 % + INT8 QAT: top-1 after each of {r['epochs']} epochs (Δ vs FP32)",
                          ", ".join(_pct(a) for a in r["epoch_top1"]) + f" ({(r['top1'] - fp32) * 100:+.2f} pp)"])
            lines.append(["magnitude + INT8: sparsity / zeros in the exported int8 weights, wall time",
                          f"{_pct(r['sparsity'])} / {_pct(r['onnx_int8_zero_share'])}, {r['wall_s']:.1f} s"])
            for name, label in (("ort", "ONNX Runtime"), ("ov", "OpenVINO")):
                lines.append([f"magnitude + INT8 exported, {label}: top-1 agreement with PyTorch, "
                              "max abs difference (its top-1)",
                              f"{_pct(r[f'{name}_agreement'])}, {r[f'{name}_max_abs_diff']:.4f} of "
                              f"{r['torch_output_range']:.2f} ({_pct(r[f'{name}_top1'])})"])
    return common.markdown_table(["figure", "value"], lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["sparsity", "pruning", "all"], default="all")
    parser.add_argument("--epochs", type=int, default=4, help="sparsity fine-tuning epochs per case (default 4)")
    parser.add_argument("--pretrain-epochs", type=int, default=15, help="FP32 epochs of the pruning CNN (default 15)")
    parser.add_argument("--pruning-epochs", type=int, default=6, help="pruning fine-tune epochs (default 6)")
    parser.add_argument("--limit", type=int, help="training images per epoch (default: all 1203)")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--allow-busy", action="store_true", help="measure even when the load exceeds the cores")
    args = parser.parse_args()
    if min(args.epochs, args.pretrain_epochs, args.pruning_epochs) < 1:
        raise SystemExit("--epochs, --pretrain-epochs and --pruning-epochs must be at least 1")
    harness.require_quiet(args.allow_busy)
    if args.part in ("sparsity", "all"):
        _sparsity_part(args)
    if args.part in ("pruning", "all"):
        _pruning_part(args)


def _command(args) -> str:
    return "python bench/training_compression.py" + ("" if args.part == "all" else f" --part {args.part}")


def _sparsity_part(args) -> None:
    text = table(sparsity_rows(args))
    print(text)
    if not args.no_write:
        notes = (
            f"{harness.provenance(_command(args))} Digits CNN of bench/qat.py, 594 held-out "
            f"images; Adam lr {LR} (RB mask logits {MASK_LR}), batch {BATCH}, no augmentation. Magnitude: "
            "polynomial (power 1) from 20 % to 50 % at epoch E-2, global normed_abs threshold; RB: exponential loss "
            "target to 50 % at epoch E-2; both freeze their masks for the last epoch. Wall time: "
            "create_compressed_model + fine-tuning + evaluation after each epoch."
        )
        common.write_benchmarks_section("Training-time sparsity", _command(args), text, notes)


def _pruning_part(args) -> None:
    from bench.training_pruning import FLOPS_TARGET

    text = pruning_table(args)
    print(text)
    if not args.no_write:
        notes = (
            f"{harness.provenance(_command(args))} bench/pruning.py's ResidualDWNet (1 input channel: an inverted "
            "residual with a depthwise conv, a concat) trained "
            f"{args.pretrain_epochs} epochs on the digits (16x16), then `filter_pruning` with pruning_flops_target "
            f"{FLOPS_TARGET} (exponential schedule over 3 epochs from 0.1, L2 filter importance, BN adaptation on 512 "
            f"samples) fine-tuned {args.pruning_epochs} epochs; 594 held-out images. 'pruned' is the stripped "
            "model: channels physically removed. Latency: batch 1, 2 threads, full and pruned interleaved in one "
            "process, the ratio taken per round. Last rows: the same pruning stacked with INT8 QAT in one config "
            "list, fine-tuned as many epochs from the same FP32 model, exported as ONNX QDQ and OpenVINO IR (compiled "
            "with f32 inference precision) and compared with the PyTorch model on the 594 held-out images."
        )
        common.write_benchmarks_section("Training-time filter pruning", _command(args), text, notes)


if __name__ == "__main__":
    main()
