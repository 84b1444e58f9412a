"""``nncompress quantize``: post-training INT8 quantization (``nncompress.quantize``)."""

from __future__ import annotations

import argparse

import nncompress
from nncompress.cli.common import add_quantize_options, quantize_kwargs
from nncompress.cli.run import Job, add_io_options, run_job

HELP = "post-training INT8 quantization of weights and activations"
EPILOG = """examples:
  nncompress quantize model.onnx --data calib.npy -o model_int8.onnx --report report.html
  nncompress quantize model.xml --data images/ --mean 123.7,116.3,103.5 --std 58.4,57.1,57.4 -o int8.xml
  nncompress quantize bert.onnx --data lines.txt --tokenizer bert_folder/ --model-type transformer -o int8.onnx
  nncompress quantize net.pt --model-class mypkg.nets:Net --data calib.npy -o net_int8.onnx
"""


def add_parser(subparsers, parents: list) -> None:
    parser = subparsers.add_parser("quantize", help=HELP, description=HELP + " (nncompress.quantize).",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, parents=parents)
    add_io_options(parser, data_required=True)
    add_quantize_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    def compress(job: Job):
        dataset = nncompress.Dataset(job.items)
        return nncompress.quantize(job.loaded.model, dataset, **quantize_kwargs(args)), job.items[0]

    return run_job(args, weights_only=False, compress=compress)
