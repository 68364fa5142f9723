#!/usr/bin/env bash
# Side-by-side speed comparison of langevin and posteriors (PyTorch).
#
#   bench/posteriors/run.sh            # full run: 1 thread, then 2 threads
#   ROUNDS=3 THREADS="1" bench/posteriors/run.sh
#   WORKLOADS="mlp logreg" bench/posteriors/run.sh
#   (workloads: matmul mlp laplace vi logreg chains; laplace is one full pass
#   over 10 000 points per block, 2 blocks per invocation)
#   CRITERION=1 bench/posteriors/run.sh   # also the criterion benches (sghmc_mlp, sgmcmc_steps)
#   SKIP_BUILD=1 bench/posteriors/run.sh  # use the already built release example
#   APPEND=1 ... bench/posteriors/run.sh  # add to raw.jsonl instead of starting it afresh
#
# For every thread count and workload the two systems run alternately, ROUNDS
# times each, in the same shell (same load), pinned with taskset to the first
# N cores, with RAYON_NUM_THREADS / CANDLE_NUM_THREADS / OMP_NUM_THREADS /
# MKL_NUM_THREADS = N and torch.set_num_threads(N). Each invocation prints the
# median per-step time over its blocks; the summary takes the median over the
# rounds. Raw JSON lines: bench/posteriors/raw.jsonl. Report: RESULTS.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$ROOT/.venv/posteriors"
ROUNDS="${ROUNDS:-5}"
THREADS="${THREADS:-1 2}"
WORKLOADS="${WORKLOADS:-matmul mlp laplace vi logreg chains}"
CRITERION="${CRITERION:-0}"
RAW="$HERE/raw.jsonl"

cd "$ROOT"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    PIP_NO_CACHE_DIR=1 "$VENV/bin/pip" install posteriors torch
fi
PY="$VENV/bin/python"

if [ "${SKIP_BUILD:-0}" != "1" ]; then
    cargo build --release -p langevin --example bench_posteriors
fi
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
BIN="$TARGET_DIR/release/examples/bench_posteriors"

if [ "${APPEND:-0}" != "1" ]; then
    : > "$RAW"
fi
LOAD_BEFORE="$(uptime)"
for n in $THREADS; do
    cpus="$(seq -s, 0 $((n - 1)))"
    export LANGEVIN_BENCH_THREADS="$n" RAYON_NUM_THREADS="$n" CANDLE_NUM_THREADS="$n" \
        OMP_NUM_THREADS="$n" MKL_NUM_THREADS="$n" OPENBLAS_NUM_THREADS="$n"
    for w in $WORKLOADS; do
        for r in $(seq 1 "$ROUNDS"); do
            echo "threads=$n workload=$w round=$r/$ROUNDS" >&2
            reps=5
            if [ "$w" = laplace ]; then reps=2; fi
            taskset -c "$cpus" "$BIN" "$w" "$reps" | sed "s/}\$/,\"round\":$r}/" >> "$RAW"
            taskset -c "$cpus" "$PY" "$HERE/bench.py" "$w" "$reps" 2>/dev/null | sed "s/}\$/, \"round\": $r}/" >> "$RAW"
        done
    done
done
LOAD_AFTER="$(uptime)"

if [ "$CRITERION" = "1" ]; then
    export LANGEVIN_BENCH_THREADS=1 RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1
    taskset -c 0 cargo bench -p langevin --bench sghmc_mlp 2>&1 | tee "$HERE/criterion_sghmc_mlp.txt"
    taskset -c 0 cargo bench -p langevin --bench sgmcmc_steps 2>&1 | tee "$HERE/criterion_sgmcmc_steps.txt"
fi

CMD="bench/posteriors/run.sh (ROUNDS=$ROUNDS THREADS=\"$THREADS\" WORKLOADS=\"$WORKLOADS\" CRITERION=$CRITERION)"
"$PY" "$HERE/summarize.py" --raw "$RAW" --out "$HERE/RESULTS.md" --command "$CMD" \
    --load-before "$LOAD_BEFORE" --load-after "$LOAD_AFTER" --criterion-dir "$TARGET_DIR/criterion" \
    --rustc "$(rustc --version)"
echo "wrote $HERE/RESULTS.md" >&2
