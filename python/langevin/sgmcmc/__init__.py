"""posteriors-style SGMCMC over your own log posterior.

``langevin.sgmcmc.sghmc.build(log_posterior, lr, alpha=..., temperature=...)``
returns a transform with ``init(params, seed=0)``, ``update(state, batch)``
and ``run(state, batches, n_steps, thin=1)``. ``log_posterior(params, batch)``
is any Python callable returning ``(value, grads)``: ``params`` and ``grads``
are a dict of NumPy arrays (or one array), as given to ``init``; ``batch`` is
whatever you pass (e.g. a dict of arrays, or a tuple ``(x, y)``). ``run``
loops in Rust and calls Python only for the density; its ``batches`` is a
list of batches, used in turn, or one batch (anything but a list) used at
every step.

States are immutable: ``update`` returns a new state. A density that raises
lets its exception through (with its traceback); a non-finite value or
gradient raises :class:`langevin.NonFiniteLogDensityError`. In both cases
the state given is unchanged.
"""

from . import baoa, sghmc, sgld, sgnht

__all__ = ["sgld", "sghmc", "sgnht", "baoa"]
