"""posteriors' (PyTorch) side of the speed comparison with langevin.

Usage: python bench.py <workload> [reps] [steps]
Workloads (identical to crates/langevin/benches/common/mod.rs):
  mlp     SGHMC step, MLP 784-256-256-10 (ReLU, softmax CE, N(0,1) prior / N), batch 64, f32
  laplace diagonal empirical-Fisher Laplace over 10 000 points of that MLP (batches of 100),
          and per-example gradients of a 64-row batch
  vi      diagonal-Gaussian VI step on the MLP (1 sample, Adam lr 1e-3, stl, init log sd -3)
  logreg  SGHMC step, logistic regression d = 20, batch 32, f32
  chains  one SGHMC step of 1000 logistic-regression chains (torch.func.vmap over the update)
  matmul  f32 torch.matmul, 1024x1024x1024 and 64x784x256 (GFLOP/s reference)
Threads: LANGEVIN_BENCH_THREADS (default 1) -> torch.set_num_threads.
Prints one JSON line per variant: median per-step seconds over `reps` blocks.
"""

import json
import os
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)

import torch
import torch.nn.functional as F

import posteriors
import torchopt

THREADS = int(os.environ.get("LANGEVIN_BENCH_THREADS", "1"))
torch.set_num_threads(THREADS)
torch.set_num_interop_threads(1)
torch.manual_seed(0)

SIZES = [784, 256, 256, 10]
MLP_BATCH = 64
N_DATA = 60_000.0
PRIOR_VAR = 1.0
LR, ALPHA, BETA, SIGMA = 1e-3, 0.01, 0.0, 1.0
TEMPERATURE = 1.0 / N_DATA
LOGREG_DIM, LOGREG_BATCH = 20, 32
N_CHAINS = 1000
LAPLACE_N, LAPLACE_BATCH = 10_000, 100
VI_INIT_LOG_SD = -3.0
EMPTY = torch.tensor([])
CPU = []  # per-step CPU time of the calling thread, per block (time.thread_time)


def sghmc(log_post):
    return posteriors.sgmcmc.sghmc.build(
        log_post, lr=LR, alpha=ALPHA, beta=BETA, sigma=SIGMA, temperature=TEMPERATURE
    )


def time_blocks(reps, steps, f, warmup=None):
    for _ in range(max(steps, 3) if warmup is None else warmup):
        f()
    out = []
    CPU.clear()
    for _ in range(reps):
        c0 = time.thread_time()
        t0 = time.perf_counter()
        for _ in range(steps):
            f()
        out.append((time.perf_counter() - t0) / steps)
        CPU.append((time.thread_time() - c0) / steps)
    return out


def report(workload, variant, blocks, **extra):
    d = {
        "system": "posteriors",
        "workload": workload,
        "variant": variant,
        "threads": THREADS,
        "median_s": statistics.median(blocks),
        "cpu_median_s": statistics.median(CPU) if len(CPU) == len(blocks) else float("nan"),
        "blocks_s": blocks,
    }
    d.update(extra)
    print(json.dumps(d), flush=True)


def mlp_log_posterior(params, batch):
    x, y = batch
    h = torch.relu(x @ params["w1"] + params["b1"])
    h = torch.relu(h @ params["w2"] + params["b2"])
    logits = h @ params["w3"] + params["b3"]
    nll = F.cross_entropy(logits, y)
    sq = sum((p * p).sum() for p in params.values())
    return -nll - 0.5 * sq / (PRIOR_VAR * N_DATA), EMPTY


def mlp_log_posterior_per_sample(params, batch):
    """Per-example log posteriors: log lik_i + log prior / N (the batch-of-one log posterior)."""
    x, y = batch
    h = torch.relu(x @ params["w1"] + params["b1"])
    h = torch.relu(h @ params["w2"] + params["b2"])
    logits = h @ params["w3"] + params["b3"]
    ll = -F.cross_entropy(logits, y, reduction="none")
    sq = sum((p * p).sum() for p in params.values())
    return ll - 0.5 * sq / (PRIOR_VAR * N_DATA), EMPTY


def mlp_params():
    s = SIZES
    p = {}
    for i in range(3):
        p[f"w{i+1}"] = torch.randn(s[i], s[i + 1]) * (2.0 / s[i]) ** 0.5
        p[f"b{i+1}"] = torch.zeros(s[i + 1])
    return p


def logreg_log_posterior(w, batch):
    x, y = batch
    z = x @ w
    loglik = (y * z - F.softplus(z)).mean()
    return loglik - 0.5 * (w * w).sum() / (PRIOR_VAR * N_DATA), EMPTY


def logreg_batch():
    truth = torch.randn(LOGREG_DIM)
    x = torch.randn(LOGREG_BATCH, LOGREG_DIM)
    y = torch.bernoulli(torch.sigmoid(x @ truth))
    return x, y


def bench_sghmc(workload, log_post, params, batch, reps, steps):
    tr = sghmc(log_post)
    for inplace in (False, True):
        state = tr.init({k: v.clone() for k, v in params.items()} if isinstance(params, dict) else params.clone())
        box = [state]

        def step():
            box[0], _ = tr.update(box[0], batch, inplace=inplace)

        report(workload, f"sghmc_step_inplace_{inplace}", time_blocks(reps, steps, step))


def main():
    workload = sys.argv[1] if len(sys.argv) > 1 else "mlp"
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else None
    if workload == "mlp":
        x = torch.randn(MLP_BATCH, SIZES[0])
        y = torch.randint(0, SIZES[3], (MLP_BATCH,))
        params = mlp_params()
        bench_sghmc("mlp", mlp_log_posterior, params, (x, y), reps, steps or 20)
        g = torch.func.grad_and_value(mlp_log_posterior, has_aux=True)

        def vg():
            with torch.no_grad():
                g(params, (x, y))

        report("mlp", "value_and_grad", time_blocks(reps, steps or 20, vg))
    elif workload == "laplace":
        params = mlp_params()
        batches = [
            (torch.randn(LAPLACE_BATCH, SIZES[0]), torch.randint(0, SIZES[3], (LAPLACE_BATCH,)))
            for _ in range(LAPLACE_N // LAPLACE_BATCH)
        ]
        # posteriors' two ways: a per-sample log posterior (per_sample=True, what
        # its docs recommend for speed) and the batch one vmapped by posteriors.
        for per_sample, lp in ((True, mlp_log_posterior_per_sample), (False, mlp_log_posterior)):
            tr = posteriors.laplace.diag_fisher.build(lp, per_sample=per_sample)

            def full_pass():
                state = tr.init(params)
                for b in batches:
                    state, _ = tr.update(state, b, inplace=True)
                return state

            report(
                "laplace",
                f"diag_fisher_pass_per_sample_{per_sample}",
                time_blocks(reps, steps or 1, full_pass, warmup=1),
                points=LAPLACE_N,
                batch=LAPLACE_BATCH,
            )
        x = torch.randn(MLP_BATCH, SIZES[0])
        y = torch.randint(0, SIZES[3], (MLP_BATCH,))
        jac = torch.func.jacrev(mlp_log_posterior_per_sample, has_aux=True)

        def pe():
            with torch.no_grad():
                jac(params, (x, y))

        report("laplace", "per_example_grads_b64", time_blocks(reps, 10, pe))
    elif workload == "vi":
        x = torch.randn(MLP_BATCH, SIZES[0])
        y = torch.randint(0, SIZES[3], (MLP_BATCH,))
        tr = posteriors.vi.diag.build(
            mlp_log_posterior,
            optimizer=torchopt.adam(lr=LR),
            temperature=TEMPERATURE,
            n_samples=1,
            stl=True,
            init_log_sds=VI_INIT_LOG_SD,
        )
        for inplace in (False, True):
            box = [tr.init(mlp_params())]

            def step():
                box[0], _ = tr.update(box[0], (x, y), inplace=inplace)

            report("vi", f"diag_step_inplace_{inplace}", time_blocks(reps, steps or 50, step))
    elif workload == "logreg":
        batch = logreg_batch()
        w = 0.1 * torch.randn(LOGREG_DIM)
        bench_sghmc("logreg", logreg_log_posterior, w, batch, reps, steps or 500)
    elif workload == "chains":
        batch = logreg_batch()
        tr = sghmc(logreg_log_posterior)
        w = 0.1 * torch.randn(N_CHAINS, LOGREG_DIM)
        states = torch.func.vmap(tr.init, randomness="different")(w)
        update = torch.func.vmap(
            lambda s, b: tr.update(s, b), in_dims=(0, None), randomness="different"
        )
        box = [states]

        def step():
            box[0], _ = update(box[0], batch)

        report("chains", "sghmc_vmap", time_blocks(reps, steps or 20, step), chains=N_CHAINS)
    elif workload == "matmul":
        for m, k, n in ((1024, 1024, 1024), (64, 784, 256)):
            a, b = torch.randn(m, k), torch.randn(k, n)
            name = "torch_f32_1024" if m == 1024 else f"torch_f32_{m}x{k}x{n}"
            report(
                "matmul",
                name,
                time_blocks(reps, (steps or 10) * (1 if m == 1024 else 200), lambda: torch.matmul(a, b)),
                flops=2.0 * m * k * n,
            )
    else:
        sys.exit(f"unknown workload {workload}")


if __name__ == "__main__":
    main()
