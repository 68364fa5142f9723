"""langevin: Bayesian learning and thermodynamic computing in Rust, from Python.

* :func:`fit` -- ``langevin fit`` on arrays, as an ``arviz.InferenceData``;
* :func:`load_run` -- a ``langevin fit`` run folder as ``InferenceData``;
* :mod:`langevin.sgmcmc`, :mod:`langevin.vi`, :mod:`langevin.laplace` -- posteriors-style
  transforms over your own log posterior (SGLD, SGHMC, SGNHT, BAOA; diagonal
  and dense VI; diagonal/dense Fisher and GGN and dense Hessian Laplace);
* :mod:`langevin.torch_adapter` -- torch log posteriors and models as those
  callbacks (imported on demand: needs ``torch``);
* :mod:`langevin.thermo` -- thermox-style OU sampling and thermodynamic linear algebra;
* :func:`ess`, :func:`rhat`, :func:`mcse`, :func:`ksd` -- diagnostics on ``(chain, draw, ...)`` arrays;
* :mod:`langevin.datasets` -- the bundled data sets.
"""

from . import _langevin, datasets, laplace, sgmcmc, thermo, vi
from ._fit import fit, load_run
from ._langevin import DivergenceError, LangevinError, NonFiniteLogDensityError
from .diagnostics import ess, ksd, mcse, rhat

__all__ = [
    "fit",
    "load_run",
    "ess",
    "rhat",
    "mcse",
    "ksd",
    "datasets",
    "sgmcmc",
    "vi",
    "laplace",
    "thermo",
    "LangevinError",
    "NonFiniteLogDensityError",
    "DivergenceError",
]
__version__ = "0.1.0"
