"""langevin.torch_adapter: torch log posteriors through torch.func.

Skipped (and reported so) where torch is not installed: CI's environment
has no torch; run these in an environment with torch (and posteriors, for
the comparison with the peer), see README "Python package".
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from langevin import laplace, sgmcmc  # noqa: E402
from langevin import torch_adapter as lt  # noqa: E402
from test_laplace_curvature import (  # noqa: E402
    D,
    N,
    batches,
    flat_grads,
    forward,
    log_posterior,
    per_example,
    scenario,
)

F64 = torch.float64


def torch_log_posterior(params, batch, n_data=N):
    """posteriors' log_posterior_n for the scenario's linear model, in torch."""
    x, y = batch
    f = x @ params["weight"].T + params["bias"]
    normal = torch.distributions.Normal(0.0, 1.0)
    prior = normal.log_prob(params["weight"]).sum() + normal.log_prob(params["bias"]).sum()
    lik = torch.distributions.Normal(f, 1.0, validate_args=False).log_prob(y).sum(-1)
    return (prior + n_data * lik).mean(), f


def torch_forward(params, batch):
    x, _ = batch
    return x @ params["weight"].T + params["bias"], torch.tensor([])


def test_log_posterior_value_and_gradient():
    params, xs, ys = scenario()
    f = lt.log_posterior(torch_log_posterior, dtype=F64)
    v, g = f(params, (xs, ys))
    v_ref, g_ref = log_posterior(params, (xs, ys))
    assert v == pytest.approx(v_ref, rel=1e-12)
    for k in g_ref:
        np.testing.assert_allclose(g[k], g_ref[k], rtol=1e-10)
        assert g[k].dtype == np.float64 and g[k].shape == params[k].shape


def test_fisher_and_ggn_through_torch_equal_the_numpy_callbacks():
    params, xs, ys = scenario()
    expected = (flat_grads(params, xs, ys) ** 2).sum(0)
    for f, per_samp in [
        (lt.log_posterior(torch_log_posterior, dtype=F64), False),
        (lt.per_sample_log_posterior(torch_log_posterior, dtype=F64), True),
    ]:
        t = laplace.diag_fisher.build(f, per_samp=per_samp)
        s = t.init(params)
        for b in batches(xs, ys):
            s = t.update(s, b)
        np.testing.assert_allclose(s.prec_diag, expected, rtol=1e-9)
    tg = laplace.dense_ggn.build(lt.forward_jacobian(torch_forward, dtype=F64), "gaussian")
    tn = laplace.dense_ggn.build(forward, "gaussian")
    np.testing.assert_allclose(
        tg.update(tg.init(params), (xs, ys)).prec, tn.update(tn.init(params), (xs, ys)).prec, rtol=1e-12
    )
    # per-example values agree with the NumPy per-example function
    v, _ = lt.per_sample_log_posterior(torch_log_posterior, dtype=F64)(params, (xs, ys))
    np.testing.assert_allclose(v, per_example(params, (xs, ys))[0], rtol=1e-12)


def test_sghmc_draws_equal_the_numpy_density_s():
    # The same density in f64 through torch or NumPy: the same chain (the
    # noise comes from the same generator), up to rounding.
    params, xs, ys = scenario()
    runs = []
    for f in (lt.log_posterior(torch_log_posterior, dtype=F64), log_posterior):
        t = sgmcmc.sghmc.build(f, lr=1e-4, alpha=1.0)
        s, trace = t.run(t.init(params, seed=5), (xs, ys), 200)  # one batch, every step
        runs.append(trace["params"])
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-8, atol=1e-10)


def test_module_in_float32():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(D, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    params = lt.params_of(model)
    assert set(params) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert all(v.dtype == np.float64 for v in params.values())
    _, xs, ys = scenario()

    def lp(p, batch):
        x, y = batch
        pred = torch.func.functional_call(model, p, (x,))
        return -0.5 * ((pred - y) ** 2).sum()

    v, g = lt.log_posterior(lp)(params, (xs, ys))  # default dtype: float32
    pred = model(torch.from_numpy(xs).float())
    loss = -0.5 * ((pred - torch.from_numpy(ys).float()) ** 2).sum()
    loss.backward()
    assert v == pytest.approx(loss.item(), rel=1e-5)
    for k, p in model.named_parameters():
        np.testing.assert_allclose(g[k], p.grad.double().numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="callable"):
        lt.log_posterior(None)


def test_against_posteriors():
    # posteriors' own diag/dense Fisher and dense GGN on the same model and
    # data (posteriors' test scenario), in float64: the same precisions.
    posteriors = pytest.importorskip("posteriors")
    params, xs, ys = scenario()
    tparams = {k: torch.from_numpy(v.copy()) for k, v in params.items()}
    x, y = torch.from_numpy(xs), torch.from_numpy(ys)

    pt = posteriors.laplace.diag_fisher.build(torch_log_posterior)
    ps = pt.init(tparams)
    for i in range(0, N, 20):
        ps, _ = pt.update(ps, (x[i : i + 20], y[i : i + 20]))
    lt_t = laplace.diag_fisher.build(lt.log_posterior(torch_log_posterior, dtype=F64))
    s = lt_t.init(params)
    for b in batches(xs, ys):
        s = lt_t.update(s, b)
    theirs = np.concatenate([ps.prec_diag[k].numpy().ravel() for k in params])
    np.testing.assert_allclose(s.prec_diag, theirs, rtol=1e-9)

    def outer(pred, batch):
        return torch.distributions.Normal(pred, 1.0, validate_args=False).log_prob(batch[1]).sum()

    gt = posteriors.laplace.dense_ggn.build(torch_forward, outer)
    gs, _ = gt.update(gt.init(tparams), (x, y))
    mine = laplace.dense_ggn.build(lt.forward_jacobian(torch_forward, dtype=F64), "gaussian")
    ms = mine.update(mine.init(params), (xs, ys))
    # posteriors flattens a dict in sorted key order (optree: bias, weight),
    # langevin in the dict's order (weight, bias)
    order = np.r_[D, 0:D]
    np.testing.assert_allclose(ms.prec[np.ix_(order, order)], gs.prec.numpy(), rtol=1e-10)
