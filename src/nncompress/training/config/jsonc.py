"""JSON with comments (``//`` and ``/* */``) and trailing commas, as NNCF's config files use.

Comments are blanked out character for character (newlines kept), so a JSON error still points at
the right line and column of the original file. Text inside strings is never touched: a URL's
``//`` stays.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nncompress.errors import ConfigError


def strip_comments(text: str) -> str:
    """``text`` with comments replaced by spaces and trailing commas before ``}``/``]`` removed."""
    out = list(text)
    i, n = 0, len(text)
    in_string = False
    while i < n:
        c = text[i]
        if in_string:
            if c == "\\":
                i += 2
                continue
            in_string = c != '"'
        elif c == '"':
            in_string = True
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            _blank(out, i, end)
            i = end
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise _unterminated(text, i)
            _blank(out, i, end + 2)
            i = end + 2
            continue
        i += 1
    return _drop_trailing_commas("".join(out))


def _blank(out: list[str], start: int, end: int) -> None:
    for j in range(start, end):
        if out[j] not in "\r\n":
            out[j] = " "


def _unterminated(text: str, pos: int) -> json.JSONDecodeError:
    return json.JSONDecodeError("unterminated /* comment", text, pos)


def _drop_trailing_commas(text: str) -> str:
    out = list(text)
    in_string = False
    last_comma = -1
    i = 0
    while i < len(text):
        c = text[i]
        if in_string:
            if c == "\\":
                i += 2
                continue
            in_string = c != '"'
        elif c == '"':
            in_string, last_comma = True, -1
        elif c == ",":
            last_comma = i
        elif c in "}]":
            if last_comma >= 0:
                out[last_comma] = " "
            last_comma = -1
        elif not c.isspace():
            last_comma = -1
        i += 1
    return "".join(out)


def loads(text: str, source: str = "<string>") -> Any:
    """Parse JSON with comments; a syntax error is a ``ConfigError`` naming ``source``, line and column."""
    try:
        return json.loads(strip_comments(text))
    except json.JSONDecodeError as e:
        line = text.splitlines()[e.lineno - 1] if 0 < e.lineno <= len(text.splitlines()) else ""
        raise ConfigError(
            f"{source}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}\n    {line.strip()}"
        ) from None


def load(path: str | Path) -> Any:
    """Read and parse a JSON-with-comments file; a missing or unreadable file is a ``ConfigError``."""
    p = Path(path)
    if not p.is_file():
        what = "is a directory, not a file" if p.is_dir() else "does not exist"
        raise ConfigError(f"config file {str(p)!r} {what}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {e}") from None
    return loads(text, str(p))
