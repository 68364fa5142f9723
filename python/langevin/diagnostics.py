"""Convergence diagnostics on arrays shaped ``(chain, draw, ...)``.

The library's own (``langevin::diagnostics``): rank-normalised split R-hat,
bulk and tail ESS, MCSE, as in ArviZ (Vehtari et al. 2021), and the kernel
Stein discrepancy. Extra dimensions are computed element by element, as in
``arviz.ess`` on an array.
"""

import numpy as np

from . import _langevin


def _chains(x, name="x"):
    if not hasattr(x, "__array__") and not isinstance(x, (list, tuple)):
        raise TypeError(f"{name} must be an array shaped (chain, draw, ...), got {type(x).__name__}")
    a = np.asarray(x, dtype=np.float64)
    if a.ndim < 2:
        raise ValueError(f"{name} must be shaped (chain, draw, ...), got shape {a.shape}")
    return a


def _apply(kind, x, prob=0.5):
    a = _chains(x)
    rest = a.shape[2:]
    flat = a.reshape(a.shape[0], a.shape[1], -1)
    out = np.empty(flat.shape[2])
    for i in range(flat.shape[2]):
        out[i] = _langevin.diag(kind, np.ascontiguousarray(flat[:, :, i]), float(prob))
    if not rest:
        return float(out[0])
    return out.reshape(rest)


def ess(x, kind="bulk", prob=None):
    """Effective sample size: ``kind`` is ``"bulk"``, ``"tail"``, ``"mean"``
    (Geyer's, unranked) or ``"quantile"`` (with ``prob``)."""
    kinds = {"bulk": "ess_bulk", "tail": "ess_tail", "mean": "ess_mean", "quantile": "ess_quantile"}
    if kind not in kinds:
        raise ValueError(f"kind must be one of {sorted(kinds)}, got {kind!r}")
    if kind == "quantile" and prob is None:
        raise ValueError("kind='quantile' needs prob")
    return _apply(kinds[kind], x, 0.5 if prob is None else prob)


def rhat(x, method="rank"):
    """Split R-hat: ``"rank"`` (rank-normalised, folded; ArviZ's default) or ``"basic"``."""
    kinds = {"rank": "rhat", "basic": "rhat_basic"}
    if method not in kinds:
        raise ValueError(f"method must be one of {sorted(kinds)}, got {method!r}")
    return _apply(kinds[method], x)


def mcse(x, method="mean", prob=None):
    """Monte Carlo standard error of the ``"mean"``, ``"sd"`` or a ``"quantile"`` (``prob``)."""
    kinds = {"mean": "mcse_mean", "sd": "mcse_sd", "quantile": "mcse_quantile"}
    if method not in kinds:
        raise ValueError(f"method must be one of {sorted(kinds)}, got {method!r}")
    if method == "quantile" and prob is None:
        raise ValueError("method='quantile' needs prob")
    return _apply(kinds[method], x, 0.5 if prob is None else prob)


def ksd(x, grad_log_p, c=1.0, beta=-0.5):
    """Kernel Stein discrepancy (IMQ kernel ``(c^2 + |x - y|^2)^beta``) of the
    draws ``x`` (``(n, d)``, or ``(chain, draw, d)``) against the target's
    score ``grad_log_p`` at the draws (same shape). 0 for a perfect sample."""
    a = np.asarray(x, dtype=np.float64)
    g = np.asarray(grad_log_p, dtype=np.float64)
    if a.shape != g.shape:
        raise ValueError(f"x and grad_log_p differ in shape: {a.shape} vs {g.shape}")
    if a.ndim == 1:
        a, g = a[:, None], g[:, None]
    a = np.ascontiguousarray(a.reshape(-1, a.shape[-1]))
    g = np.ascontiguousarray(g.reshape(-1, g.shape[-1]))
    return _langevin.ksd(a, g, float(c), float(beta))
