"""Laplace approximations over your own log posterior (posteriors' ``laplace``).

The Fisher and GGN variants of the library need per-example likelihoods of
a model (``langevin fit --method laplace-*`` offers them on the bundled
models); for a Python log posterior the dense Hessian variant is available.
"""

from . import dense_hessian

__all__ = ["dense_hessian"]
