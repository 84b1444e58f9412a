"""warn_once: one warning per key and process."""

from __future__ import annotations

import logging

from nncompress.log import warn_once

from .option_warnings import fresh_warnings, warnings_naming  # noqa: F401


def test_a_key_warns_once(fresh_warnings, caplog):  # noqa: F811
    with caplog.at_level(logging.WARNING, logger="nncompress"):
        for _ in range(3):
            warn_once("some_option", "some_option has no effect")
        warn_once("other_option", "other_option has no effect")
    assert warnings_naming(caplog, "some_option") == ["some_option has no effect"]
    assert len(warnings_naming(caplog, "other_option")) == 1
