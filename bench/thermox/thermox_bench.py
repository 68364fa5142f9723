"""Timing of thermox (JAX, CPU, one thread) on the same inputs as
crates/langevin-thermo/examples/thermox_bench.rs. Prints one JSON line.

Usage: python thermox_bench.py INPUT_DIR REPS
"""
import json
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import thermox  # noqa: E402


def median(v):
    return float(np.median(np.asarray(v)))


def main():
    d = sys.argv[1]
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    a_sample = jnp.asarray(np.loadtxt(f"{d}/A_sample.csv", delimiter=","))
    a_solve = jnp.asarray(np.loadtxt(f"{d}/A_solve.csv", delimiter=","))
    b_solve = jnp.ones(50)

    ts = jnp.arange(10_001) * 0.1
    x0 = jnp.zeros(100)
    b0 = jnp.zeros(100)
    d2 = 2.0 * jnp.eye(100)
    sample_s = []
    for rep in range(reps + 1):  # rep 0 compiles (warm-up)
        key = jax.random.PRNGKey(rep)
        t0 = time.perf_counter()
        xs = thermox.sample(key, ts, x0, a_sample, b0, d2)
        xs.block_until_ready()
        dt = time.perf_counter() - t0
        if rep > 0:
            sample_s.append(dt)

    exact = np.linalg.solve(np.asarray(a_solve), np.ones(50))
    solve_s, errs = [], []
    for rep in range(reps + 1):
        key = jax.random.PRNGKey(rep)
        t0 = time.perf_counter()
        x = thermox.linalg.solve(a_solve, b_solve, num_samples=10_000, dt=1.0, burnin=0, key=key)
        x.block_until_ready()
        dt = time.perf_counter() - t0
        if rep > 0:
            solve_s.append(dt)
            errs.append(float(np.linalg.norm(np.asarray(x) - exact) / np.linalg.norm(exact)))

    # Accuracy over more seeds (untimed): the timed reps are too few to
    # compare two Monte Carlo errors (langevin: seeds 1000 + i as well).
    errs_seeds = []
    for i in range(40):
        x = thermox.linalg.solve(a_solve, b_solve, num_samples=10_000, dt=1.0, burnin=0,
                                 key=jax.random.PRNGKey(1000 + i))
        errs_seeds.append(float(np.linalg.norm(np.asarray(x) - exact) / np.linalg.norm(exact)))

    # Exactness for a non-normal drift: stationary covariance of a long path for
    # A = [[1, 5], [0, 2]], D = 2 I (exact S = [[5.1667, -0.8333], [-0.8333, 0.5]]).
    a_nn = jnp.array([[1.0, 5.0], [0.0, 2.0]])
    ts_nn = jnp.arange(200_001) * 0.5
    xs = np.asarray(thermox.sample(jax.random.PRNGKey(7), ts_nn, jnp.zeros(2), a_nn, jnp.zeros(2), 2.0 * jnp.eye(2)))
    emp = np.cov(xs[1000:].T)
    s_exact = np.array([[31.0 / 6.0, -5.0 / 6.0], [-5.0 / 6.0, 0.5]])
    print(json.dumps({
        "impl": "thermox",
        "thermox_version": getattr(thermox, "__version__", "unknown"),
        "jax_version": jax.__version__,
        "sample_d100_T10000_s": median(sample_s),
        "solve_d50_N10000_s": median(solve_s),
        "sample_times": sample_s,
        "solve_times": solve_s,
        "solve_rel_errors": errs,
        "solve_mean_rel_error": float(np.mean(errs)),
        "solve_rel_errors_seeds": errs_seeds,
        "nonnormal_empirical_cov": emp.tolist(),
        "nonnormal_rel_error_entries": (np.abs(emp - s_exact) / np.abs(s_exact)).tolist(),
    }))


if __name__ == "__main__":
    main()
