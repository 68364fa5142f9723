"""Medians over all rounds and the thermox/langevin ratio (Markdown table)."""
import json
import sys

import numpy as np

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
by = {}
for r in rows:
    by.setdefault(r["impl"], []).append(r)
print("| task | langevin (Rust) median s | thermox (JAX CPU) median s | thermox / langevin | langevin mean rel. error | thermox mean rel. error |")
print("|---|---|---|---|---|---|")
for key, name in [("sample", "exact OU sample, d = 100, 10 000 steps"), ("solve", "solve, d = 50 Wishart, 10 000 readouts")]:
    med = {}
    for impl in ("langevin", "thermox"):
        times = [t for r in by.get(impl, []) for t in r[f"{key}_times"]]
        med[impl] = float(np.median(times)) if times else float("nan")
    # Error over the untimed seeds where present (the same seeds every round:
    # one invocation's list), else over the timed reps.
    def errs(impl):
        rs = by.get(impl, [])
        if rs and rs[0].get("solve_rel_errors_seeds"):
            return rs[0]["solve_rel_errors_seeds"]
        return [e for r in rs for e in r["solve_rel_errors"]]
    err = {impl: (errs(impl) if key == "solve" else None) for impl in med}
    fmt = lambda e: "-" if e is None else f"{np.mean(e):.3e} ± {np.std(e, ddof=1) / np.sqrt(len(e)):.1e} ({len(e)} seeds)"
    print(f"| {name} | {med['langevin']:.4f} | {med['thermox']:.4f} | {med['thermox'] / med['langevin']:.1f}x | {fmt(err['langevin'])} | {fmt(err['thermox'])} |")
t = by.get("thermox", [])
if t and "nonnormal_rel_error_entries" in t[0]:
    e = np.array(t[0]["nonnormal_rel_error_entries"])
    print(f"\nthermox stationary covariance for non-normal A = [[1, 5], [0, 2]] (long path, 200 000 steps): "
          f"relative entry errors {np.round(e, 3).tolist()} (exact S = [[5.1667, -0.8333], [-0.8333, 0.5]])")
