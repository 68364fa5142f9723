"""Thermodynamic linear algebra (a simulated analog device), thermox.linalg's names.

Each function takes the device settings as keywords: ``seed``,
``analog_time`` (device time constants, default 1000), ``sampling_interval``
(0.1), ``burn_in`` (20), ``beta`` (inverse temperature, 1) and ``batches``
(20, for the error estimate). With ``return_error=True`` it returns
``(value, std_error)``.
"""

import numpy as np

from .. import _langevin

__all__ = ["solve", "inv", "expm", "expnegm", "logdet"]


def _run(op, A, b, seed, analog_time, sampling_interval, burn_in, beta, batches, return_error):
    a = np.asarray(A, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"A must be a matrix, got shape {a.shape}")
    if b is not None:
        b = np.asarray(b, dtype=np.float64)
        if b.ndim != 1:
            raise ValueError(f"b must be 1-D, got shape {b.shape}")
        b = b.tolist()
    value, err, _info = _langevin.thermo_linalg(
        op, np.ascontiguousarray(a), b, int(seed), float(analog_time), float(sampling_interval),
        float(burn_in), float(beta), int(batches),
    )
    return (value, err) if return_error else value




def solve(A, b, *, seed=0, analog_time=1000.0, sampling_interval=0.1, burn_in=20.0, beta=1.0, batches=20, return_error=False):
    """``A^{-1} b`` for a symmetric positive definite ``A``."""
    return _run("solve", A, b, seed, analog_time, sampling_interval, burn_in, beta, batches, return_error)


def inv(A, *, seed=0, analog_time=1000.0, sampling_interval=0.1, burn_in=20.0, beta=1.0, batches=20, return_error=False):
    """``A^{-1}`` for a symmetric positive definite ``A``."""
    return _run("inv", A, None, seed, analog_time, sampling_interval, burn_in, beta, batches, return_error)


def expm(A, *, seed=0, analog_time=1000.0, sampling_interval=0.1, burn_in=20.0, beta=1.0, batches=20, return_error=False):
    """The matrix exponential ``e^{A}``."""
    return _run("expm", A, None, seed, analog_time, sampling_interval, burn_in, beta, batches, return_error)


def expnegm(A, *, seed=0, analog_time=1000.0, sampling_interval=0.1, burn_in=20.0, beta=1.0, batches=20, return_error=False):
    """The matrix exponential ``e^{-A}``."""
    return _run("expnegm", A, None, seed, analog_time, sampling_interval, burn_in, beta, batches, return_error)


def logdet(A, *, seed=0, analog_time=1000.0, sampling_interval=0.1, burn_in=20.0, beta=1.0, batches=20, return_error=False):
    """``log det A`` for a symmetric positive definite ``A``."""
    return _run("logdet", A, None, seed, analog_time, sampling_interval, burn_in, beta, batches, return_error)
