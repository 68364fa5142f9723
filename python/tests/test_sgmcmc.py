import traceback

import numpy as np
import pytest

import langevin
from langevin import sgmcmc

# DESIGN.md's SGMCMC scenario (posteriors' own test): a 2-D Gaussian,
# mean mu, covariance 0.3 A A^T + 0.7 I, start from N(0, 100 I).
RNG = np.random.default_rng(42)
MU = RNG.normal(size=2)
AM = RNG.normal(size=(2, 2))
COV = 0.3 * AM @ AM.T + 0.7 * np.eye(2)
PREC = np.linalg.inv(COV)


def gaussian(params, batch):
    d = params["x"] - MU
    return -0.5 * d @ PREC @ d, {"x": -PREC @ d}


def kl(mean, cov):
    # KL(N(mean, cov) || N(MU, COV))
    d = mean - MU
    return 0.5 * (np.trace(PREC @ cov) + d @ PREC @ d - 2 + np.log(np.linalg.det(COV) / np.linalg.det(cov)))


SCENARIOS = {
    "sgld": lambda: sgmcmc.sgld.build(gaussian, lr=1e-2),
    "sghmc": lambda: sgmcmc.sghmc.build(gaussian, lr=0.1, alpha=10.0, sigma=np.sqrt(10.0), momenta=0.0),
    "sgnht": lambda: sgmcmc.sgnht.build(gaussian, lr=0.1, alpha=10.0, sigma=np.sqrt(10.0), momenta=0.0),
    "baoa": lambda: sgmcmc.baoa.build(gaussian, lr=0.1, alpha=10.0, sigma=np.sqrt(10.0), momenta=0.0),
}


@pytest.mark.parametrize("method", sorted(SCENARIOS))
def test_gaussian_target(method):
    # 100 000 steps, the first 15 000 discarded, in each of 8 chains (one
    # chain's Monte Carlo error of the mean along the slow direction is
    # about 0.1, of the variance 0.15, with this target: the chains are pooled).
    t = SCENARIOS[method]()
    draws = []
    for chain in range(8):
        start = {"x": np.random.default_rng(chain).normal(scale=10.0, size=2)}
        state, trace = t.run(t.init(start, seed=0, chain=chain), {}, 100_000)
        assert state.step == 100_000
        assert trace["log_posterior"].shape == (100_000,)
        draws.append(trace["params"][15_000:])
    x = np.concatenate(draws)
    mean, cov = x.mean(0), np.cov(x.T)
    np.testing.assert_allclose(mean, MU, atol=0.1)
    np.testing.assert_allclose(cov, COV, atol=0.1)
    # KL of the Gaussian fit below 1% of the initial one (N(0, 100 I)).
    assert kl(mean, cov) < 0.01 * kl(np.zeros(2), 100 * np.eye(2))


def test_update_equals_run_and_is_deterministic():
    t = sgmcmc.sghmc.build(gaussian, lr=0.05, alpha=1.0)
    s0 = t.init({"x": np.zeros(2)}, seed=7)
    s = s0
    for _ in range(50):
        s = t.update(s, None)
    r, trace = t.run(s0, None, 50)
    np.testing.assert_array_equal(s.params["x"], r.params["x"])
    np.testing.assert_array_equal(trace["params"][-1], r.flat_params)
    assert s0.step == 0 and r.step == 50
    r2, _ = t.run(t.init({"x": np.zeros(2)}, seed=7), None, 50)
    np.testing.assert_array_equal(r.params["x"], r2.params["x"])
    r3, _ = t.run(t.init({"x": np.zeros(2)}, seed=8), None, 50)
    assert not np.array_equal(r.params["x"], r3.params["x"])


def test_array_params_and_batches():
    # Logistic regression on minibatches of a dict of arrays; params an array.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 3))
    w_true = np.array([1.0, -2.0, 0.5])
    y = (rng.random(256) < 1 / (1 + np.exp(-X @ w_true))).astype(float)
    batches = [{"X": X[i:i + 32], "y": y[i:i + 32]} for i in range(0, 256, 32)]
    n = 256

    def lp(w, batch):
        z = batch["X"] @ w
        p = 1 / (1 + np.exp(-z))
        ll = np.sum(batch["y"] * z - np.logaddexp(0, z)) * n / len(batch["y"])
        g = batch["X"].T @ (batch["y"] - p) * n / len(batch["y"]) - w
        return ll - 0.5 * w @ w, g

    t = sgmcmc.sghmc.build(lp, lr=1e-2, alpha=1.0)
    state, trace = t.run(t.init(np.zeros(3)), batches, 4000)
    assert state.params.shape == (3,)
    w = trace["params"][1000:].mean(0)
    assert np.all(np.sign(w) == np.sign(w_true))


def test_state_attributes():
    t = sgmcmc.sgld.build(gaussian, lr=1e-2)
    s = t.init({"x": np.ones(2)})
    assert s.momenta is None and np.isnan(s.log_posterior)
    s = t.update(s, None)
    assert np.isfinite(s.log_posterior) and s.step == 1
    assert sgmcmc.baoa.build(gaussian, lr=0.1).init({"x": np.ones(2)}).momenta.shape == (2,)
    assert "sgld" in repr(s)


def test_non_callable_density():
    with pytest.raises(TypeError, match="callable"):
        sgmcmc.sghmc.build(42, lr=0.1)


def test_bad_hyper_parameters():
    with pytest.raises(ValueError, match="step_size"):
        sgmcmc.sghmc.build(gaussian, lr=-1.0)
    with pytest.raises(ValueError):
        sgmcmc.sgld.build(gaussian, lr=0.1, temperature=-1.0)


def test_raising_density_surfaces_and_state_unchanged():
    calls = {"n": 0}

    def flaky(params, batch):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("boom in my density")
        return gaussian(params, batch)

    t = sgmcmc.sghmc.build(flaky, lr=0.1)
    s = t.init({"x": np.ones(2)}, seed=1)
    s = t.update(s, None)
    before = s.params["x"].copy(), s.step, s.momenta.copy()
    with pytest.raises(RuntimeError, match="boom in my density") as exc:
        t.run(s, None, 10)
    assert "flaky" in "".join(traceback.format_tb(exc.value.__traceback__))
    with pytest.raises(RuntimeError, match="boom"):
        t.update(s, None)
    np.testing.assert_array_equal(s.params["x"], before[0])
    np.testing.assert_array_equal(s.momenta, before[2])
    assert s.step == before[1]


def test_nan_density():
    t = sgmcmc.sgld.build(lambda p, b: (float("nan"), {"x": np.zeros(2)}), lr=0.1)
    s = t.init({"x": np.ones(2)})
    with pytest.raises(langevin.NonFiniteLogDensityError, match="non-finite log density"):
        t.update(s, None)
    assert s.step == 0
    t = sgmcmc.sgld.build(lambda p, b: (0.0, {"x": np.array([np.inf, 0.0])}), lr=0.1)
    with pytest.raises(ValueError, match="non-finite"):
        t.update(t.init({"x": np.ones(2)}), None)


def test_bad_density_outputs():
    t = sgmcmc.sgld.build(lambda p, b: (0.0, {"x": np.zeros(3)}), lr=0.1)
    with pytest.raises(ValueError, match="gradient of x"):
        t.update(t.init({"x": np.ones(2)}), None)
    t = sgmcmc.sgld.build(lambda p, b: 0.0, lr=0.1)
    with pytest.raises(TypeError, match="tuple"):
        t.update(t.init({"x": np.ones(2)}), None)
    t = sgmcmc.sgld.build(lambda p, b: (0.0, np.zeros(2)), lr=0.1)
    with pytest.raises(TypeError, match="dict"):
        t.update(t.init({"x": np.ones(2)}), None)


def test_bad_params():
    t = sgmcmc.sgld.build(gaussian, lr=0.1)
    with pytest.raises(ValueError, match="not finite"):
        t.init({"x": np.array([np.nan, 1.0])})
    with pytest.raises(TypeError):
        t.init({"x": "abc"})
    with pytest.raises(ValueError):
        t.init(np.zeros(0))
    with pytest.raises(TypeError):
        sgmcmc.sghmc.build(gaussian, lr=0.1).update(t.init({"x": np.ones(2)}), None)
    with pytest.raises(ValueError):
        t.run(t.init({"x": np.ones(2)}), [], 10)


def test_run_batches_list_is_a_sequence_a_tuple_is_one_batch():
    seen = []

    def lp(p, batch):
        seen.append(batch)
        return -0.5 * p @ p, -p

    t = sgmcmc.sgld.build(lp, lr=0.01)
    s = t.init(np.zeros(2))
    a, b = np.zeros(3), np.ones(3)
    t.run(s, [a, b], 4)
    assert [x[0] for x in seen] == [0.0, 1.0, 0.0, 1.0]
    seen.clear()
    t.run(s, (a, b), 3)  # posteriors' (x, y) batch: the same one at every step
    assert len(seen) == 3 and all(isinstance(x, tuple) and x[1] is b for x in seen)
