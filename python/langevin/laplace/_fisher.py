"""The empirical-Fisher Laplace builders (diagonal and dense)."""

from .._approx import per_samplify
from .._langevin import build as _build


def _subset(subset):
    if subset is None:
        return None
    if isinstance(subset, str):
        return [subset]
    return [str(s) for s in subset]


def fisher(method, log_posterior, per_samp, init_prec_diag, subset):
    if not callable(log_posterior):
        raise TypeError(
            "log_posterior must be callable (params, batch) -> (value, grads)"
            f", got {type(log_posterior).__name__}"
        )
    f = log_posterior if per_samp else per_samplify(log_posterior)
    return _build(method, f, init_prec_diag=float(init_prec_diag), subset=_subset(subset))


def ggn(method, forward, outer_log_likelihood, init_prec_diag, noise_var, subset):
    return _build(
        method, forward, init_prec_diag=float(init_prec_diag), subset=_subset(subset),
        outer=outer_log_likelihood, noise_var=float(noise_var),
    )
