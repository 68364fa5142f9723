#!/usr/bin/env bash
# Every side-by-side benchmark of langevin against its peers, in one command:
#
#   bench/run.sh                    # ROUNDS=3, THREADS="1 2"
#   ROUNDS=5 THREADS=1 bench/run.sh
#
# 1. bench/posteriors/run.sh: posteriors (PyTorch) workloads 1, 2, 5, 8 (MLP
#    SGHMC step, logistic SGHMC step, VI step, matmul limit), ROUNDS rounds at
#    each thread count, then workload 4 (Laplace over 10 000 points: minutes
#    per invocation for posteriors) once at one thread.
# 2. bench/posteriors/chains.sh: workload 3, 1 000 chains.
# 3. bench/thermox/run.sh: workloads 6 and 7 (OU sampling, solve) against thermox.
# 4. bench/headline.py: the headline table of BENCHMARKS.md from their raw data.
#
# Each script installs its peer from PyPI into .venv/ (ignored) on first use,
# builds the release examples, pins every system to the same cores with the
# same thread count and alternates the systems round by round.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-3}"
THREADS="${THREADS:-1 2}"

ROUNDS="$ROUNDS" THREADS="$THREADS" WORKLOADS="matmul mlp vi logreg" bench/posteriors/run.sh
SKIP_BUILD=1 APPEND=1 ROUNDS=1 THREADS=1 WORKLOADS=laplace bench/posteriors/run.sh
SKIP_BUILD=1 ROUNDS="$ROUNDS" THREADS="$THREADS" bench/posteriors/chains.sh
bench/thermox/run.sh "$ROUNDS" 5
python3 bench/headline.py
python3 bench/headline.py --print
