"""Diagonal empirical-Fisher Laplace, posteriors' ``laplace.diag_fisher.build``."""

from .._approx import sample
from ._fisher import fisher as _fisher

__all__ = ["build", "sample"]


def build(log_posterior, per_samp=False, init_prec_diag=0.0, subset=None):
    """Each ``update(state, batch)`` adds the empirical Fisher of the batch,
    the sum over its examples of ``g_i g_i^T`` (``g_i`` the gradient of example
    ``i``'s log posterior at the state's ``params``, which do not move: start at
    the mode), to the precision, which starts at ``init_prec_diag * I``;
    ``state.prec_diag`` is the diagonal of the precision.

    ``per_samp=True``: ``log_posterior(params, batch)`` returns
    ``(values, grads)`` per example (``values`` of shape ``(n,)``, each entry of
    ``grads`` with a leading axis ``n``). ``per_samp=False`` (posteriors' default):
    it is the usual batch ``(value, grads)`` and is called once per example,
    on the batch cut to that row. ``subset``: parameter names (dict keys) to
    approximate, e.g. the last layer; the others stay at the mode in
    :func:`sample`."""
    return _fisher("laplace-diag-fisher", log_posterior, per_samp, init_prec_diag, subset)
