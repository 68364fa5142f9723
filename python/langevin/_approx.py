"""Shared helpers of the VI and Laplace modules: per-example evaluation of a
batch log posterior, and draws from a fitted approximation."""

import math

import numpy as np

from . import _langevin


def _leaves(batch):
    if isinstance(batch, dict):
        for v in batch.values():
            yield from _leaves(v)
    elif isinstance(batch, (list, tuple)):
        for v in batch:
            yield from _leaves(v)
    else:
        yield batch


def _row(batch, i):
    if isinstance(batch, dict):
        return {k: _row(v, i) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_row(v, i) for v in batch)
    return np.asarray(batch)[i : i + 1]


def _stack(items):
    first = items[0]
    if isinstance(first, dict):
        return {k: np.stack([np.asarray(g[k], dtype=float) for g in items]) for k in first}
    return np.stack([np.asarray(g, dtype=float) for g in items])


def per_samplify(log_posterior):
    """A per-example version of a batch ``log_posterior(params, batch) ->
    (value, grads)``: it is called once per example, on the batch cut to that
    row (every array of the batch sliced ``[i:i+1]``, as posteriors'
    ``per_samplify`` does with ``vmap``), and returns ``(values (n,),
    grads with a leading axis n)``. Slower than writing the per-example
    function directly (``per_samp=True``)."""

    def f(params, batch):
        leaves = list(_leaves(batch))
        if not leaves or any(np.ndim(x) == 0 for x in leaves):
            raise ValueError(
                "per_samp=False needs a batch of arrays (a dict, tuple or list of them) "
                "with the examples on their first axis"
            )
        n = len(np.asarray(leaves[0]))
        if any(len(np.asarray(x)) != n for x in leaves):
            raise ValueError("the batch's arrays have different numbers of rows")
        values, grads = [], []
        for i in range(n):
            v, g = log_posterior(params, _row(batch, i))
            values.append(float(v))
            grads.append(g)
        return np.asarray(values), _stack(grads)

    return f


def sample(state, sample_shape=(), temperature=1.0, seed=0):
    """Draws from the approximation in ``state`` (VI or Laplace), shaped like
    ``state.params`` with leading axes ``sample_shape`` (posteriors'
    ``sample(state, sample_shape, temperature)``). ``temperature`` scales a
    Laplace covariance; ``seed`` picks the draws (the same seed, the same
    draws)."""
    shape = (int(sample_shape),) if np.isscalar(sample_shape) else tuple(int(s) for s in sample_shape)
    n = math.prod(shape)
    flat = _langevin.sample_state(state, n, float(temperature), int(seed))
    params = state.params
    if isinstance(params, dict):
        out, off = {}, 0
        for k, v in params.items():
            v = np.asarray(v)
            out[k] = flat[:, off : off + v.size].reshape(shape + v.shape)
            off += v.size
        return out
    return flat.reshape(shape + np.shape(params))
