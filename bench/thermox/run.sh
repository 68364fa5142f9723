#!/usr/bin/env bash
# Exact OU sampler (d = 100, 10 000 steps) and thermodynamic solve (d = 50,
# 10 000 readouts): langevin (Rust) against thermox (JAX, CPU), one thread each,
# run alternately for several rounds. Usage: bench/thermox/run.sh [ROUNDS] [REPS]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
REPS=${2:-5}
CPU=${CPU:-0}
VENV=.venv/thermox
OUT=runs/thermox
mkdir -p "$OUT"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet thermox jax
fi
cargo build --release -p langevin-thermo --example thermox_bench
BIN=target/release/examples/thermox_bench
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 RAYON_NUM_THREADS=1
: > "$OUT/results.jsonl"
for r in $(seq 1 "$ROUNDS"); do
    taskset -c "$CPU" "$BIN" "$OUT" "$REPS" | tee -a "$OUT/results.jsonl"
    taskset -c "$CPU" "$VENV/bin/python" bench/thermox/thermox_bench.py "$OUT" "$REPS" | tee -a "$OUT/results.jsonl"
done
cp "$OUT/results.jsonl" bench/thermox/raw.jsonl   # kept in the repository (runs/ is ignored)
"$VENV/bin/python" bench/thermox/summarize.py "$OUT/results.jsonl"
