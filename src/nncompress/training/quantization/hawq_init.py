"""HAWQ-v2 precision initialisation of a built QAT model, and the dump of the data behind it.

``run_hawq`` collects per-layer traces (Hutchinson, or ``traces_per_layer_path``), noise and FLOPs, runs
``algorithms.hawq.search`` and writes the chosen widths into the configs and quantizer modules. The
summary it returns lives in the builder state (``"precision"``), next to the widths themselves.

``dump_init_precision_data`` writes, under the config's ``log_dir`` (else ``./hawq``):
``traces_per_layer.json`` (reusable as ``traces_per_layer_path``), ``bitwidth_per_scope.json`` (reusable as
a manual configuration), ``precision_init.csv`` (per layer: trace, FLOPs, chosen bits, noise per width)
and ``precision_init.txt``, a text chart of trace and bits per layer (matplotlib is not a dependency).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from nncompress.algorithms import hawq
from nncompress.errors import ValidationError
from nncompress.log import logger
from nncompress.training.quantization.precision import (
    activation_groups,
    estimate_traces,
    load_traces,
    set_bits,
    weight_arrays,
)
from nncompress.training.quantization.setup import WEIGHTS


def run_hawq(ctrl: Any, nncf_config: Any) -> dict[str, Any]:
    """Search and apply the widths of ``ctrl``'s quantizers; returns the summary (JSON-able)."""
    from nncompress.training.config.init_args import QuantizationPrecisionInitArgs

    precision, spec = ctrl.spec.precision, ctrl.spec
    bits = hawq.allowed_candidates(precision["bits"], spec.target_device)
    pairs = [(i, c, m) for i, (c, m) in enumerate(zip(ctrl.configs, ctrl.modules)) if c.group == WEIGHTS]
    if not pairs:
        raise ValidationError("mixed precision (hawq) needs weight quantizers; the model has none")
    names = [c.name for _, c, _ in pairs]
    weight_modules = [m for _, _, m in pairs]
    iterations = 0
    if precision.get("traces_per_layer_path"):
        traces = load_traces(precision["traces_per_layer_path"], names)
    else:
        if not nncf_config.has_extra_struct(QuantizationPrecisionInitArgs):
            raise ValidationError(
                "initializer.precision type 'hawq' needs a loss: call register_default_init_args(config, "
                "train_loader, criterion=torch.nn.CrossEntropyLoss()) before create_compressed_model"
            )
        init_args = nncf_config.get_extra_struct(QuantizationPrecisionInitArgs)
        traces, iterations = estimate_traces(ctrl.model, weight_modules, ctrl.modules, init_args, precision)
    arrays = weight_arrays(ctrl.model, weight_modules, ctrl.modules, ctrl.example_input)
    groups = activation_groups(ctrl.configs, ctrl.modules)
    inputs: dict[str, list[str]] = {}
    for act, _ in groups:
        for w in act.feeds:
            inputs.setdefault(w, []).append(act.name)
    flops = getattr(ctrl, "layer_flops", {}) or {}
    layers = []
    for (_, config, _), trace, array in zip(pairs, traces, arrays):
        noise = {b: hawq.weight_noise(array, b, config.mode == "symmetric",
                                      config.axis if config.per_channel else None) for b in bits}
        layers.append(hawq.Layer(config.name, float(trace), int(flops.get(config.name, 0)), noise,
                                 tuple(inputs.get(config.name, ()))))
    mode = precision["bitwidth_assignment_mode"]
    choice, count = hawq.search(layers, [a for a, _ in groups], bits, spec.target_device,
                                float(precision["compression_ratio"]), mode)
    choice, count, layers, iterations = _from_rank0((choice, count, layers, iterations))
    _apply(ctrl, pairs, groups, choice)
    summary = _summary(layers, choice, count, iterations, bits, mode, precision)
    logger.info("mixed precision (HAWQ): %d candidates, chosen ratio %.3f, widths %s", count, choice.ratio,
                ", ".join(f"{n}: {b}" for n, b in choice.weights.items()))
    if precision.get("dump_init_precision_data"):
        dump(summary, ctrl.scope_of if hasattr(ctrl, "scope_of") else {}, nncf_config.get("log_dir"))
    return summary


def _from_rank0(result: tuple) -> tuple:
    """Under DDP every rank estimates on its own shard; all take rank 0's result (one setup everywhere)."""
    try:
        from nncompress.training import distributed as dist
    except ImportError:
        return result
    return tuple(dist.broadcast_object(list(result))) if dist.is_distributed() else result


def _apply(ctrl: Any, pairs: list, groups: list, choice: hawq.Choice) -> None:
    for _, config, module in pairs:
        set_bits(config, module, choice.weights[config.name])
    for act, indices in groups:
        if act.name in choice.activations:
            for i in indices:
                set_bits(ctrl.configs[i], ctrl.modules[i], choice.activations[act.name])


def _summary(layers, choice: hawq.Choice, count: int, iterations: int, bits, mode: str, precision: dict) -> dict:
    return {
        "type": "hawq",
        "bits": list(bits),
        "bitwidth_assignment_mode": mode,
        "compression_ratio_target": float(precision["compression_ratio"]),
        "compression_ratio": choice.ratio,
        "sensitivity": choice.sensitivity,
        "candidates": count,
        "trace_iterations": iterations,
        "layers": [
            {"name": layer.name, "trace": layer.trace, "flops": layer.flops, "bits": choice.weights[layer.name],
             "noise": {str(b): v for b, v in layer.noise.items()}}
            for layer in layers
        ],
        "activations": dict(choice.activations),
    }


def dump(summary: dict, scope_of: dict, log_dir: str | None) -> Path:
    """Write the traces, the chosen configuration and a text chart; returns the folder."""
    folder = Path(log_dir) if log_dir else Path("hawq")
    folder.mkdir(parents=True, exist_ok=True)
    layers = summary["layers"]
    (folder / "traces_per_layer.json").write_text(json.dumps({row["name"]: row["trace"] for row in layers}, indent=1))
    per_scope = [[row["bits"], f"{scope_of.get(row['name'], row['name'])}|WEIGHT"] for row in layers]
    per_scope += [[b, name] for name, b in summary["activations"].items()]
    (folder / "bitwidth_per_scope.json").write_text(json.dumps(per_scope, indent=1))
    with open(folder / "precision_init.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        widths = summary["bits"]
        writer.writerow(["layer", "trace", "flops", "bits", *(f"noise_{b}bit" for b in widths)])
        for row in layers:
            writer.writerow([row["name"], f"{row['trace']:.6g}", row["flops"], row["bits"],
                             *(f"{row['noise'][str(b)]:.6g}" for b in widths)])
    (folder / "precision_init.txt").write_text(text_chart(summary))
    logger.info("mixed precision data written to %s", folder)
    return folder


def text_chart(summary: dict, width: int = 40) -> str:
    """Trace (log-scaled bar) and bits per layer, in layer order."""
    layers = summary["layers"]
    logs = [math.log10(max(row["trace"], 1e-12)) for row in layers]
    low, high = min(logs), max(logs)
    name_width = max(len(r["name"]) for r in layers)
    lines = [f"HAWQ: ratio {summary['compression_ratio']:.3f} (target {summary['compression_ratio_target']:g}), "
             f"{summary['candidates']} candidates, mode {summary['bitwidth_assignment_mode']}",
             f"{'layer':<{name_width}}  bits  {'log10 trace':<{width}}  trace"]
    for row, value in zip(layers, logs):
        bar = "#" * max(1, round(width * (value - low) / (high - low))) if high > low else "#" * width
        lines.append(f"{row['name']:<{name_width}}  {row['bits']:>4}  {bar:<{width}}  {row['trace']:.4g}")
    return "\n".join(lines) + "\n"
