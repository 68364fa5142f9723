"""Python package overheads (BENCHMARKS.md, "Python package").

1. ``langevin.fit`` vs the ``langevin`` program on the same data and seed
   (identical draws), alternately, ROUNDS rounds; wall-clock seconds.
2. A Python-callback log density through ``transform.run``: seconds per
   SGHMC step, NumPy logistic regression, d = 20, batch 32, against the cost
   of the density calls alone (a Python loop calling it).

Usage: python python/bench/overhead.py [LANGEVIN_BIN] [ROUNDS]
"""

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import langevin
from langevin import sgmcmc


def fit_overhead(exe, rounds):
    X, y, names, target = langevin.datasets.load("breast_cancer", return_names=True)
    cli, py = [], []
    for r in range(rounds):
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            subprocess.run([exe, "fit", "--data", "breast_cancer", "--seed", str(r), "--quiet",
                            "--no-plots", "--out", os.path.join(d, "cli")], check=True)
            cli.append(time.perf_counter() - t)
            t = time.perf_counter()
            langevin.fit(X, y, feature_names=names, target=target, seed=r, out=os.path.join(d, "py"))
            py.append(time.perf_counter() - t)
    return np.array(cli), np.array(py)


def callback_overhead(n_steps=20_000):
    rng = np.random.default_rng(0)
    d, n, b = 20, 1000, 32
    X = rng.normal(size=(n, d))
    y = (rng.random(n) < 0.5).astype(float)
    batches = [{"X": X[i:i + b], "y": y[i:i + b]} for i in range(0, n - b + 1, b)]

    def lp(w, batch):
        z = batch["X"] @ w
        p = 1.0 / (1.0 + np.exp(-z))
        scale = n / len(batch["y"])
        ll = np.sum(batch["y"] * z - np.logaddexp(0.0, z)) * scale
        return ll - 0.5 * w @ w, batch["X"].T @ (batch["y"] - p) * scale - w

    t = sgmcmc.sghmc.build(lp, lr=1e-4, alpha=1.0)
    s = t.init(np.zeros(d))
    t.run(s, batches, 1000)
    t0 = time.perf_counter()
    t.run(s, batches, n_steps)
    per_step = (time.perf_counter() - t0) / n_steps
    w = np.zeros(d)
    t0 = time.perf_counter()
    for i in range(n_steps):
        lp(w, batches[i % len(batches)])
    per_call = (time.perf_counter() - t0) / n_steps
    return per_step, per_call


if __name__ == "__main__":
    exe = sys.argv[1] if len(sys.argv) > 1 else "target/debug/langevin"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    cli, py = fit_overhead(exe, rounds)
    print(f"fit breast_cancer (default run, until converged), {rounds} rounds, seconds:")
    print(f"  langevin fit (program): {np.round(cli, 2)}  median {np.median(cli):.2f}")
    print(f"  langevin.fit (Python):  {np.round(py, 2)}  median {np.median(py):.2f}")
    print(f"  overhead: {100 * (np.median(py) / np.median(cli) - 1):+.1f}%")
    step, call = callback_overhead()
    print(f"transform.run, SGHMC, NumPy logistic d=20 batch 32: {1e6 * step:.1f} us/step; "
          f"the density call alone {1e6 * call:.1f} us; overhead {1e6 * (step - call):.1f} us/step")
