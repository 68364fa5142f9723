"""PyTorch functions as langevin's NumPy callbacks (optional: needs ``torch``).

posteriors' users write their log posterior in torch; these wrappers turn
such a function into the ``(params, batch) -> (value, grads)`` callable that
:mod:`langevin.sgmcmc`, :mod:`langevin.vi` and :mod:`langevin.laplace`
call, with gradients from ``torch.func``::

    import torch, langevin
    from langevin import torch_adapter as lt

    model = torch.nn.Linear(10, 1)

    def log_post(params, batch):               # posteriors' convention
        x, y = batch
        pred = torch.func.functional_call(model, params, (x,))
        return torch.distributions.Normal(pred, 1.0).log_prob(y).mean(), pred

    t = langevin.sgmcmc.sghmc.build(lt.log_posterior(log_post), lr=1e-3)
    state = t.init(lt.params_of(model))
    state, trace = t.run(state, (x, y), 1000)

Parameters travel as NumPy ``float64`` arrays and are converted to torch
tensors of ``dtype`` (default: torch's default dtype) for every call;
floating NumPy arrays in the batch (dicts, tuples and lists of them) are
converted the same way, tensors are passed as they are. Gradients come back
as ``float64``. A function may return a scalar or ``(scalar, aux)``
(posteriors' convention; ``aux`` is ignored).
"""

import numpy as np

try:
    import torch
    from torch.func import grad_and_value, jacrev, vmap
except ImportError as e:  # pragma: no cover - exercised where torch is missing
    raise ImportError(
        "langevin.torch_adapter needs PyTorch (pip install torch); "
        "the rest of langevin works without it"
    ) from e

__all__ = ["log_posterior", "per_sample_log_posterior", "forward_jacobian", "params_of"]


def _dtype(dtype):
    return torch.get_default_dtype() if dtype is None else dtype


def _to_torch(obj, dtype):
    if isinstance(obj, dict):
        return {k: _to_torch(v, dtype) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_torch(v, dtype) for v in obj)
    if isinstance(obj, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(obj))
        return t.to(dtype) if t.is_floating_point() else t
    return obj


def _to_numpy(obj):
    if isinstance(obj, dict):
        return {k: _to_numpy(v) for k, v in obj.items()}
    return obj.detach().to(torch.float64).cpu().numpy()


def _unsqueeze(obj):
    if isinstance(obj, dict):
        return {k: _unsqueeze(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unsqueeze(v) for v in obj)
    return obj.unsqueeze(0)


def _scalar(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def params_of(module):
    """A module's parameters as langevin's ``params``: a dict of ``float64``
    NumPy arrays named as in ``module.named_parameters()``."""
    return {k: v.detach().to(torch.float64).cpu().numpy().copy() for k, v in module.named_parameters()}


def log_posterior(fn, dtype=None):
    """``fn(params, batch) -> scalar tensor`` (or ``(scalar, aux)``) as a
    callback ``(params, batch) -> (value, grads)`` for the SGMCMC, VI and
    dense-Hessian Laplace builders (and the Fisher ones with
    ``per_samp=False``). ``params`` is a dict of tensors (or one tensor)."""
    if not callable(fn):
        raise TypeError(f"fn must be callable (params, batch) -> scalar tensor, got {type(fn).__name__}")

    def scalar(p, b):
        return _scalar(fn(p, b))

    gv = grad_and_value(scalar)

    def f(params, batch):
        dt = _dtype(dtype)
        g, v = gv(_to_torch(params, dt), _to_torch(batch, dt))
        return float(v), _to_numpy(g)

    return f


def per_sample_log_posterior(fn, dtype=None):
    """``fn(params, batch) -> scalar tensor`` evaluated per example with
    ``torch.func.vmap`` (each example as a batch of one row, posteriors'
    ``per_samplify``): a callback ``(params, batch) -> (values (n,), grads
    with a leading axis n)`` for the Fisher builders with ``per_samp=True``.
    The batch is a tensor or a tuple/list/dict of tensors (or arrays) with
    the examples on their first axis."""
    if not callable(fn):
        raise TypeError(f"fn must be callable (params, batch) -> scalar tensor, got {type(fn).__name__}")

    def one(p, row):
        return _scalar(fn(p, _unsqueeze(row)))

    per = vmap(grad_and_value(one), in_dims=(None, 0))

    def f(params, batch):
        dt = _dtype(dtype)
        g, v = per(_to_torch(params, dt), _to_torch(batch, dt))
        return v.detach().to(torch.float64).numpy(), _to_numpy(g)

    return f


def forward_jacobian(forward, dtype=None):
    """``forward(params, batch) -> outputs`` (``(n, k)`` or ``(n,)``; or
    ``(outputs, aux)``, posteriors' convention) as the callback ``(params,
    batch) -> (outputs, jacobian)`` of the GGN builders, with the Jacobian
    from ``torch.func.jacrev``. Its cost grows with ``n * k`` backward
    passes' worth of work: use it on minibatches."""
    if not callable(forward):
        raise TypeError(f"forward must be callable (params, batch) -> outputs, got {type(forward).__name__}")

    def out(p, b):
        o = _first(forward(p, b))
        return o, o.detach()

    jac_and_out = jacrev(out, has_aux=True)

    def f(params, batch):
        dt = _dtype(dtype)
        jac, outputs = jac_and_out(_to_torch(params, dt), _to_torch(batch, dt))
        return outputs.to(torch.float64).numpy(), _to_numpy(jac)

    return f
