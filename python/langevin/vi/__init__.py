"""Variational inference over your own log posterior (posteriors' ``vi``):
``diag`` (``q = N(m, diag(s^2))``) and ``dense`` (``q = N(m, L L^T)``), each
with ``build`` and ``sample(state, sample_shape)``."""

from . import dense, diag

__all__ = ["diag", "dense"]
