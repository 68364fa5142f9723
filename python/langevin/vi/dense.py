"""Dense-Gaussian VI, posteriors' ``vi.dense.build`` (the optimiser is Adam)."""

from .._approx import sample
from .._langevin import build as _build

__all__ = ["build", "sample"]


def build(log_posterior, lr=1e-2, temperature=1.0, n_samples=1, stl=True, init_L=1.0):
    """Minimise the NELBO of ``q = N(m, L L^T)`` (``L`` lower triangular,
    every entry learnt) with Adam (step ``lr``), ``n_samples`` Monte Carlo
    draws per step, sticking-the-landing gradients (``stl``), ``L`` starting
    at ``init_L * I``. The state's ``params`` is the mean, ``L_factor`` the
    factor, ``cov`` the covariance, ``sd`` its diagonal's square roots and
    ``nelbo`` the last estimate. Costs O(d^2) memory and O(d^2) per draw."""
    return _build(
        "vi-dense", log_posterior, float(lr), temperature=float(temperature),
        n_samples=int(n_samples), stl=bool(stl), init_scale=float(init_L),
    )
