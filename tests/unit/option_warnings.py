"""Helpers for tests of the once-per-process warnings about options that have no effect."""

from __future__ import annotations

import logging

import pytest

from nncompress import log


@pytest.fixture
def fresh_warnings():
    """Forget which once-per-process warnings were given (before and after the test)."""
    saved = set(log._warned)
    log._warned.clear()
    yield
    log._warned.clear()
    log._warned.update(saved)


def warnings_naming(caplog, option: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "nncompress" and r.levelno == logging.WARNING and option in r.getMessage()]
