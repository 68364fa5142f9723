#!/usr/bin/env python3
"""Laplace on an MLP: langevin against laplace-torch at the same MAP.

    bench/laplace/run.sh            # installs laplace-torch into .venv/laplace, builds, runs this

The bundled digits (1797 rows, 64 features, 10 classes) are split 80/20 with a
fixed seed into train.csv and test.csv. `langevin fit --model mlp` (ReLU,
hidden 64,64, prior sd 1, Adam MAP) fits the MAP and a Laplace approximation
on train.csv; `langevin predict` scores test.csv. laplace-torch then gets
*the same MAP* (the weights from the run's summary.json, the run's feature
standardisation) and the same training rows, so the two differ only in the
Laplace step: curvature, prior-precision tuning by the evidence
(`optimize_prior_precision(method="marglik")`), and the predictive
(linearised/GLM, Monte Carlo over the logits with 1000 draws per row, as
langevin's).

Rows per configuration: test NLL, accuracy, ECE (10 equal-width bins, the
same definition), Brier, the tuned prior precision, and the seconds of the
Laplace step: `fit_seconds` is the curvature and the prior tuning (langevin:
`gaussian.laplace_seconds` of the run's summary.json, which also covers the
covariance or its factorisation; laplace-torch: `fit` + `optimize_prior_precision`),
`predict_seconds` the GLM predictive on the test rows (langevin: the whole
`langevin predict` process, start-up and file reading included).

Writes bench/laplace/raw.jsonl (one line per system and configuration).
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("LANGEVIN", os.path.join(ROOT, "target", "release", "langevin"))
THREADS = int(os.environ.get("THREADS", "1"))
DRAWS = 1000

# (langevin method and flags, laplace-torch subset_of_weights, hessian_structure)
CONFIGS = [
    ("laplace-diag-ggn", "all", "diag"),
    ("laplace-kfac", "all", "kron"),
    ("laplace-dense-ggn --last-layer", "last_layer", "full"),
]
if os.environ.get("CONFIGS"):
    CONFIGS = [c for c in CONFIGS if c[0].split()[0] in os.environ["CONFIGS"].split(",")]


def split(tmp):
    rng = np.random.default_rng(0)
    lines = open(os.path.join(ROOT, "data", "digits.csv")).read().splitlines()
    header, rows = lines[0], lines[1:]
    idx = rng.permutation(len(rows))
    n_test = len(rows) // 5
    test, train = idx[:n_test], idx[n_test:]
    for name, part in (("train", train), ("test", test)):
        with open(os.path.join(tmp, f"{name}.csv"), "w") as f:
            f.write(header + "\n")
            for i in sorted(part):
                f.write(rows[i] + "\n")
    return os.path.join(tmp, "train.csv"), os.path.join(tmp, "test.csv")


def load(path):
    a = np.loadtxt(path, delimiter=",", skiprows=1)
    return a[:, :-1], a[:, -1].astype(np.int64)


def metrics(probs, y, bins=10):
    probs = np.clip(probs, 1e-300, 1.0)
    nll = -np.mean(np.log(probs[np.arange(len(y)), y]))
    pred = probs.argmax(1)
    acc = np.mean(pred == y)
    conf = probs.max(1)
    ece = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        m = (conf > lo) & (conf <= hi) if b > 0 else (conf >= lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(conf[m].mean() - (pred[m] == y[m]).mean())
    onehot = np.eye(probs.shape[1])[y]
    brier = np.mean(np.sum((probs - onehot) ** 2, axis=1))
    return dict(nll=float(nll), accuracy=float(acc), ece=float(ece), brier=float(brier))


def run(args, env):
    t = time.perf_counter()
    p = subprocess.run([BIN] + args, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"langevin {' '.join(args)} failed:\n{p.stderr}")
    return time.perf_counter() - t, p


def parse_metrics(stderr):
    for line in stderr.splitlines():
        if line.startswith("metrics on"):
            w = line.split()
            return {w[i]: float(w[i + 1]) for i in range(4, len(w) - 1, 2)}
    sys.exit(f"no metrics in predict's output:\n{stderr}")


def torch_mlp(summary, widths):
    layers = []
    mean = summary["gaussian"]["mean"]
    off = 0
    for l in range(len(widths) - 1):
        i, o = widths[l], widths[l + 1]
        lin = torch.nn.Linear(i, o).double()
        w = np.array(mean[off : off + i * o]).reshape(i, o)  # langevin: [in, out]
        off += i * o
        b = np.array(mean[off : off + o])
        off += o
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.T))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if l < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    assert off == len(mean), (off, len(mean))
    return torch.nn.Sequential(*layers)


def main():
    from laplace import Laplace

    torch.set_num_threads(THREADS)
    env = dict(os.environ)
    for v in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CANDLE_NUM_THREADS"):
        env[v] = str(THREADS)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        train, test = split(tmp)
        common = ["--data", train, "--target", "target", "--model", "mlp", "--test-fraction", "0",
                  "--no-plots", "--quiet", "--seed", "0"]
        xtr, ytr = load(train)
        xte, yte = load(test)
        for method, subset, structure in CONFIGS:
            rdir = os.path.join(tmp, method.replace(" ", "_"))
            flags = method.split()
            _, p = run(["fit", "--method"] + flags + ["--marglik"] + common + ["--out", rdir], env)
            summ = json.load(open(os.path.join(rdir, "summary.json")))
            meta = json.load(open(os.path.join(rdir, "run.json")))
            pt, pp = run(["predict", "--run", rdir, "--data", test, "--out", os.path.join(tmp, "p.csv"),
                          "--predictive", "glm", "--max-draws", str(DRAWS)], env)
            m = parse_metrics(pp.stderr)
            ours = dict(system="langevin", method=method, subset=subset, structure=structure,
                        threads=THREADS, nll=m["nll"], accuracy=m["accuracy"], ece=m["ece"],
                        brier=m["brier"],
                        prior_precision=summ["gaussian"]["marglik"]["prior_precision"],
                        laplace_seconds=summ["gaussian"]["laplace_seconds"] + pt,
                        fit_seconds=summ["gaussian"]["laplace_seconds"], predict_seconds=pt)
            out.append(ours)
            print(json.dumps(ours), flush=True)

            # laplace-torch at the same MAP.
            st = meta["standardizer"]
            mu, sd = np.array(st["mean"]), np.array(st["sd"])
            widths = [xtr.shape[1]] + meta["model"]["hidden"] + [10]
            net = torch_mlp(summ, widths)
            xt = torch.from_numpy((xtr - mu) / sd)
            xs = torch.from_numpy((xte - mu) / sd)
            loader = torch.utils.data.DataLoader(
                torch.utils.data.TensorDataset(xt, torch.from_numpy(ytr)), batch_size=256)
            t0 = time.perf_counter()
            la = Laplace(net, "classification", subset_of_weights=subset,
                         hessian_structure=structure, prior_precision=1.0)
            la.fit(loader)
            la.optimize_prior_precision(method="marglik")
            t1 = time.perf_counter()
            with torch.no_grad():
                probs = la(xs, pred_type="glm", link_approx="mc", n_samples=DRAWS).numpy()
            t2 = time.perf_counter()
            m = metrics(probs, yte)
            pp_ = la.prior_precision
            theirs = dict(system="laplace-torch", method=method, subset=subset, structure=structure,
                          threads=THREADS, **m,
                          prior_precision=float(pp_.mean() if hasattr(pp_, "mean") else pp_),
                          laplace_seconds=t2 - t0, fit_seconds=t1 - t0, predict_seconds=t2 - t1)
            out.append(theirs)
            print(json.dumps(theirs), flush=True)
    with open(os.path.join(ROOT, "bench", "laplace", "raw.jsonl"), "a") as f:
        for r in out:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
