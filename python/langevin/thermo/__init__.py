"""thermox's API on langevin's exact OU sampler and thermodynamic linear algebra.

``sample(key, ts, x0, A, b, D)`` and ``log_prob(ts, xs, A, b, D)`` follow
thermox's names and argument order (``key``: an int seed, or a JAX-style
key array of integers), so a thermox user can switch by changing an import.
"""

import numpy as np

from .. import _langevin
from . import linalg

__all__ = ["sample", "log_prob", "linalg"]


def _seed(key):
    if isinstance(key, (int, np.integer)):
        if key < 0:
            raise ValueError(f"key: a seed must be >= 0, got {key}")
        return int(key)
    a = np.asarray(key)
    if a.dtype.kind not in "iu" or a.size == 0:
        raise TypeError("key must be an int seed or an array of integers (a JAX key)")
    s = 0
    for v in a.ravel().tolist():
        s = (s * 0x100000001B3 + (int(v) & 0xFFFFFFFF)) % (1 << 64)
    return s


def _vec(x, name):
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a.tolist()


def _mat(x, name):
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a matrix, got shape {a.shape}")
    return np.ascontiguousarray(a)


def sample(key, ts, x0, A, b, D):
    """Exact sample of ``dx = -A (x - b) dt + sqrt(D) dW`` at the times ``ts``
    from ``x(ts[0]) = x0``: an array ``(len(ts), d)`` (first row ``x0``)."""
    return _langevin.ou_sample(_seed(key), _vec(ts, "ts"), _vec(x0, "x0"), _mat(A, "A"), _vec(b, "b"), _mat(D, "D"))


def log_prob(ts, xs, A, b, D):
    """Log density of the path ``xs`` (``(len(ts), d)``) given its first state."""
    return _langevin.ou_log_prob(_vec(ts, "ts"), _mat(xs, "xs"), _mat(A, "A"), _vec(b, "b"), _mat(D, "D"))
