"""Time to accuracy on bundled breast_cancer (issue 14).

Bayesian logistic regression (31 parameters, prior N(0, 1), every one of the
569 rows: `--test-fraction 0`, features standardised by `langevin fit`).
Reference: `langevin fit --method nuts` (nuts-rs), 4 chains x 10 000 draws
after 1 000 warm-up draws. Each contender is run on seeds 1-3 and timed
(wall clock, the whole command: data, adaptation, sampling, summary); it
*reaches* the accuracy goal when every posterior mean is within 0.1
reference sd and every sd within 10 % of the reference.

langevin contenders (its defaults unless named; `fit` runs until every
R-hat <= 1.01 and every ESS >= 400, at most 200 000 steps):
  baoa (default)            --method baoa (the default), diagonal metric
  baoa dense                --adapt dense
  sghmc                     --method sghmc (adapted step size, diagonal metric)
  sghmc dense               --method sghmc --adapt dense
  sghmc-cv batch 32         --method sghmc --control-variates --batch-size 32
  nuts                      --method nuts (2 000 steps: 1 000 warm-up, 1 000 draws)
Peer: posteriors' SGHMC (PyTorch) with its defaults (alpha 0.01, beta 0,
sigma 1) at temperature 1/N and lr 1e-3 and 1e-2 on the same standardised
rows, 4 chains (torch.func.vmap), full batch; it is checked every 5 000
steps (first half discarded) until it reaches the goal or 120 s pass
(first seed only).

Usage: python3 bench/time_to_accuracy/run.py [--bin PATH] [--seeds 1,2,3]
(default binary: target/release/langevin if built, else target/debug/langevin)
Writes bench/time_to_accuracy/raw.jsonl and prints a Markdown table.
The posteriors peer runs when `.venv/posteriors` (bench/posteriors/run.sh)
has it; otherwise its row says so.
"""

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = ["--data", "breast_cancer", "--test-fraction", "0"]
CONTENDERS = [
    ("baoa (default)", []),
    ("baoa dense", ["--adapt", "dense"]),
    ("sghmc", ["--method", "sghmc"]),
    ("sghmc dense", ["--method", "sghmc", "--adapt", "dense"]),
    ("sghmc-cv batch 32", ["--method", "sghmc", "--control-variates", "--batch-size", "32"]),
    ("nuts", ["--method", "nuts"]),
]


def fit(binary, out, extra):
    t = time.perf_counter()
    subprocess.run(
        [binary, "fit", *DATA, *extra, "--out", out, "--quiet", "--no-plots"],
        check=True,
    )
    wall = time.perf_counter() - t
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f), wall


def table(summary):
    return {p["name"]: p for p in summary["params"]}


def accuracy(params, ref):
    dm = max(abs(params[k]["mean"] - r["mean"]) / r["sd"] for k, r in ref.items())
    ds = max(abs(params[k]["sd"] / r["sd"] - 1.0) for k, r in ref.items())
    return dm, ds


def posteriors_peer(run_dir, ref, lr, seed, budget_s=120.0, check_every=5000):
    """posteriors' SGHMC until the goal or the budget; None if not installed."""
    py = os.path.join(ROOT, ".venv", "posteriors", "bin", "python")
    if not os.path.exists(py) or subprocess.run([py, "-c", "import posteriors, torch"], capture_output=True).returncode != 0:
        return None
    code = PEER.format(
        run=json.dumps(run_dir), lr=lr, seed=seed, budget=budget_s,
        every=check_every, ref=json.dumps(ref), root=json.dumps(ROOT),
    )
    out = subprocess.run([py, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


PEER = r'''
import csv, json, math, time, warnings
warnings.filterwarnings("ignore")
import torch
import posteriors
torch.set_num_threads(2)
torch.manual_seed({seed})
run = json.load(open({run} + "/run.json"))
ref = json.loads({ref!r})
names = run["param_names"]
st = run["standardizer"]
mean = st["mean"]; sd = st.get("sd") or st.get("std")
rows = list(csv.DictReader(open({root} + "/data/breast_cancer.csv")))
feats = run["model"]["feature_names"]
X = torch.tensor([[ (float(r[f]) - m) / s for f, m, s in zip(feats, mean, sd)] for r in rows], dtype=torch.float64)
y = torch.tensor([float(r[run["target"]]) for r in rows], dtype=torch.float64)
N, d = X.shape
def log_post(theta, batch):
    w, b = theta[:d], theta[d]
    z = X @ w + b
    ll = (y * z - torch.nn.functional.softplus(z)).mean()
    lp = -0.5 * (theta ** 2).sum() / N
    return ll + lp, z
chains = 4
tr = posteriors.sgmcmc.sghmc.build(log_post, lr={lr}, alpha=0.01, beta=0.0, sigma=1.0, temperature=1.0 / N)
states = [tr.init(torch.randn(d + 1, dtype=torch.float64) * 0.1) for _ in range(chains)]
draws = [[] for _ in range(chains)]
t0 = time.perf_counter()
steps = 0
result = None
while True:
    for c in range(chains):
        for _ in range({every}):
            out = tr.update(states[c], None)
            states[c] = out[0] if isinstance(out, tuple) else out
            draws[c].append(states[c].params.clone())
    steps += {every}
    keep = torch.stack([torch.stack(dc[steps // 2:]) for dc in draws])  # chains x draws x p
    flat = keep.reshape(-1, d + 1)
    m = flat.mean(0); s = flat.std(0)
    dm = max(abs(m[j].item() - ref[n]["mean"]) / ref[n]["sd"] for j, n in enumerate(names))
    ds = max(abs(s[j].item() / ref[n]["sd"] - 1.0) for j, n in enumerate(names))
    el = time.perf_counter() - t0
    ok = math.isfinite(dm) and dm < 0.1 and ds < 0.1
    if ok or el > {budget}:
        result = dict(steps=steps, seconds=el, reached=ok, dm=dm, ds=ds)
        break
print(json.dumps(result))
'''


def main():
    ap = argparse.ArgumentParser()
    rel = os.path.join(ROOT, "target", "release", "langevin")
    ap.add_argument("--bin", default=rel if os.path.exists(rel) else os.path.join(ROOT, "target", "debug", "langevin"))
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--only", help="comma-separated contender names (default: all)")
    ap.add_argument("--reference", metavar="REF_DIR", help="reuse this reference run folder; append to raw.jsonl")
    ap.add_argument("--peer-only", metavar="REF_DIR", help="run only the posteriors peer against an existing reference run folder")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    tmp = tempfile.mkdtemp(prefix="tta-")
    if a.peer_only:
        with open(os.path.join(a.peer_only, "summary.json")) as f:
            ref = {k: {"mean": p["mean"], "sd": p["sd"]} for k, p in table(json.load(f)).items()}
        with open(os.path.join(ROOT, "bench", "time_to_accuracy", "raw.jsonl"), "a") as raw:
            for lr in [1e-3, 1e-2]:
                p = posteriors_peer(a.peer_only, ref, lr, seeds[0])
                r = dict(kind="posteriors", name=f"posteriors sghmc lr {lr:g}", seed=seeds[0], **(p or dict(missing=True)))
                print(r, file=sys.stderr)
                raw.write(json.dumps(r) + "\n")
        return
    raw = open(os.path.join(ROOT, "bench", "time_to_accuracy", "raw.jsonl"), "a" if a.reference else "w")
    print(f"binary {a.bin}", file=sys.stderr)
    if a.reference:
        ref_dir = a.reference
        with open(os.path.join(ref_dir, "summary.json")) as f:
            ref_sum, ref_wall = json.load(f), float("nan")
    else:
        ref_dir = os.path.join(tmp, "reference")
        ref_sum, ref_wall = fit(a.bin, ref_dir, ["--method", "nuts", "--steps", "11000", "--burn-in", "1000", "--seed", "100"])
    ref = {k: {"mean": p["mean"], "sd": p["sd"]} for k, p in table(ref_sum).items()}
    min_ess = min(min(p["ess_bulk"], p["ess_tail"]) for p in ref_sum["params"])
    print(f"reference: {ref_wall:.1f} s, min ESS {min_ess:.0f}", file=sys.stderr)
    if not a.reference:
        raw.write(json.dumps(dict(kind="reference", seconds=ref_wall, min_ess=min_ess)) + "\n")
    rows = []
    only = a.only.split(",") if a.only else None
    for name, extra in CONTENDERS:
        if only and name not in only:
            continue
        for seed in seeds:
            out = os.path.join(tmp, f"{name.split()[0]}-{len(rows)}")
            s, wall = fit(a.bin, out, [*extra, "--seed", str(seed)])
            dm, ds = accuracy(table(s), ref)
            ess = min(min(p["ess_bulk"], p["ess_tail"]) for p in s["params"])
            r = dict(kind="langevin", name=name, seed=seed, seconds=wall,
                     steps=s.get("steps_done", s["config"]["steps"]), converged=s.get("converged"),
                     min_ess=ess, dm=dm, ds=ds, reached=dm < 0.1 and ds < 0.1)
            print(r, file=sys.stderr)
            raw.write(json.dumps(r) + "\n")
            rows.append(r)
    if not a.no_peer:
        for lr in [1e-3, 1e-2]:
            for seed in seeds[:1]:
                p = posteriors_peer(ref_dir, ref, lr, seed)
                if p is None:
                    rows.append(dict(kind="posteriors", name=f"posteriors sghmc lr {lr:g}", missing=True))
                    break
                r = dict(kind="posteriors", name=f"posteriors sghmc lr {lr:g}", seed=seed, **p)
                print(r, file=sys.stderr)
                raw.write(json.dumps(r) + "\n")
                rows.append(r)
    raw.close()
    print(f"\nReference: NUTS 4 x 10 000 draws, {ref_wall:.0f} s, min ESS {min_ess:.0f}.\n")
    print("| contender | seed | seconds | steps per chain | converged | min ESS | worst \\|Δmean\\|/sd | worst \\|sd ratio − 1\\| | goal reached |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("missing"):
            print(f"| {r['name']} | | not installed (.venv/posteriors) | | | | | | |")
            continue
        conv = r.get("converged", "")
        ess = f"{r['min_ess']:.0f}" if "min_ess" in r else ""
        print(f"| {r['name']} | {r['seed']} | {r['seconds']:.1f} | {r['steps']} | {conv} | {ess} | {r['dm']:.3f} | {r['ds']:.3f} | {'yes' if r['reached'] else 'no'} |")


if __name__ == "__main__":
    main()
