#!/usr/bin/env bash
# Chain throughput over processes (issue 17): one process with 1 and 2
# threads against mpirun with 1 and 2 ranks of one thread each, same run
# (same draws). Needs the binary built with `--features mpi`:
#   cargo build --release -p langevin-cli --features mpi
#   bench/mpi_chains.sh [path/to/langevin] [repeats]
set -euo pipefail
BIN=${1:-target/release/langevin}
REPEATS=${2:-3}
MPIRUN="mpirun --allow-run-as-root --oversubscribe --bind-to none"
RUN="fit --data digits --model softmax --method sghmc --steps 3000 --chains 4 --seed 1 --quiet --no-plots"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
best() { # best wall time of REPEATS runs of "$@"
    local b=""
    for _ in $(seq "$REPEATS"); do
        rm -rf "$TMP/out"
        local t0 t1
        t0=$(date +%s.%N)
        "$@" --out "$TMP/out" >/dev/null
        t1=$(date +%s.%N)
        local t
        t=$(echo "$t1 - $t0" | bc -l)
        if [ -z "$b" ] || (($(echo "$t < $b" | bc -l))); then b=$t; fi
    done
    echo "$b"
}
steps=$((3000 * 4))
printf "| set-up | wall s (best of %s) | chain-steps/s |\n|---|---|---|\n" "$REPEATS"
for setup in "1 process, 1 thread|$BIN $RUN --threads 1" \
             "1 process, 2 threads|$BIN $RUN --threads 2" \
             "mpirun -np 1, 1 thread|$MPIRUN -np 1 $BIN $RUN --threads 1" \
             "mpirun -np 2, 1 thread each|$MPIRUN -np 2 $BIN $RUN --threads 1"; do
    name=${setup%%|*}
    cmd=${setup#*|}
    # shellcheck disable=SC2086
    t=$(best $cmd)
    printf "| %s | %.2f | %.0f |\n" "$name" "$t" "$(echo "$steps / $t" | bc -l)"
done
