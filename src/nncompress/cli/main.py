"""The ``nncompress`` command: subcommands, error handling (one line, exit 2 for usage errors, 1 for
nncompress errors; ``--debug`` shows the traceback)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from nncompress.cli import cmd_accuracy_control, cmd_compress_weights, cmd_quantize, cmd_train

EPILOG = """examples:
  nncompress quantize model.onnx --data calib.npy -o model_int8.onnx --report report.html
  nncompress compress-weights hf_folder/ -o hf_int8/ --report report.md
  nncompress accuracy-control model.xml --data calib.npz --validate eval.py:top1 -o int8.xml
  nncompress train --sample classification --config examples/classification/configs/digits_int8_sym.json

`nncompress COMMAND --help` describes each command. Documentation: docs/cli.md.
"""


class UsageError(Exception):
    """A command line that argparse rejects (exit code 2)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are raised (one line, printed by ``main``) instead of printed with usage."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> Parser:
    parser = Parser(prog="nncompress", description="Compress neural networks (ONNX, OpenVINO IR, Hugging Face "
                    "folders, PyTorch checkpoints) from the command line.", epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_global_options(parser, default=None)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    shared = Parser(add_help=False)
    _add_global_options(shared, default=argparse.SUPPRESS)  # also accepted after the command
    for module in (cmd_quantize, cmd_compress_weights, cmd_accuracy_control, cmd_train):
        module.add_parser(subparsers, [shared])
    return parser


def _add_global_options(parser: argparse.ArgumentParser, default) -> None:
    group = parser.add_argument_group("general")
    group.add_argument("--debug", action="store_true", default=default, help="show the full traceback of an error")
    group.add_argument("--quiet", action="store_true", default=default,
                       help="only warnings and errors from the library")
    group.add_argument("--progress", choices=("auto", "on", "off"), default=default,
                       help="progress bars (default auto: on an interactive terminal)")


def _version() -> str:
    from nncompress import __version__

    return __version__


def parse(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        raise UsageError("a command is needed: quantize, compress-weights, accuracy-control or train "
                         "(see `nncompress --help`)")
    if extra and not getattr(args, "passthrough", False):
        raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see `nncompress {args.command} --help`)")
    args.extra = extra
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = parse(argv)
        _configure(args)
        return args.run(args)
    except UsageError as exc:
        return _fail(exc, 2, debug)
    except KeyboardInterrupt:
        print("nncompress: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 (every error becomes one line; --debug shows the traceback)
        from nncompress.errors import NNCompressError

        return _fail(exc, 1, debug, known=isinstance(exc, NNCompressError))


def _configure(args: argparse.Namespace) -> None:
    if args.progress not in (None, "auto"):
        os.environ["NNCOMPRESS_PROGRESS"] = "1" if args.progress == "on" else "0"
    if args.quiet:
        logging.getLogger("nncompress").setLevel(logging.WARNING)


def _fail(exc: BaseException, code: int, debug: bool, known: bool = True) -> int:
    if debug:
        traceback.print_exc()
    message = " ".join(str(exc).split()) or type(exc).__name__
    if not known:  # not raised on purpose by nncompress: name the exception type, it is what a bug report needs
        message = f"{type(exc).__name__}: {message} (run with --debug for the traceback)"
    print(f"nncompress: error: {message}", file=sys.stderr)
    return code
