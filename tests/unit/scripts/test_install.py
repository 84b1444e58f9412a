"""scripts/install.sh on a system Python that refuses installs outside a virtual environment (PEP 668)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SYSTEM_PYTHON = Path("/usr/bin/python3")


def _externally_managed(python: Path) -> bool:
    if not python.exists():
        return False
    stdlib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    return (Path(stdlib) / "EXTERNALLY-MANAGED").exists()


@pytest.mark.skipif(not _externally_managed(SYSTEM_PYTHON), reason="needs a PEP 668 system Python at /usr/bin/python3")
def test_install_without_venv_on_managed_python_says_how_to_make_one(tmp_path):
    (tmp_path / "python3").symlink_to(SYSTEM_PYTHON)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    env["PATH"] = f"{tmp_path}:/usr/bin:/bin"
    done = subprocess.run(["bash", str(ROOT / "scripts/install.sh")], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "PEP 668" in done.stderr
    assert "python3 -m venv .venv" in done.stderr and "source .venv/bin/activate" in done.stderr


def test_install_script_checks_the_active_environment_first():
    # The PEP 668 check must come before the first pip call, or pip's own error is what the user sees.
    script = (ROOT / "scripts/install.sh").read_text()
    assert script.index("EXTERNALLY-MANAGED") < script.index("pip install")
