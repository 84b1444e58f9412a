"""The ``nncompress`` command line (``python -m nncompress``); ``main(argv)`` returns the exit code."""

from nncompress.cli.main import main

__all__ = ["main"]
