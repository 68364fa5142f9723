"""Laplace approximations over your own model (posteriors' ``laplace``):
``q = N(theta*, T P^-1)`` around a mode ``theta*`` found beforehand, with the
precision ``P`` summed over batches by ``update``.

* ``diag_fisher``, ``dense_fisher``: the empirical Fisher of a per-example
  log posterior;
* ``diag_ggn``, ``dense_ggn``: the generalised Gauss-Newton of a model's
  outputs and Jacobian under a known (or your) outer likelihood;
* ``dense_hessian``: the negative Hessian of the batch log posterior
  (from its gradients).

Each module has ``build`` and ``sample(state, sample_shape, temperature)``.
"""

from . import dense_fisher, dense_ggn, dense_hessian, diag_fisher, diag_ggn

__all__ = ["diag_fisher", "dense_fisher", "diag_ggn", "dense_ggn", "dense_hessian"]
