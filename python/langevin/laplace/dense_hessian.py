"""Dense Hessian Laplace, posteriors' ``laplace.dense_hessian.build``."""

from .._approx import sample
from .._langevin import build as _build

__all__ = ["build", "sample"]


def build(log_posterior, rescale=1.0, init_prec_diag=0.0):
    """Each ``update`` adds ``rescale`` times the negative Hessian of the log
    posterior on the batch (at the state's ``params``, which do not move:
    start at the mode) to the precision; ``state.prec`` is the ``(d, d)``
    precision, starting at ``init_prec_diag * I``."""
    return _build("laplace-hessian", log_posterior, rescale=float(rescale), init_prec_diag=float(init_prec_diag))
