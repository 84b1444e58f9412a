"""The error a compression introduced, measured on a few items by running both models: per layer (the
relative L2 error of its output against the original model's) and at the model outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nncompress.backends.registry import get_adapter
from nncompress.graph.ir import Graph, TensorRef
from nncompress.progress import progress_iter

AGREEMENT = 1e-3  # relative difference between the outputs of a run with extra outputs and a plain run
MAX_SEPARATE_RUNS = 64  # layers measured one run each when a runtime changes its results with extra outputs


@dataclass
class Measurement:
    items: int = 0
    layer_error: dict[str, float] = field(default_factory=dict)  # node -> relative L2 error of its output
    output_error: dict[str, float] = field(default_factory=dict)  # model output -> relative L2 error
    output_cosine: dict[str, float] = field(default_factory=dict)  # model output -> mean cosine over the items
    unmatched: list[str] = field(default_factory=list)  # layers the compressed model no longer names
    notes: list[str] = field(default_factory=list)


def original_graph(model: Any, example: Any) -> Graph:
    return get_adapter(model, example_input=example).build_graph(model)


class _Sums:
    """Running sums ||y' - y||^2 and ||y||^2 per key, and per-item cosines."""

    def __init__(self) -> None:
        self.diff: dict[Any, float] = {}
        self.norm: dict[Any, float] = {}
        self.cosines: dict[Any, list[float]] = {}

    def add(self, key: Any, new: np.ndarray, old: np.ndarray) -> None:
        if new.shape != old.shape:
            return
        delta = new - old
        self.diff[key] = self.diff.get(key, 0.0) + float(np.vdot(delta, delta))
        self.norm[key] = self.norm.get(key, 0.0) + float(np.vdot(old, old))
        denom = float(np.linalg.norm(old) * np.linalg.norm(new))
        self.cosines.setdefault(key, []).append(float(np.vdot(old, new)) / denom if denom else 1.0)

    def error(self, key: Any) -> float | None:
        if key not in self.diff:
            return None
        diff, norm = self.diff[key], self.norm[key]
        if norm == 0.0:
            return 0.0 if diff == 0.0 else float("inf")
        return float(np.sqrt(diff / norm))


def _flat(value: Any) -> np.ndarray:
    return np.array(value, dtype=np.float64).ravel()  # a copy: runtimes may reuse their output buffers


class _Runner:
    """One model with its adapter; its plain outputs per item are the ground truth for its extra-output runs."""

    def __init__(self, model: Any, items: list[Any], label: str):
        self.model, self.items, self.label = model, items, label
        self.adapter = get_adapter(model, example_input=items[0])
        self.graph = self.adapter.build_graph(model)
        self.outputs = [[_flat(o) for o in self.adapter.infer(model, item)]
                        for item in progress_iter(items, len(items), f"running the {label} model")]

    def collect(self, refs: list[TensorRef], check: list[TensorRef]) -> list[dict[TensorRef, np.ndarray]] | None:
        """Values of ``refs`` per item; None when ``check`` (the output tensors, in output order) disagree with
        the plain run, i.e. the runtime computes differently once intermediate tensors are outputs."""
        values: list[dict[TensorRef, np.ndarray]] = []
        wanted = list(dict.fromkeys(refs + check))
        self.adapter.collect(self.model, wanted, self.items,
                             lambda v: values.append({r: _flat(x) for r, x in v.items()}))
        for got, plain in zip(values, self.outputs):
            for ref, expected in zip(check, plain):
                value = got.get(ref)
                if value is not None and value.shape == expected.shape and not _close(value, expected):
                    return None
        return values


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    scale = max(float(np.linalg.norm(b)), 1e-12)
    return float(np.linalg.norm(a - b)) <= AGREEMENT * scale


def measure(original: Any, compressed: Any, layers: list[str], items: list[Any]) -> Measurement:
    """Errors of ``layers``' outputs and of the model outputs over ``items``."""
    result = Measurement(items=len(items))
    if not items:
        return result
    a, b = _Runner(original, items, "original"), _Runner(compressed, items, "compressed")
    names = [n.name for n in a.graph.outputs()]
    names = names if len(names) == len(a.outputs[0]) else [f"output {k}" for k in range(len(a.outputs[0]))]
    outputs = _Sums()
    for old, new in zip(a.outputs, b.outputs):
        for name, x, y in zip(names, old, new):
            outputs.add(name, y, x)
    for name in names:
        if outputs.error(name) is not None:
            result.output_error[name] = outputs.error(name)
            result.output_cosine[name] = float(np.mean(outputs.cosines[name]))
    present = [n for n in layers if n in b.graph.nodes]
    result.unmatched = [n for n in layers if n not in b.graph.nodes]
    result.layer_error = _layer_errors(a, b, present, result.notes)
    return result


def _output_refs(runner: _Runner) -> list[TensorRef]:
    refs = [n.inputs[0] if n.inputs else None for n in runner.graph.outputs()]
    return refs if len(refs) == len(runner.outputs[0]) and None not in refs else []


def _layer_errors(a: _Runner, b: _Runner, layers: list[str], notes: list[str]) -> dict[str, float]:
    refs = [TensorRef(n, 0) for n in layers]
    old, new = a.collect(refs, _output_refs(a)), b.collect(refs, _output_refs(b))
    if old is None or new is None:
        if len(refs) > MAX_SEPARATE_RUNS:
            notes.append(f"the runtime computes differently when intermediate tensors are read, and {len(refs)} layers "
                         f"are more than {MAX_SEPARATE_RUNS} separate runs: per-layer errors are not measured")
            return {}
        notes.append("the runtime computes differently when several intermediate tensors are read at once: each "
                     "layer was measured in a run of its own")
        return _separately(a, b, refs)
    sums = _Sums()
    for x, y in zip(old, new):
        for ref in refs:
            if ref in x and ref in y:
                sums.add(ref.node, y[ref], x[ref])
    return {n: e for n in layers if (e := sums.error(n)) is not None}


def _separately(a: _Runner, b: _Runner, refs: list[TensorRef]) -> dict[str, float]:
    sums = _Sums()
    for ref in progress_iter(refs, len(refs), "measuring layers one by one"):
        old, new = a.collect([ref], []), b.collect([ref], [])
        for x, y in zip(old, new):
            if ref in x and ref in y:
                sums.add(ref.node, y[ref], x[ref])
    return {r.node: e for r in refs if (e := sums.error(r.node)) is not None}
