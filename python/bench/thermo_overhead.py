"""langevin.thermo from Python vs the Rust library on the same workloads as
crates/langevin-thermo/examples/thermox_bench.rs (BENCHMARKS.md workloads 6
and 7: exact OU sampling d = 100, 10 000 steps; solve d = 50, 10 000
readouts), same build profile. The speed-ups over thermox measured from
Rust are kept within 20% when the Python call takes at most 1.2x the Rust
call.

Usage: python python/bench/thermo_overhead.py EXAMPLE_BIN [REPS]
(EXAMPLE_BIN: target/<profile>/examples/thermox_bench; run one thread:
RAYON_NUM_THREADS=1 taskset -c 0 ...)
"""

import json
import subprocess
import sys
import tempfile
import time

import numpy as np

from langevin import thermo


def main():
    exe = sys.argv[1]
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    d = tempfile.mkdtemp()
    rust = json.loads(subprocess.run([exe, d, str(reps)], check=True, capture_output=True, text=True).stdout)
    a_sample = np.loadtxt(f"{d}/A_sample.csv", delimiter=",")
    a_solve = np.loadtxt(f"{d}/A_solve.csv", delimiter=",")
    ts = np.arange(10_001) * 0.1
    sample_s, solve_s = [], []
    for rep in range(reps + 1):
        t0 = time.perf_counter()
        thermo.sample(rep, ts, np.zeros(100), a_sample, np.zeros(100), 2.0 * np.eye(100))
        dt = time.perf_counter() - t0
        if rep:
            sample_s.append(dt)
        t0 = time.perf_counter()
        thermo.linalg.solve(a_solve, np.ones(50), seed=rep, analog_time=10_000.0,
                            sampling_interval=1.0, burn_in=0.0, beta=2.0, batches=20)
        dt = time.perf_counter() - t0
        if rep:
            solve_s.append(dt)
    ps, pv = np.median(sample_s), np.median(solve_s)
    rs, rv = rust["sample_d100_T10000_s"], rust["solve_d50_N10000_s"]
    print(f"OU sample d=100, 10 000 steps: Rust {1e3 * rs:.1f} ms, Python {1e3 * ps:.1f} ms, ratio {ps / rs:.3f}")
    print(f"solve d=50, 10 000 readouts:   Rust {1e3 * rv:.2f} ms, Python {1e3 * pv:.2f} ms, ratio {pv / rv:.3f}")


if __name__ == "__main__":
    main()
