"""SGLD (Welling & Teh 2011), posteriors' ``sgld.build``."""

from .._langevin import build as _build


def build(log_posterior, lr, beta=0.0, temperature=1.0):
    """SGLD: ``lr`` the step size, ``beta`` the gradient-noise estimate, ``temperature``."""
    return _build("sgld", log_posterior, float(lr), beta=float(beta), temperature=float(temperature))
