"""``nncompress compress-weights``: weight compression (``nncompress.compress_weights``)."""

from __future__ import annotations

import argparse

import nncompress
from nncompress.cli.common import add_ignored_scope, enum_values, ignored_scope
from nncompress.cli.data import load_tokenizer
from nncompress.cli.run import Job, add_io_options, run_job
from nncompress.errors import ValidationError
from nncompress.parameters import BackupMode, CompressWeightsMode, SensitivityMetric

HELP = "compress weights to INT8/INT4/NF4/FP formats (for large models)"
EPILOG = """examples:
  nncompress compress-weights model.xml -o model_int8.xml                      # INT8 asym, data-free
  nncompress compress-weights hf_folder/ -o hf_int8/ --report report.md         # a Hugging Face folder
  nncompress compress-weights llm_folder/ --mode int4_asym --group-size 64 --ratio 0.8 -o llm.onnx
  nncompress compress-weights llm_folder/ --mode int4_sym --data text.txt --awq --scale-estimation -o out/
"""
FLAGS = ("all_layers", "awq", "scale_estimation", "gptq", "lora_correction")
EXAMPLE_TEXT = "An example sentence for tracing the model."


def add_parser(subparsers, parents: list) -> None:
    parser = subparsers.add_parser("compress-weights", help=HELP, description=HELP + " (nncompress.compress_weights).",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, parents=parents)
    add_io_options(parser, data_required=False)
    group = parser.add_argument_group("weight compression")
    group.add_argument("--mode", default="int8_asym", help=f"one of: {enum_values(CompressWeightsMode)} "
                                                           "(default int8_asym)")
    group.add_argument("--ratio", type=float, help="share of weights in the primary (4-bit) mode, 0..1")
    group.add_argument("--group-size", type=int, help="elements per scale group (-1: per channel)")
    group.add_argument("--sensitivity-metric", help=f"mixed precision ranking: {enum_values(SensitivityMetric)}")
    group.add_argument("--backup-mode", help=f"mode of the layers not in the primary mode: {enum_values(BackupMode)}")
    group.add_argument("--subset-size", type=int, default=128, help="data items used by data-aware methods (128)")
    for flag in FLAGS:
        group.add_argument("--" + flag.replace("_", "-"), action="store_true", default=None,
                           help=f"enable {flag}" if flag != "all_layers" else "compress embeddings and the last "
                                "layer in the primary mode too")
    add_ignored_scope(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    def compress(job: Job):
        example = job.items[0] if job.items is not None else _example(job)
        dataset = nncompress.Dataset(job.items) if job.items is not None else None
        if dataset is None and job.loaded.backend == "torch":
            dataset = nncompress.Dataset([example])  # the graph is captured by running the model once
        kwargs = {flag: getattr(args, flag) for flag in FLAGS}
        result = nncompress.compress_weights(
            job.loaded.model, mode=args.mode, ratio=args.ratio, group_size=args.group_size,
            ignored_scope=ignored_scope(args), dataset=dataset, sensitivity_metric=args.sensitivity_metric,
            subset_size=args.subset_size, backup_mode=args.backup_mode, **kwargs)
        return result, example

    return run_job(args, weights_only=True, compress=compress)


def _example(job: Job):
    """A tokenized sentence where a PyTorch model must run once (graph capture, export) and no --data is given."""
    if job.loaded.backend != "torch":
        return None
    if job.loaded.hf_folder is None:
        raise ValidationError("a PyTorch checkpoint must run once to be compressed: give --data with at least one "
                              "input item (.npy/.npz/images)")
    import sys

    import torch

    print(f"nncompress: note: no --data; the model runs once on the sentence {EXAMPLE_TEXT!r} to be traced "
          "(the compression itself reads no data)", file=sys.stderr)
    encoded = load_tokenizer(job.loaded.hf_folder)(EXAMPLE_TEXT, return_tensors="pt")
    wanted = job.loaded.input_names
    return {k: v.to(torch.int64) for k, v in encoded.items() if not wanted or k in wanted}
