#!/usr/bin/env bash
# Install everything the tests need into the active environment, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python3 -m pytest "$@"
