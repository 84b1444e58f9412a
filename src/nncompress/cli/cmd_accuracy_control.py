"""``nncompress accuracy-control``: INT8 quantization within a metric budget
(``nncompress.quantize_with_accuracy_control``) with a validation function from a Python file."""

from __future__ import annotations

import argparse

import nncompress
from nncompress.cli.common import add_quantize_options, quantize_kwargs, resolve_reference
from nncompress.cli.data import load_items
from nncompress.cli.run import Job, add_io_options, run_job
from nncompress.errors import ValidationError

HELP = "INT8 quantization that keeps a validation metric within --max-drop"
EPILOG = """the validation hook:
  --validate path/to/script.py:function (or pkg.module:function) names a Python function

      def function(model, items) -> float

  model: the model to evaluate, ready to run: an openvino.CompiledModel (call it on an item), an
         onnx.ModelProto (open an onnxruntime.InferenceSession on model.SerializeToString()) or a
         torch.nn.Module (call it on an item);
  items: the --validation-data items (default: the --data items) in file order, each one model input as
         described for --data; the function reads its labels itself (e.g. np.load of a labels file).
  It returns the metric (higher is better unless it is a loss); it may also return
  (metric, per_item_values).

examples:
  nncompress accuracy-control model.onnx --data calib.npy --validation-data val.npy \\
      --validate eval.py:top1 --max-drop 0.01 -o model_int8.onnx --report report.md
"""


def add_parser(subparsers, parents: list) -> None:
    parser = subparsers.add_parser("accuracy-control", help=HELP,
                                   description=HELP + " (nncompress.quantize_with_accuracy_control).",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, parents=parents)
    add_io_options(parser, data_required=True)
    group = parser.add_argument_group("accuracy control")
    group.add_argument("--validate", required=True, metavar="FILE.py:FUNCTION",
                       help="validation function(model, items) -> metric (see below)")
    group.add_argument("--validation-data", metavar="PATH", help="validation items (default: --data), same formats")
    group.add_argument("--max-drop", type=float, default=0.01, help="largest metric drop allowed (default 0.01)")
    group.add_argument("--drop-type", default="absolute", help="absolute or relative (default absolute)")
    add_quantize_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    validate = resolve_reference(args.validate, "--validate")
    if not callable(validate):
        raise ValidationError(f"--validate {args.validate!r} names a {type(validate).__name__}, not a function")

    def compress(job: Job):
        validation = load_items(args.validation_data, job.loaded, args) if args.validation_data else job.items
        result = nncompress.quantize_with_accuracy_control(
            job.loaded.model, nncompress.Dataset(job.items), nncompress.Dataset(validation), validate,
            max_drop=args.max_drop, drop_type=args.drop_type, **quantize_kwargs(args))
        return result, job.items[0]

    return run_job(args, weights_only=False, compress=compress)
