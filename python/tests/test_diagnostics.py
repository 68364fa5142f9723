import warnings

import arviz as az
import numpy as np
import pytest

import langevin


def ar1(rng, shape, phi=0.7):
    x = np.empty(shape)
    x[:, 0] = rng.normal(size=shape[:1] + shape[2:])
    for t in range(1, shape[1]):
        x[:, t] = phi * x[:, t - 1] + rng.normal(size=shape[:1] + shape[2:])
    return x


@pytest.fixture(scope="module")
def draws():
    rng = np.random.default_rng(0)
    x = ar1(rng, (4, 500, 3))
    x[:, :, 1] = np.exp(x[:, :, 1])  # skewed
    x[2, :, 2] += 0.5  # a chain off
    return x


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind,method", [("bulk", "bulk"), ("tail", "tail"), ("mean", "mean")])
def test_ess_equals_arviz(draws, kind, method):
    ours = langevin.ess(draws, kind=kind)
    theirs = np.array([float(az.ess(draws[:, :, j], method=method)) for j in range(3)])
    close(ours, theirs)


def test_ess_quantile_equals_arviz(draws):
    close(langevin.ess(draws[:, :, 0], kind="quantile", prob=0.25),
          float(az.ess(draws[:, :, 0], method="quantile", prob=0.25)))


@pytest.mark.parametrize("method,theirs", [("rank", "rank"), ("basic", "split")])
def test_rhat_equals_arviz(draws, method, theirs):
    ours = langevin.rhat(draws, method=method)
    theirs = np.array([float(az.rhat(draws[:, :, j], method=theirs)) for j in range(3)])
    close(ours, theirs)


@pytest.mark.parametrize("method", ["mean", "sd"])
def test_mcse_equals_arviz(draws, method):
    ours = langevin.mcse(draws, method=method)
    theirs = np.array([float(az.mcse(draws[:, :, j], method=method)) for j in range(3)])
    close(ours, theirs)


def test_mcse_quantile_equals_arviz(draws):
    close(langevin.mcse(draws[:, :, 0], method="quantile", prob=0.1),
          float(az.mcse(draws[:, :, 0], method="quantile", prob=0.1)))


def test_scalar_and_shape(draws):
    assert isinstance(langevin.rhat(draws[:, :, 0]), float)
    assert langevin.ess(draws).shape == (3,)
    assert langevin.ess(np.stack([draws, draws], axis=-1)).shape == (3, 2)


def test_diagnostics_bad_input(draws):
    with pytest.raises(ValueError, match="chain, draw"):
        langevin.ess(np.zeros(10))
    with pytest.raises(ValueError):
        langevin.ess(draws, kind="median")
    with pytest.raises(TypeError):
        langevin.rhat("abc")
    with pytest.raises(ValueError):
        langevin.rhat(np.zeros((4, 2)))  # too few draws
    bad = draws[:, :, 0].copy()
    bad[0, 3] = np.nan
    with pytest.raises(ValueError):
        langevin.ess(bad)


def test_ksd():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 2))
    good = langevin.ksd(x, -x)
    shifted = langevin.ksd(x + 1.0, -(x + 1.0))  # draws off by 1 from N(0, I)
    assert 0 <= good < 0.2
    assert shifted > 3 * good
    # (chain, draw, d) is flattened
    assert langevin.ksd(x.reshape(4, 100, 2), -x.reshape(4, 100, 2)) == pytest.approx(good, rel=1e-12)
    with pytest.raises(ValueError, match="shape"):
        langevin.ksd(x, -x[:10])
    with pytest.raises(ValueError):
        langevin.ksd(x, -x, beta=0.5)
