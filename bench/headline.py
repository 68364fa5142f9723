"""Issue #7's headline table: every workload, langevin against its peer, from
the raw data of the side-by-side runs, written into BENCHMARKS.md between the
`<!-- headline:begin -->` and `<!-- headline:end -->` markers.

    python3 bench/headline.py            # rewrite BENCHMARKS.md's table
    python3 bench/headline.py --print    # print it instead

Inputs (written by bench/run.sh, or by the per-peer scripts it calls):
  bench/posteriors/raw.jsonl         workloads 1, 2, 4, 5, 8 (bench/posteriors/run.sh)
  bench/posteriors/chains_raw.jsonl  workload 3 (bench/posteriors/chains.sh)
  bench/thermox/raw.jsonl            workloads 6, 7 (bench/thermox/run.sh)

Each figure is the median over rounds of the per-invocation medians; the two
systems ran alternately in the same shell. One-thread rows use the CPU time of
the calling thread where both systems report it (wall time otherwise, marked);
two-thread rows use wall time. Standard library only.
"""
import json
import os
import statistics
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- headline:begin -->", "<!-- headline:end -->"


def load(path):
    try:
        with open(os.path.join(ROOT, path)) as f:
            return [json.loads(l) for l in f if l.strip().startswith("{")]
    except OSError:
        return []


def index(rows):
    by = defaultdict(list)
    for r in rows:
        by[(r["system"], r["workload"], r["variant"], r["threads"])].append(r)
    return by


def med(rows, key):
    xs = [r[key] for r in rows if r.get(key) is not None and r[key] == r[key]]
    return statistics.median(xs) if xs else None


def fmt_t(s):
    if s is None:
        return "—"
    if s >= 1.0:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def pair(by, ours, theirs, threads):
    """(langevin s, peer s, which clock) or None."""
    a = by.get(("langevin",) + ours + (threads,), [])
    b = by.get(("posteriors",) + theirs + (threads,), [])
    if not a or not b:
        return None
    if threads == 1:
        ca, cb = med(a, "cpu_median_s"), med(b, "cpu_median_s")
        if ca and cb:
            return ca, cb, "CPU", len(a), len(b)
    return med(a, "median_s"), med(b, "median_s"), "wall", len(a), len(b)


def verdict(ratio, goal, higher_is_better=True):
    if goal is None or ratio is None:
        return ""
    ok = ratio >= goal if higher_is_better else ratio <= goal
    sign = "≥" if higher_is_better else "≤"
    return f"{sign} {goal:g}x: " + ("met" if ok else "**missed**")


def main():
    post = index(load("bench/posteriors/raw.jsonl"))
    chains = index(load("bench/posteriors/chains_raw.jsonl"))
    thermox = load("bench/thermox/raw.jsonl")
    out = []
    w = out.append
    threads_seen = sorted({k[3] for k in post} | {k[3] for k in chains})
    for n in threads_seen or [1]:
        w(f"\n**{n} thread{'s' if n > 1 else ''}**\n")
        w("| workload | langevin | peer | speed-up | goal (1 thread) | rounds |")
        w("|---|---|---|---|---|---|")
        specs = [
            ("(1) MLP 784-256-256-10, batch 64, f32: SGHMC step (posteriors `inplace=False`)",
             post, ("mlp", "sghmc_step"), ("mlp", "sghmc_step_inplace_False"), 2.5),
            ("(1) MLP: value and gradient only (torch.func.grad_and_value)",
             post, ("mlp", "value_and_grad"), ("mlp", "value_and_grad"), None),
            ("(2) logistic d = 20, batch 32: SGHMC step",
             post, ("logreg", "sghmc_step_fn_density"), ("logreg", "sghmc_step_inplace_False"), 30),
            ("(3) 1 000 logistic SGHMC chains, one step of all (`ParallelSghmc` vs `torch.func.vmap`)",
             chains, ("chains", "parallel_sghmc_batched_logistic_rows256_BoxMuller"), ("chains", "sghmc_vmap"), 5),
            ("(4) MLP diagonal-Fisher Laplace, 10 000 points (posteriors `per_sample=True`)",
             post, ("laplace", "diag_fisher_pass"), ("laplace", "diag_fisher_pass_per_sample_True"), None),
            ("(5) MLP VI diag step, 1 sample, Adam (posteriors `inplace=False`)",
             post, ("vi", "diag_step"), ("vi", "diag_step_inplace_False"), None),
        ]
        for name, by, ours, theirs, goal in specs:
            p = pair(by, ours, theirs, n)
            if p is None:
                continue
            a, b, clock, na, nb = p
            ratio = b / a if a and b else None
            g = verdict(ratio, goal) if n == 1 else ""
            w(f"| {name} | {fmt_t(a)} | {fmt_t(b)} | {ratio:.2f}x ({clock}) | {g} | {min(na, nb)} |")
        if n == 1 and thermox:
            by = defaultdict(list)
            for r in thermox:
                by[r["impl"]].append(r)
            for key, name in (("sample", "(6) exact OU sampling, d = 100, 10 000 steps (thermox `sample`)"),
                              ("solve", "(7) thermodynamic solve, d = 50 Wishart, 10 000 samples (thermox `linalg.solve`)")):
                t = {}
                for impl in ("langevin", "thermox"):
                    xs = [x for r in by.get(impl, []) for x in r.get(f"{key}_times", [])]
                    t[impl] = statistics.median(xs) if xs else None
                if not (t["langevin"] and t["thermox"]):
                    continue
                ratio = t["thermox"] / t["langevin"]
                extra = ""
                if key == "solve":
                    # Mean relative error over the untimed seeds (one
                    # invocation's list: the seeds are the same every round)
                    # and its standard error.
                    e, se = {}, {}
                    for impl in ("langevin", "thermox"):
                        xs = by[impl][0].get("solve_rel_errors_seeds") or by[impl][0]["solve_rel_errors"]
                        e[impl] = statistics.mean(xs)
                        se[impl] = statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else float("nan")
                    n_seeds = len(by["langevin"][0].get("solve_rel_errors_seeds") or by["langevin"][0]["solve_rel_errors"])
                    extra = (f"; rel. error over {n_seeds} seeds {e['langevin']:.2e} ± {se['langevin']:.1e} "
                             f"vs {e['thermox']:.2e} ± {se['thermox']:.1e}")
                    # Equal error: langevin's mean no worse than thermox's by
                    # more than two standard errors of the difference.
                    tol = 2 * (se["langevin"] ** 2 + se["thermox"] ** 2) ** 0.5
                    ok = ratio >= 3 and e["langevin"] <= e["thermox"] + tol
                    g = "≥ 3x at equal or better error: " + ("met" if ok else "**missed**")
                else:
                    g = verdict(ratio, 3)
                rounds = min(len(by["langevin"]), len(by["thermox"]))
                w(f"| {name} | {fmt_t(t['langevin'])} | {fmt_t(t['thermox'])} | {ratio:.2f}x (wall{extra}) | {g} | {rounds} |")
        # (8) the matrix-multiply limit.
        if n == 1:
            rates = {}
            for (sysname, wl, var, th), rs in post.items():
                if wl == "matmul" and th == 1 and rs[0].get("flops"):
                    s = med(rs, "cpu_median_s") or med(rs, "median_s")
                    rates[f"{sysname} {var}"] = rs[0]["flops"] / s
            vg = post.get(("langevin", "mlp", "value_and_grad", 1), [])
            st = post.get(("langevin", "mlp", "sghmc_step", 1), [])
            if rates and vg and st and vg[0].get("flops"):
                best = max(rates, key=rates.get)
                peak = rates[best]
                ideal = vg[0]["flops"] / peak
                tv = med(vg, "cpu_median_s") or med(vg, "median_s")
                ts = med(st, "cpu_median_s") or med(st, "median_s")
                w(f"| (8) MLP value and gradient against the matmul limit ({peak / 1e9:.0f} GFLOP/s, {best}; "
                  f"{vg[0]['flops'] / 1e6:.1f} MFLOP → {fmt_t(ideal)}) | {fmt_t(tv)} | | {tv / ideal:.2f}x the limit | | |")
                w(f"| (8) MLP SGHMC step against the matmul limit | {fmt_t(ts)} | | {ts / ideal:.2f}x the limit "
                  f"| {verdict(ts / ideal, 2, higher_is_better=False)} | |")
    table = "\n".join(out).strip() + "\n"
    if "--print" in sys.argv:
        print(table)
        return
    path = os.path.join(ROOT, "BENCHMARKS.md")
    text = open(path).read()
    if BEGIN not in text or END not in text:
        sys.exit(f"{path}: no {BEGIN} … {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as f:
        f.write(head + BEGIN + "\n" + table + END + tail)
    print(f"wrote the headline table of {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
