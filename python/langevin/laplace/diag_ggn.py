"""Diagonal generalised Gauss-Newton Laplace, posteriors' ``laplace.diag_ggn.build``."""

from .._approx import sample
from ._fisher import ggn as _ggn

__all__ = ["build", "sample"]


def build(forward, outer_log_likelihood, init_prec_diag=0.0, noise_var=1.0, subset=None):
    """Each ``update(state, batch)`` adds the GGN of the batch,
    ``sum_i J_i^T H_i J_i``, to the precision, which starts at
    ``init_prec_diag * I``; ``state.prec_diag`` is the diagonal of the precision.

    ``forward(params, batch)`` returns ``(outputs, jacobian)``: the model's
    outputs ``f_i`` of shape ``(n, k)`` (or ``(n,)``), and their Jacobian in the
    parameters, like ``params`` with leading axes ``(n, k)`` (posteriors'
    ``forward`` returns outputs only and differentiates them with torch; here
    the model gives its Jacobian). ``H_i`` is the Hessian of
    ``-log p(y_i | f_i)`` in the outputs: ``outer_log_likelihood`` is
    ``"bernoulli"`` (one logit), ``"categorical"`` (k logits), ``"gaussian"``
    (variance ``noise_var``), or a callable ``(outputs, batch) -> (n, k, k)``
    Hessians. ``subset``: parameter names to approximate."""
    return _ggn("laplace-diag-ggn", forward, outer_log_likelihood, init_prec_diag, noise_var, subset)
