"""posteriors' SGHMC step on the density of ``overhead.py``'s callback test.

Logistic regression, d = 20, batch 32, N = 1000 rows (same data seed and
scaling as ``overhead.py``), written in torch as posteriors' users write it;
``posteriors.sgmcmc.sghmc.build(log_posterior, lr=1e-4, alpha=1.0)`` and a
Python loop of ``transform.update``. Prints microseconds per step (median of
ROUNDS timings of N_STEPS steps), to put next to ``overhead.py``'s
``transform.run`` figure.

Usage (in a virtual environment with posteriors and torch):
    python python/bench/posteriors_step.py [N_STEPS] [ROUNDS]
"""

import sys
import time
import warnings

warnings.simplefilter("ignore", FutureWarning)

import numpy as np
import posteriors
import torch

torch.set_num_threads(1)


def main(n_steps, rounds):
    rng = np.random.default_rng(0)
    d, n, b = 20, 1000, 32
    X = rng.normal(size=(n, d))
    y = (rng.random(n) < 0.5).astype(float)
    batches = [
        (torch.tensor(X[i:i + b]), torch.tensor(y[i:i + b]))
        for i in range(0, n - b + 1, b)
    ]

    def log_posterior(w, batch):
        xb, yb = batch
        z = xb @ w
        scale = n / len(yb)
        ll = torch.sum(yb * z - torch.nn.functional.softplus(z)) * scale
        return ll - 0.5 * w @ w, torch.tensor([])

    transform = posteriors.sgmcmc.sghmc.build(log_posterior, lr=1e-4, alpha=1.0)
    state = transform.init(torch.zeros(d, dtype=torch.float64))

    def update(state, batch):
        out = transform.update(state, batch)
        return out[0] if isinstance(out, tuple) else out  # (state, aux) in posteriors >= 0.1

    for i in range(1000):
        state = update(state, batches[i % len(batches)])
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(n_steps):
            state = update(state, batches[i % len(batches)])
        times.append((time.perf_counter() - t0) / n_steps)
    print(f"posteriors {posteriors.__version__} SGHMC, torch {torch.__version__}, "
          f"logistic d=20 batch 32: {1e6 * np.median(times):.1f} us/step "
          f"(rounds: {', '.join(f'{1e6 * t:.1f}' for t in times)})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000,
         int(sys.argv[2]) if len(sys.argv) > 2 else 3)
