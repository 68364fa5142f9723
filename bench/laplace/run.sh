#!/usr/bin/env bash
# Laplace on an MLP, langevin against laplace-torch at the same MAP (bench/laplace/compare.py):
#
#   bench/laplace/run.sh            # THREADS=1
#
# Installs laplace-torch (and torch) from PyPI into .venv/laplace on first use,
# builds the release binary, pins both systems to the first THREADS cores and
# appends to bench/laplace/raw.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$(pwd)"
THREADS="${THREADS:-1}"
VENV="$ROOT/.venv/laplace"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import laplace, torch" 2>/dev/null; then
    python3 -m venv "$VENV"
    PIP_NO_CACHE_DIR=1 "$VENV/bin/pip" install laplace-torch torch
fi
cargo build --release -p langevin-cli
CORES="0-$((THREADS - 1))"
THREADS="$THREADS" taskset -c "$CORES" "$VENV/bin/python" bench/laplace/compare.py
