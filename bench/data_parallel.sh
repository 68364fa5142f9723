#!/usr/bin/env bash
# Data-parallel gradients (issue 17): the step time of one SGHMC chain on
# the 1 000 000-row synthetic logistic regression (the large-N scenario of
# crates/langevin/benches/large_n.rs: an intercept and 99 N(0, 1) features),
# one process against mpirun with 1 and 2 ranks of one thread each
# (`fit --data-parallel`), for minibatches of 256 rows and for full-batch
# gradients. The step time is the difference of two runs of different
# lengths over the difference of their steps, so loading the CSV and the
# report (5 draws kept in both) cancel out; the load time is what is left. Needs numpy (for the
# data) and the binary built with `--features mpi`:
#   cargo build --release -p langevin-cli --features mpi
#   bench/data_parallel.sh [path/to/langevin] [python with numpy] [rows]
set -euo pipefail
BIN=${1:-target/release/langevin}
PY=${2:-python3}
ROWS=${3:-1000000}
MPIRUN="mpirun --allow-run-as-root --oversubscribe --bind-to none"
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" - "$ROWS" "$TMP/big.csv" <<'PYEOF'
import sys, numpy as np
n = int(sys.argv[1]); out = sys.argv[2]
rng = np.random.default_rng(1)
d = 100
beta = rng.standard_normal(d) * 2 / np.sqrt(d)
with open(out, "w") as f:
    f.write(",".join(f"x{j}" for j in range(1, d)) + ",y\n")
    for start in range(0, n, 50_000):
        m = min(50_000, n - start)
        x = rng.standard_normal((m, d - 1))
        eta = beta[0] + x @ beta[1:]
        y = (rng.random(m) < 1 / (1 + np.exp(-eta))).astype(np.int8)
        np.savetxt(f, np.column_stack([np.round(x, 4), y]),
                   fmt=["%.4f"] * (d - 1) + ["%d"], delimiter=",")
PYEOF
echo "data: $ROWS rows, $(du -h "$TMP/big.csv" | cut -f1)"
RUN="fit --data $TMP/big.csv --target y --model logistic --method sghmc --adapt none --step-size 1e-4 --chains 1 --seed 1 --quiet --no-plots --threads 1"
wall() { # wall seconds of "$@"
    local t0 t1
    rm -rf "$TMP/out"
    t0=$(date +%s.%N)
    "$@" --out "$TMP/out" >/dev/null
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}
printf "| set-up | batch | step ms | load + report s |\n|---|---|---|---|\n"
for batch in "256|1000|61000" "all|10|70"; do
    IFS='|' read -r b s1 s2 <<<"$batch"
    bs=$b; [ "$b" = all ] && bs=$ROWS
    for setup in "1 process|$BIN $RUN" \
                 "mpirun -np 1 --data-parallel|$MPIRUN -np 1 $BIN $RUN --data-parallel" \
                 "mpirun -np 2 --data-parallel|$MPIRUN -np 2 $BIN $RUN --data-parallel"; do
        name=${setup%%|*}
        cmd=${setup#*|}
        # shellcheck disable=SC2086
        t1=$(wall $cmd --batch-size "$bs" --steps "$s1" --burn-in $((s1 - 5)) --thin 1)
        # shellcheck disable=SC2086
        t2=$(wall $cmd --batch-size "$bs" --steps "$s2" --burn-in $((s2 - 5)) --thin 1)
        step=$(echo "($t2 - $t1) / ($s2 - $s1)" | bc -l)
        printf "| %s | %s | %.3f | %.1f |\n" "$name" "$b" "$(echo "$step * 1000" | bc -l)" \
            "$(echo "$t1 - $s1 * $step" | bc -l)"
    done
done
