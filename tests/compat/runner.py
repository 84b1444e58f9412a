"""Run the example snippets (``snippets/*.py``, written with NNCF's ``import nncf`` lines) two ways:

- ``run_rewritten``: in this process, with the imports rewritten as a user switching would write them
  (``import nncf`` -> ``import nncompress as nncf``, ``from nncf.x import y`` -> ``from nncompress.x import y``);
- ``run_unchanged``: the files as they are, in a fresh interpreter after ``nncompress.install_as_nncf()``
  (so this test process never holds an ``nncf`` alias in ``sys.modules``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SNIPPETS = Path(__file__).with_name("snippets")
MARK = "@@compat-results@@"

_IMPORT = re.compile(r"^(\s*)import nncf((?:\.[\w.]+)?)\s*$", re.MULTILINE)
_FROM = re.compile(r"^(\s*)from nncf(\.[\w.]+)? import ", re.MULTILINE)


def snippet_path(name: str) -> Path:
    return SNIPPETS / f"{name}.py"


def rewrite(source: str) -> str:
    """The snippet as it reads after switching to ``import nncompress as nncf``."""

    def one_import(match: re.Match) -> str:
        indent, sub = match.group(1), match.group(2)
        extra = f"{indent}import nncompress{sub}\n" if sub else ""
        return f"{extra}{indent}import nncompress as nncf"

    source = _IMPORT.sub(one_import, source)
    return _FROM.sub(lambda m: f"{m.group(1)}from nncompress{m.group(2) or ''} import ", source)


def run_rewritten(name: str) -> dict:
    """Execute the rewritten snippet here; returns its global namespace (raises what the snippet raises)."""
    path = snippet_path(name)
    namespace = {"__name__": "__main__", "__file__": str(path)}
    exec(compile(rewrite(path.read_text()), str(path), "exec"), namespace)  # noqa: S102 (our own test files)
    return namespace


_DRIVER = f"""
import contextlib, io, json, runpy, sys, traceback
import nncompress
nncompress.install_as_nncf()
results = {{}}
for path in sys.argv[1:]:
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(path, run_name="__main__")
        results[path] = {{"ok": True, "output": out.getvalue()}}
    except BaseException:
        results[path] = {{"ok": False, "output": out.getvalue() + traceback.format_exc()}}
import nncf
files = sorted(getattr(m, "__file__", "") or "" for n, m in sys.modules.items() if n.split(".")[0] == "nncf")
results["__nncf__"] = {{"is_nncompress": nncf is nncompress, "files": files}}
print({MARK!r} + json.dumps(results))
"""


def run_unchanged(names: list[str], timeout: float = 900) -> dict[str, dict]:
    """Run the unchanged snippet files in one fresh interpreter after ``install_as_nncf()``.

    Returns {name: {"ok": bool, "output": text}} plus ``"__nncf__"``: what ``nncf`` was in that interpreter.
    """
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    paths = [str(snippet_path(name)) for name in names]
    done = subprocess.run([sys.executable, "-c", _DRIVER, *paths], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARK)), None)
    if line is None:
        raise RuntimeError(f"the snippet interpreter failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line[len(MARK):])
    return {("__nncf__" if key == "__nncf__" else Path(key).stem): value for key, value in raw.items()}
