"""The steps every compressing subcommand shares: read the model and data, compress, write, report."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nncompress
from nncompress.cli.data import Items, add_data_options, load_items
from nncompress.cli.measure import Measurement, measure, original_graph
from nncompress.cli.models import LoadedModel, add_model_options, load_model
from nncompress.cli.output import check_output, save_result
from nncompress.cli.render import ReportContext, check_report_path, layer_rows, write_report


def add_io_options(parser: argparse.ArgumentParser, data_required: bool) -> None:
    add_model_options(parser)
    parser.add_argument("-o", "--output", required=True,
                        help="where the result goes: .onnx, .xml (OpenVINO IR), a folder (Hugging Face input) "
                             "or .pt/.pth (compress-weights of PyTorch models: the state_dict)")
    parser.add_argument("--report", metavar="FILE.md|FILE.html",
                        help="write the per-layer report (what was compressed, how, the error introduced)")
    parser.add_argument("--error-items", type=int, default=4, metavar="N",
                        help="calibration items on which --report measures the error (default 4; 0: none)")
    add_data_options(parser, data_required)


@dataclass
class Job:
    args: argparse.Namespace
    loaded: LoadedModel
    output: Path
    report_path: Path | None
    items: Items | list | None


def prepare(args: argparse.Namespace, weights_only: bool) -> Job:
    """Check every path and read the model and the data before any compression starts."""
    report_path = check_report_path(args.report)
    loaded = load_model(args)
    output = check_output(loaded, args.output, weights_only)
    items = load_items(args.data, loaded, args) if args.data else None
    return Job(args, loaded, output, report_path, items)


def finish(job: Job, result: Any, example: Any, command: str) -> None:
    """Write the result, print the summary and, with --report, measure the error and write the report."""
    report = nncompress.last_report()
    written = save_result(job.loaded, result, job.output, example)
    print(f"nncompress: wrote {written}")
    if report is not None:
        print(report.summary())
    if job.report_path is None or report is None:
        return
    items = [] if job.items is None else list(job.items[: max(job.args.error_items, 0)])
    if not items and example is not None and job.args.error_items > 0:
        items = [example]
    graph = original_graph(job.loaded.model, example)
    rows = layer_rows(report, graph, Measurement())
    measured = measure(job.loaded.model, result, [r.name for r in rows], items) if items else Measurement()
    if not items:
        why = "--error-items is 0" if job.args.error_items <= 0 else "no --data was given"
        measured.notes.append(f"{why}: the error was not measured")
    for row in rows:
        row.error = measured.layer_error.get(row.name)
    ctx = ReportContext(command, str(job.loaded.path), str(written), report, rows, measured)
    for path in write_report(job.report_path, ctx):
        print(f"nncompress: wrote {path}")


def run_job(args: argparse.Namespace, weights_only: bool, compress: Callable[[Job], tuple[Any, Any]]) -> int:
    """``compress(job)`` -> (compressed model, example input or None), between ``prepare`` and ``finish``."""
    start = time.perf_counter()
    job = prepare(args, weights_only)
    result, example = compress(job)
    finish(job, result, example, "nncompress " + shlex.join(sys.argv[1:] if args.argv is None else args.argv))
    print(f"nncompress: done in {time.perf_counter() - start:.1f} s")
    return 0
