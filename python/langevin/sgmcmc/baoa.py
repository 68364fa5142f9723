"""BAOA (Leimkuhler & Matthews), posteriors' ``baoa.build``."""

from .._langevin import build as _build


def build(log_posterior, lr, alpha=0.01, sigma=1.0, temperature=1.0, momenta=None):
    """BAOA: ``lr`` step size, ``alpha`` friction, ``sigma`` momentum scale."""
    return _build(
        "baoa", log_posterior, float(lr), alpha=float(alpha), sigma=float(sigma),
        temperature=float(temperature), momenta=momenta,
    )
