#!/usr/bin/env bash
# The main job: install, then quantize a real CNN with every backend and print before/after figures.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python3 examples/demo.py
