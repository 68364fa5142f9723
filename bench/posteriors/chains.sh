#!/usr/bin/env bash
# Workload (3) only: 1 000 SGHMC chains of logistic regression (d = 20,
# batch 32), langevin vs posteriors (torch.func.vmap), alternating runs.
#
#   bench/posteriors/chains.sh               # ROUNDS=5, THREADS="1 2"
#   ROUNDS=3 THREADS=1 bench/posteriors/chains.sh
#
# Same protocol as run.sh (taskset to the first N cores, N threads for
# rayon / candle / torch, median per-step time over 5 blocks per invocation,
# median over rounds), but it writes its own files and leaves RESULTS.md and
# raw.jsonl (run.sh's) alone: raw lines to chains_raw.jsonl, the table to
# stdout (copied by hand into CHAINS.md). Needs .venv/posteriors (run.sh
# creates it) and builds the release example unless SKIP_BUILD=1.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="$ROOT/.venv/posteriors/bin/python"
ROUNDS="${ROUNDS:-5}"
THREADS="${THREADS:-1 2}"
RAW="$HERE/chains_raw.jsonl"

cd "$ROOT"
[ -x "$PY" ] || { echo "no $PY: run bench/posteriors/run.sh once to create it" >&2; exit 1; }
if [ "${SKIP_BUILD:-0}" != "1" ]; then
    cargo build --release -p langevin --example bench_posteriors
fi
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
BIN="$TARGET_DIR/release/examples/bench_posteriors"

: > "$RAW"
echo "load before: $(uptime)"
for n in $THREADS; do
    cpus="$(seq -s, 0 $((n - 1)))"
    export LANGEVIN_BENCH_THREADS="$n" RAYON_NUM_THREADS="$n" CANDLE_NUM_THREADS="$n" \
        OMP_NUM_THREADS="$n" MKL_NUM_THREADS="$n" OPENBLAS_NUM_THREADS="$n"
    for r in $(seq 1 "$ROUNDS"); do
        echo "threads=$n round=$r/$ROUNDS" >&2
        taskset -c "$cpus" "$BIN" chains 5 | sed "s/}\$/,\"round\":$r}/" >> "$RAW"
        taskset -c "$cpus" "$PY" "$HERE/bench.py" chains 5 2>/dev/null | sed "s/}\$/, \"round\": $r}/" >> "$RAW"
    done
done
echo "load after: $(uptime)"

"$PY" - "$RAW" <<'EOF'
import json, statistics, sys, collections
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = collections.defaultdict(list)
for r in rows:
    by[(r["threads"], r["system"], r["variant"])].append(r)
def fmt(s):
    return "—" if s != s else (f"{s*1e3:.3f} ms" if s >= 1e-3 else f"{s*1e6:.1f} µs")
for n in sorted({k[0] for k in by}):
    ref = by.get((n, "posteriors", "sghmc_vmap"), [])
    pw = statistics.median(r["median_s"] for r in ref) if ref else float("nan")
    pc = statistics.median(r["cpu_median_s"] for r in ref) if ref else float("nan")
    print(f"\n### {n} thread(s): posteriors vmap {fmt(pw)} wall, {fmt(pc)} CPU (n={len(ref)})\n")
    print("| langevin variant | wall | speed-up (wall) | CPU of calling thread | speed-up (CPU) | wall spread over rounds |")
    print("|---|---|---|---|---|---|")
    for (t, sysname, var), rs in sorted(by.items()):
        if t != n or sysname != "langevin":
            continue
        w = statistics.median(r["median_s"] for r in rs)
        c = statistics.median(r["cpu_median_s"] for r in rs)
        lo, hi = min(r["median_s"] for r in rs), max(r["median_s"] for r in rs)
        sc = f"{pc / c:.2f}x" if c == c and c > 0 else "—"
        print(f"| {var} | {fmt(w)} | {pw / w:.2f}x | {fmt(c)} | {sc} | {fmt(lo)}–{fmt(hi)} |")
EOF
