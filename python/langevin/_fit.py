"""``langevin.fit`` (``langevin fit`` in-process) and ``langevin.load_run``."""

import csv
import json
import os
import re
import shutil
import tempfile

import numpy as np

from . import _langevin


def _matrix(X):
    if not hasattr(X, "__array__") and not isinstance(X, (list, tuple)):
        raise TypeError(f"X must be an array (rows x features), got {type(X).__name__}")
    a = np.asarray(X, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"X must be 2-D (rows x features), got shape {a.shape}")
    return a


def _target(y, n):
    if not hasattr(y, "__array__") and not isinstance(y, (list, tuple)):
        raise TypeError(f"y must be an array, got {type(y).__name__}")
    a = np.asarray(y, dtype=np.float64)
    if a.ndim != 1:
        a = a.reshape(-1) if a.ndim == 2 and 1 in a.shape else a
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"y must have one value per row of X ({n}), got shape {np.shape(y)}")
    return a


def _flag(key):
    return "--" + key.replace("_", "-")


def fit(
    X,
    y,
    model="logistic",
    method=None,
    chains=None,
    seed=None,
    *,
    out=None,
    feature_names=None,
    target="y",
    **options,
):
    """Bayesian learning on ``X`` (rows x features) and ``y``: ``langevin fit``.

    Runs the program's own pipeline in-process, with its defaults, adaptation
    and convergence rule: the data is written (exactly, as ``data.csv``) into
    the run folder ``out`` and fitted as
    ``langevin fit --data FILE --target y --model MODEL ...``. Any other
    option of ``langevin fit`` is a keyword: ``steps=2000``,
    ``step_size=0.01``, ``until_converged=True`` (``_`` for ``-``; ``True``
    for a flag). ``model``: ``logistic``, ``linear``, ``softmax`` or ``mlp``;
    ``method``: any of ``langevin fit --method`` (``sghmc``, ``nuts``,
    ``vi``, ``laplace-diag-fisher``, ...; default: the program's).

    ``out``: a folder to keep the run in (``langevin predict``,
    ``langevin diagnose``, ``--resume`` and :func:`load_run` read it); by
    default the run happens in a temporary folder that is removed once its
    results are in memory.

    Returns an ``arviz.InferenceData`` (:func:`load_run` of the folder).
    The GIL is released during the run; Ctrl-C stops the samplers and raises
    ``KeyboardInterrupt``. Bad input raises ``ValueError``, a run stopped on
    divergences :class:`langevin.DivergenceError`.
    """
    Xa = _matrix(X)
    ya = _target(y, Xa.shape[0])
    if not np.all(np.isfinite(Xa)):
        raise ValueError("X has non-finite entries (NaN or infinity)")
    if not np.all(np.isfinite(ya)):
        raise ValueError("y has non-finite entries (NaN or infinity)")
    d = Xa.shape[1]
    if feature_names is None:
        feature_names = [f"x{j}" for j in range(d)]
    feature_names = [str(f) for f in feature_names]
    if len(feature_names) != d:
        raise ValueError(f"feature_names: {len(feature_names)} names for {d} columns")
    if target in feature_names or len(set(feature_names)) != d:
        raise ValueError("feature_names and target must be distinct")
    temporary = out is None
    if temporary:
        out = tempfile.mkdtemp(prefix="langevin-fit-")
        os.rmdir(out)
    out = os.path.abspath(os.fspath(out))
    try:
        idata = _fit_in(out, Xa, ya, feature_names, target, model, method, chains, seed, options)
    finally:
        if temporary:
            shutil.rmtree(out, ignore_errors=True)
    if temporary:
        for attrs in [idata.attrs] + [getattr(idata, g).attrs for g in idata.groups()]:
            attrs.pop("run_dir", None)
    return idata


def _fit_in(out, Xa, ya, feature_names, target, model, method, chains, seed, options):
    # The data goes into the run folder (kept: `langevin predict`, `--resume`
    # and `load_run`'s log posterior read it from there).
    os.makedirs(out, exist_ok=True)
    data_path = os.path.join(out, "data.csv")
    with open(data_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(feature_names + [target])
        # repr of a float round-trips exactly: the program reads the same numbers.
        for row, t in zip(Xa.tolist(), ya.tolist()):
            w.writerow([repr(v) for v in row] + [repr(t)])
    argv = ["--data", data_path, "--target", target, "--model", str(model), "--out", out]
    if method is not None:
        argv += ["--method", str(method)]
    if chains is not None:
        argv += ["--chains", str(int(chains))]
    if seed is not None:
        argv += ["--seed", str(int(seed))]
    options.setdefault("quiet", True)
    options.setdefault("no_plots", True)
    for key, value in options.items():
        if value is None or value is False:
            continue
        if value is True:
            argv.append(_flag(key))
        elif isinstance(value, (list, tuple)):
            argv += [_flag(key), ",".join(str(v) for v in value)]
        else:
            argv += [_flag(key), str(value)]
    lp = _langevin.fit_cli(argv)
    return load_run(out, _log_posterior=lp)


def _read_samples(path):
    with open(path, newline="") as f:
        r = csv.reader(f)
        header = next(r)
        rows = np.array([[float(v) for v in row] for row in r], dtype=np.float64)
    if header[:2] != ["chain", "draw"]:
        raise ValueError(f"{path}: expected a header chain,draw,<params>")
    return header[2:], rows.reshape(-1, len(header))


_INDEXED = re.compile(r"^(.*)\[([0-9]+(?:,[0-9]+)*)\]$")


def _group(names, draws):
    """Variables from the flat parameter names: ``w[0,1]``-style names of one
    base become one variable shaped by their indices (row-major, complete),
    any other name a scalar variable."""
    groups = {}
    order = []
    for j, name in enumerate(names):
        m = _INDEXED.match(name)
        key = m.group(1) if m else name
        idx = tuple(int(i) for i in m.group(2).split(",")) if m else None
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append((idx, j))
    out = {}
    for key in order:
        items = groups[key]
        if any(idx is None for idx, _ in items):
            if len(items) != 1:
                raise ValueError(f"samples.csv: parameter `{key}` appears more than once")
            out[key] = draws[:, :, items[0][1]]
            continue
        ndim = {len(idx) for idx, _ in items}
        shape = tuple(max(idx[k] for idx, _ in items) + 1 for k in range(max(ndim)))
        if len(ndim) != 1 or len(items) != int(np.prod(shape)) or len({i for i, _ in items}) != len(items):
            for idx, j in items:  # not a complete array: one variable per name
                out[names[j]] = draws[:, :, j]
            continue
        arr = np.empty(draws.shape[:2] + shape)
        for idx, j in items:
            arr[(slice(None), slice(None)) + idx] = draws[:, :, j]
        out[key] = arr
    return out


def _attr(v):
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return v


def load_run(dir, _log_posterior=None):
    """A ``langevin fit`` run folder as an ``arviz.InferenceData``.

    * ``posterior``: the parameters (the names of ``samples.csv``), dims
      ``(chain, draw, *shape)``: indexed names (``w[0,1]``, ``x0[2]``) of one
      base are one array variable, any other name a scalar;
    * ``sample_stats``: ``lp`` (the log posterior of each draw on the
      training rows, computed again from the run's data when it can still
      be found: a bundled set, or the data file at the path the run used),
      ``step_size`` (each chain's adapted step size, where
      the method has one) and ``diverging`` (all ``False``: the folder keeps
      per-chain divergence counts only, in the attribute ``divergences_per_chain``);
    * attributes: the held-out metrics (``test_accuracy``, ``test_nll``, ...),
      ``converged`` and ``convergence_reason`` (the program's verdict),
      ``method``, ``model``, and ``summary`` / ``config`` as JSON.
    """
    import arviz as az

    dir = os.fspath(dir)
    if not os.path.isdir(dir):
        raise ValueError(f"{dir}: no such run folder")
    summary_path = os.path.join(dir, "summary.json")
    if not os.path.isfile(summary_path):
        raise ValueError(f"{dir}: no summary.json (an unfinished or failed run)")
    with open(summary_path) as f:
        summary = json.load(f)
    with open(os.path.join(dir, "run.json")) as f:
        run = json.load(f)
    names, rows = _read_samples(os.path.join(dir, "samples.csv"))
    chain_ids = rows[:, 0].astype(int)
    n_chains = int(chain_ids.max()) + 1 if len(rows) else 0
    per_chain = [rows[chain_ids == c, 2:] for c in range(n_chains)]
    n_draws = min(len(p) for p in per_chain) if per_chain else 0
    draws = np.stack([p[:n_draws] for p in per_chain]) if per_chain else np.zeros((0, 0, len(names)))
    posterior = _group(names, draws)
    stats = {"diverging": np.zeros((n_chains, n_draws), dtype=bool)}
    if _log_posterior is None:
        _log_posterior = _langevin.run_log_posterior(os.path.abspath(dir))
    if _log_posterior is not None and len(_log_posterior) == len(rows):
        lp = np.asarray(_log_posterior, dtype=float)
        stats["lp"] = np.stack([lp[chain_ids == c][:n_draws] for c in range(n_chains)])
    steps = (summary.get("adaptation") or {}).get("step_size_per_chain")
    if steps is not None and len(steps) == n_chains:
        stats["step_size"] = np.repeat(np.asarray(steps, dtype=float)[:, None], n_draws, axis=1)
    attrs = {
        "converged": bool(summary.get("converged")),
        "convergence_reason": (summary.get("convergence") or {}).get("reason", ""),
        "method": summary.get("config", {}).get("method", ""),
        "model": summary.get("config", {}).get("model", ""),
        "divergences": summary.get("divergences", 0),
        "divergences_per_chain": json.dumps(summary.get("divergences_per_chain", [])),
        "run_dir": os.path.abspath(dir),
        "summary": json.dumps(summary),
        "config": json.dumps(run.get("config", {})),
        "inference_library": "langevin",
    }
    for k, v in (summary.get("metrics") or {}).items():
        attrs[k] = _attr(v)
    idata = az.from_dict(posterior=posterior, sample_stats=stats, attrs=attrs)
    for group in ("posterior", "sample_stats"):
        if hasattr(idata, group):
            getattr(idata, group).attrs.update(attrs)
    return idata
