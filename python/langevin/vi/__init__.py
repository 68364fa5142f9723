"""Variational inference over your own log posterior (posteriors' ``vi``)."""

from . import diag

__all__ = ["diag"]
