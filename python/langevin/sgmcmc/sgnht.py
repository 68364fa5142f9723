"""SGNHT (Ding et al. 2014), posteriors' ``sgnht.build``."""

from .._langevin import build as _build


def build(log_posterior, lr, alpha=0.01, beta=0.0, sigma=1.0, temperature=1.0, momenta=None, xi=None):
    """SGNHT: as SGHMC, with the thermostat ``xi`` (default: ``alpha``)."""
    return _build(
        "sgnht", log_posterior, float(lr), alpha=float(alpha), beta=float(beta),
        sigma=float(sigma), temperature=float(temperature), momenta=momenta, xi=xi,
    )
