"""SGHMC (Chen et al. 2014), posteriors' ``sghmc.build``."""

from .._langevin import build as _build


def build(log_posterior, lr, alpha=0.01, beta=0.0, sigma=1.0, temperature=1.0, momenta=None):
    """SGHMC: ``lr`` step size, ``alpha`` friction, ``beta`` gradient-noise
    estimate, ``sigma`` momentum scale; ``momenta``: ``None`` (standard
    normal) or a constant."""
    return _build(
        "sghmc", log_posterior, float(lr), alpha=float(alpha), beta=float(beta),
        sigma=float(sigma), temperature=float(temperature), momenta=momenta,
    )
