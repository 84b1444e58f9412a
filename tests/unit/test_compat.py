"""install_as_nncf: `import nncf` and every nncf.* import give nncompress' module objects. Each case runs in
a fresh interpreter so this test run's sys.modules never holds an `nncf` alias."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=120)


def test_nncf_imports_resolve_to_nncompress_modules():
    result = _run("""
        import pickle, sys
        import nncompress
        assert nncompress.install_as_nncf() is nncompress
        assert "nncompress.onnx.quantization.backend_parameters" not in sys.modules  # resolved on demand below

        import nncf
        from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, QuantizationMode
        from nncf.parameters import CompressionFormat, StripFormat
        from nncf.onnx.quantization.backend_parameters import BackendParameters
        from nncf.errors import ParameterNotSupportedError
        import nncf.torch
        import nncompress.onnx.quantization.backend_parameters as real_bp

        assert nncf is nncompress
        assert AdvancedCompressionParameters is nncompress.AdvancedCompressionParameters
        assert QuantizationMode is nncompress.QuantizationScheme
        assert StripFormat.DQ.value == "dequantize" and CompressionFormat is nncompress.CompressionFormat
        assert BackendParameters is real_bp.BackendParameters
        assert sys.modules["nncf.onnx.quantization.backend_parameters"] is real_bp
        assert nncf.torch is sys.modules["nncompress.torch"]
        assert issubclass(ParameterNotSupportedError, nncompress.ValidationError)
        assert nncf.data.generate_text_data is nncompress.data.generate_text_data
        # the modules keep their own identity: one object under two names, no second copy
        assert real_bp.__spec__.name == "nncompress.onnx.quantization.backend_parameters"
        assert real_bp.__name__ == "nncompress.onnx.quantization.backend_parameters"
        assert b"nncompress.weight_parameters" in pickle.dumps(AdvancedCompressionParameters())
        files = [m.__file__ for n, m in sys.modules.items() if n.startswith("nncf") and getattr(m, "__file__", None)]
        assert all("nncompress" in f for f in files), files
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_second_call_is_a_no_op():
    result = _run("""
        import sys
        import nncompress
        nncompress.install_as_nncf()
        nncompress.install_as_nncf()
        finders = [f for f in sys.meta_path if type(f).__name__ == "NncfAliasFinder"]
        import nncf
        print(len(finders), nncf is nncompress)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "True"]


def test_refuses_when_the_real_nncf_is_already_imported():
    # a stand-in module plays the imported NNCF: the real package is never imported
    result = _run("""
        import sys, types
        sys.modules["nncf"] = types.ModuleType("nncf")
        import nncompress
        try:
            nncompress.install_as_nncf()
        except nncompress.InstallationError as error:
            print("refused:", error)
        else:
            print("installed")
        print(any(type(f).__name__ == "NncfAliasFinder" for f in sys.meta_path))
    """)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().splitlines()
    assert first.startswith("refused: the nncf package is already imported (nncf from")
    assert "install_as_nncf() before anything imports nncf" in first
    assert second == "False"


def test_torch_namespace_does_not_shadow_torch():
    pytest.importorskip("torch")
    result = _run("""
        import sys
        import nncompress
        import nncompress.torch, nncompress.onnx
        assert "torch" not in sys.modules and "onnx" not in sys.modules  # the namespaces import neither
        nncompress.install_as_nncf()
        import nncf.torch
        import torch
        assert "nncompress" not in torch.__file__ and hasattr(torch, "nn")
        from nncompress.backends.torch.adapter import TorchAdapter  # the backend's `import torch` is the real one
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
