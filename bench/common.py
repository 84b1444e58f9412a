"""Measurement helpers shared by the benchmark scripts.

Timings are wall-clock on the machine that runs the script. ONNX Runtime and OpenVINO are both
run synchronously, one request at a time, with two threads, and OpenVINO is pinned to f32
inference precision (on CPUs with AMX/AVX512-BF16 it would otherwise run FP32 models in bf16),
so that an FP32 model and its INT8 counterpart are compared like for like.
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NUM_THREADS = 2
REPO_ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = REPO_ROOT / "BENCHMARKS.md"

Batch = np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def rss_mb() -> float:
    """Current resident set size of this process, in MiB (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def hwm_mb() -> float:
    """Resident-set high-water mark since the last ``reset_peak`` (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return peak_rss_mb()


def reset_peak() -> float:
    """Reset the high-water mark to the current RSS (after a garbage collection); returns that RSS (MiB)."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return rss_mb()


@dataclass
class Timing:
    """Filled in when the `timer()` block exits."""

    seconds: float = 0.0


@contextlib.contextmanager
def timer() -> Iterator[Timing]:
    """Measure a block: `with timer() as t: ...; print(t.seconds)`."""
    timing = Timing()
    start = time.perf_counter()
    try:
        yield timing
    finally:
        timing.seconds = time.perf_counter() - start


def _feed(names: Sequence[str], batch: Batch) -> dict[str, np.ndarray]:
    """Map a batch (array, sequence of arrays in input order, or dict) to input names."""
    if isinstance(batch, Mapping):
        return {name: np.ascontiguousarray(batch[name]) for name in names}
    arrays = [batch] if isinstance(batch, np.ndarray) else list(batch)
    if len(arrays) != len(names):
        raise ValueError(f"model has inputs {list(names)} but the batch holds {len(arrays)} arrays")
    return {name: np.ascontiguousarray(a) for name, a in zip(names, arrays)}


def _batch_size(feed: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(feed.values())).shape[0])


def onnx_session(model: Any, num_threads: int = NUM_THREADS) -> Any:
    """An ONNX Runtime CPU session (ORT_ENABLE_ALL, `num_threads` intra-op threads)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    source = str(model) if isinstance(model, (str, os.PathLike)) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_run(model_proto: Any, batch: Batch) -> tuple[Any, int]:
    """A no-argument call running an ONNX model (ModelProto or path) in ONNX Runtime on ``batch``,
    and the batch size."""
    session = onnx_session(model_proto)
    feed = _feed([i.name for i in session.get_inputs()], batch)
    return (lambda: session.run(None, feed)), _batch_size(feed)


def compile_openvino(ov_model: Any, num_threads: int = NUM_THREADS) -> Any:
    """Compile for CPU: LATENCY hint, f32 inference precision, `num_threads` threads."""
    import openvino as ov

    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": num_threads,
    }
    return ov.Core().compile_model(ov_model, "CPU", config)


def openvino_run(ov_model: Any, batch: Batch) -> tuple[Any, int]:
    """A no-argument call running an ``openvino.Model`` on CPU (one sync infer request) on ``batch``,
    and the batch size."""
    compiled = compile_openvino(ov_model)
    request = compiled.create_infer_request()
    feed = _feed([port.get_any_name() for port in compiled.inputs], batch)
    return (lambda: request.infer(feed)), _batch_size(feed)


def compare_throughput(fp32: tuple[Any, int], int8: tuple[Any, int], seconds: float = 1.0) -> dict:
    """FP32 vs INT8 samples/s, interleaved in rounds (``harness.interleaved``): the medians, the per-round
    speed-up as min/median/max, and the load around the measurement."""
    from bench import harness

    spreads, load = harness.interleaved(
        {"fp32": harness.rate(fp32[0], fp32[1], seconds), "int8": harness.rate(int8[0], int8[1], seconds)}
    )
    speedup = harness.ratio(spreads["int8"], spreads["fp32"])
    return {
        "fp32_tput": spreads["fp32"].median,
        "int8_tput": spreads["int8"].median,
        "speedup": speedup.as_dict(),
        "load": load.describe(),
        "busy": load.busy,
    }


def onnx_size_bytes(model: Any) -> int:
    """Serialized size of an ONNX model (ModelProto, or path to a file without external data)."""
    if isinstance(model, (str, os.PathLike)):
        return os.path.getsize(model)
    return model.ByteSize()


def openvino_size_bytes(model: Any) -> int:
    """Size of an `openvino.Model` saved as IR (.xml + .bin, weights not compressed to fp16)."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        return xml.stat().st_size + xml.with_suffix(".bin").stat().st_size


def torch_item(item: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """A dict of numpy arrays as a dict of torch tensors (a PyTorch model's keyword inputs)."""
    import torch

    return {key: torch.from_numpy(np.asarray(value)) for key, value in item.items()}


def torch_state_bytes(model: Any) -> int:
    """Bytes of a torch module's parameters and buffers (each storage counted once)."""
    seen, total = set(), 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        key = tensor.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += tensor.untyped_storage().nbytes()
    return total


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats are printed as given, so format them beforehand."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_summary() -> str:
    """One line describing where the figures were measured."""
    import platform

    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"


def _section(title: str, command: str, markdown_table: str, notes: str) -> str:
    parts = [f"## {title}", "", "```", command.strip(), "```", "", markdown_table.strip()]
    if notes:
        parts += ["", notes.strip()]
    return "\n".join(parts) + "\n"


def write_benchmarks_section(
    title: str, command: str, markdown_table: str, notes: str = "", path: str | os.PathLike | None = None
) -> Path:
    """Replace the `## title` section of BENCHMARKS.md (or append it) with the command and table."""
    target = Path(path) if path is not None else BENCHMARKS_MD
    text = target.read_text() if target.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    heading = f"## {title}".rstrip()
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    new = _section(title, command, markdown_table, notes)
    if start is None:
        body = "".join(lines).rstrip("\n")
        text = f"{body}\n\n{new}"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = "".join(lines[end:])
        text = "".join(lines[:start]) + new + ("\n" + tail if tail else "")
    target.write_text(text)
    return target


def run_cases_in_subprocesses(script: str, names: Sequence[str]) -> list[dict]:
    """Run `script --case NAME` for each name in its own process (so peak RSS is the case's own) and
    collect the JSON each prints after `RESULT `; failures are reported on stderr and skipped."""
    import json
    import subprocess

    results = []
    for name in names:
        out = subprocess.run([sys.executable, script, "--case", name], capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            print(f"{name} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
            continue
        results.append(json.loads(lines[-1][len("RESULT ") :]))
        print(json.dumps(results[-1]))
    return results
