"""Diagonal-Gaussian VI, posteriors' ``vi.diag.build`` (the optimiser is Adam)."""

from .._approx import sample
from .._langevin import build as _build

__all__ = ["build", "sample"]


def build(log_posterior, lr=1e-2, temperature=1.0, n_samples=1, stl=True, init_log_sds=0.0):
    """Minimise the NELBO of ``q = N(m, diag(s^2))`` with Adam (step ``lr``),
    ``n_samples`` Monte Carlo draws per step, sticking-the-landing gradients
    (``stl``), ``log s`` starting at ``init_log_sds``. The state's ``params``
    is the mean, ``sd`` the standard deviations, ``nelbo`` the last estimate."""
    return _build(
        "vi-diag", log_posterior, float(lr), temperature=float(temperature),
        n_samples=int(n_samples), stl=bool(stl), init_log_sds=float(init_log_sds),
    )
