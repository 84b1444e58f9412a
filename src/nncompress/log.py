"""The ``nncompress`` logger: INFO messages to stdout by default, as NNCF's logger does.

Progress of accuracy control and the bit-width table of ``compress_weights`` go through it;
``nncompress.set_log_level(logging.WARNING)`` silences them.
"""

from __future__ import annotations

import logging
import sys
import threading

logger = logging.getLogger("nncompress")
_warned: set[str] = set()  # keys of the once-per-process warnings already given
_warned_lock = threading.Lock()


class _DefaultHandler(logging.StreamHandler):
    """Writes to stdout unless the application configured logging (root handlers): then propagation
    alone delivers the message, exactly once."""

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:
            return
        self.stream = sys.stdout  # the current stdout (it may have been replaced since import)
        super().emit(record)


def _install_default_handler() -> None:
    if any(isinstance(h, _DefaultHandler) for h in logger.handlers):
        return
    handler = _DefaultHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def set_log_level(level: int) -> None:
    """Show ``nncompress`` messages of ``level`` and above (e.g. ``logging.WARNING`` for no INFO)."""
    logger.setLevel(level)


_install_default_handler()


def disable_logging() -> None:
    """Silence every ``nncompress`` message (errors are still raised)."""
    logger.setLevel(logging.CRITICAL + 1)


def warn_once(key: str, message: str) -> None:
    """Log ``message`` as a warning on the ``nncompress`` logger the first time ``key`` comes up in
    this process (e.g. an option that is accepted for NNCF compatibility but has no effect)."""
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning(message)
