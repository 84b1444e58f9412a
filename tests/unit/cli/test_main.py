"""cli.main: --help of every command, one-line errors with exit codes 2 (usage) and 1 (nncompress errors)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nncompress.cli.main import main, parse

COMMANDS = ("quantize", "compress-weights", "accuracy-control", "train")
SRC = Path(__file__).resolve().parents[3] / "src"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: nncompress {command}" in out
    assert "examples:" in out and f"nncompress {command}" in out.split("examples:")[1]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("nncompress: error: ")
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("argv, fragment", [
    ([], "a command is needed"),
    (["squash", "m.onnx"], "invalid choice: 'squash'"),
    (["quantize", "m.onnx", "-o", "x.onnx"], "required: --data"),
    (["quantize", "m.onnx", "--data", "d.npy", "-o", "x.onnx", "--bogus"], "unrecognized arguments: --bogus"),
    (["quantize", "m.onnx", "--data", "d.npy", "-o", "x.onnx", "--input-size", "0"], "--input-size"),
])
def test_usage_errors_exit_2_with_one_line(argv, fragment, capsys):
    assert main(argv) == 2
    assert fragment in _one_error_line(capsys)


def test_missing_model_exits_1_naming_the_path(tmp_path, capsys):
    missing = tmp_path / "missing.onnx"
    assert main(["quantize", str(missing), "--data", "d.npy", "-o", str(tmp_path / "o.onnx")]) == 1
    line = _one_error_line(capsys)
    assert str(missing) in line and "does not exist" in line


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["quantize", str(tmp_path / "m.onnx"), "--data", "d.npy", "-o", "o.onnx", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "InvalidPathError" in err
    assert err.strip().splitlines()[-1].startswith("nncompress: error: ")


def test_train_passes_unknown_arguments_on_and_others_reject_them():
    args = parse(["train", "--sample", "classification", "--config", "c.json", "--epochs", "1"])
    assert args.extra == ["--config", "c.json", "--epochs", "1"]
    assert parse(["--quiet", "compress-weights", "m.xml", "-o", "o.xml", "--awq"]).awq is True


def test_python_dash_m_runs_the_command_line(tmp_path):
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "nncompress", "compress-weights", str(tmp_path / "m.xml"), "-o",
                           str(tmp_path / "o.xml")], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"nncompress: error: model {str(tmp_path / 'm.xml')!r} does not exist; give an ONNX file (.onnx), an OpenVINO "
        "IR (.xml), a Hugging Face model folder or a PyTorch checkpoint"]
