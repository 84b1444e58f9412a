"""``nncompress train``: run a training sample (examples/<sample>/main.py) with its own arguments."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import nncompress
from nncompress.errors import InvalidPathError

SAMPLES = ("classification", "object_detection", "semantic_segmentation")
HELP = "run a training-time compression sample with a config (arguments after the options go to the sample)"
EPILOG = """every argument nncompress does not know is passed on to the sample's main.py; see
`nncompress train --sample classification --help-sample` for the sample's own options.

the samples are looked up in: --examples-dir, $NNCOMPRESS_EXAMPLES, the source checkout's examples/
folder, ./examples.

examples:
  nncompress train --sample classification --config examples/classification/configs/digits_int8_sym.json \\
      --checkpoint-dir runs/int8 --export runs/int8/model.onnx
  nncompress train --sample object_detection --config my_ssd_int8.json
"""


def add_parser(subparsers, parents: list) -> None:
    parser = subparsers.add_parser("train", help=HELP, description=HELP + ".", epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter, parents=parents,
                                   allow_abbrev=False)
    parser.add_argument("--sample", required=True, choices=SAMPLES, help="which sample to run")
    parser.add_argument("--examples-dir", metavar="FOLDER", help="folder holding the samples (examples/)")
    parser.add_argument("--help-sample", action="store_true", help="show the sample's own options")
    parser.set_defaults(run=run, passthrough=True)


def search_folders(examples_dir: str | None) -> list[Path]:
    folders = [Path(examples_dir)] if examples_dir else []
    if os.environ.get("NNCOMPRESS_EXAMPLES"):
        folders.append(Path(os.environ["NNCOMPRESS_EXAMPLES"]))
    folders.append(Path(nncompress.__file__).resolve().parents[2] / "examples")  # src/nncompress -> repo root
    folders.append(Path.cwd() / "examples")
    return folders


def find_sample(sample: str, examples_dir: str | None) -> Path:
    folders = search_folders(examples_dir)
    for folder in folders:
        script = folder / sample / "main.py"
        if script.is_file():
            return script
    raise InvalidPathError(f"sample {sample!r} not found: no {sample}/main.py in "
                           f"{', '.join(str(f) for f in folders)}; pass --examples-dir path/to/examples")


def run(args: argparse.Namespace) -> int:
    script = find_sample(args.sample, args.examples_dir)
    extra = list(args.extra) + (["--help"] if args.help_sample else [])
    src = str(Path(nncompress.__file__).resolve().parents[1])  # the samples import this very nncompress
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p))
    print(f"nncompress: running {script} {' '.join(extra)}", file=sys.stderr, flush=True)
    return subprocess.run([sys.executable, str(script), *extra], env=env).returncode
