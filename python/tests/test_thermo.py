import numpy as np
import pytest

import langevin
from langevin import thermo

A = np.array([[3.0, 2.5], [2.0, 4.0]])
D = 2.0 * np.eye(2)
S_REF = np.array([[0.5969, -0.3163], [-0.3163, 0.4082]])


def test_sample_shape_and_start():
    ts = np.linspace(0, 5, 51)
    x0 = np.array([1.0, -2.0])
    xs = thermo.sample(0, ts, x0, A, np.zeros(2), D)
    assert xs.shape == (51, 2)
    np.testing.assert_array_equal(xs[0], x0)
    np.testing.assert_array_equal(xs, thermo.sample(0, ts, x0, A, np.zeros(2), D))
    assert not np.array_equal(xs, thermo.sample(1, ts, x0, A, np.zeros(2), D))
    # a JAX-style key works too
    assert thermo.sample(np.array([0, 7], dtype=np.uint32), ts, x0, A, np.zeros(2), D).shape == (51, 2)


def test_stationary_covariance_reference():
    # DESIGN.md's exact OU scenario: S solves A S + S A^T = D.
    ts = np.arange(0, 20000.0, 0.5)
    b = np.array([1.0, -1.0])
    xs = thermo.sample(3, ts, b, A, b, D)[100:]
    np.testing.assert_allclose(xs.mean(0), b, atol=0.03)
    np.testing.assert_allclose(np.cov(xs.T), S_REF, atol=0.03)


def test_log_prob_matches_gaussian_transitions():
    a, b, d = 1.5, 0.3, 0.8
    ts = np.array([0.0, 0.1, 0.4, 1.0])
    xs = np.array([[0.0], [0.2], [-0.1], [0.5]])
    lp = thermo.log_prob(ts, xs, [[a]], [b], [[d]])
    ref = 0.0
    for k in range(1, len(ts)):
        h = ts[k] - ts[k - 1]
        m = b + np.exp(-a * h) * (xs[k - 1, 0] - b)
        v = d / (2 * a) * (1 - np.exp(-2 * a * h))
        ref += -0.5 * np.log(2 * np.pi * v) - 0.5 * (xs[k, 0] - m) ** 2 / v
    assert lp == pytest.approx(ref, rel=1e-10)


def test_thermo_bad_input():
    ts = np.linspace(0, 1, 5)
    with pytest.raises(ValueError):
        thermo.sample(0, ts, [0.0, 0.0], np.ones((2, 3)), np.zeros(2), D)
    with pytest.raises(ValueError):
        thermo.sample(0, ts, [0.0], A, np.zeros(2), D)
    with pytest.raises(ValueError):
        thermo.sample(0, ts[::-1], [0.0, 0.0], A, np.zeros(2), D)
    with pytest.raises(ValueError):
        thermo.sample(0, ts, [np.nan, 0.0], A, np.zeros(2), D)
    with pytest.raises(TypeError):
        thermo.sample("key", ts, [0.0, 0.0], A, np.zeros(2), D)
    with pytest.raises(ValueError):
        thermo.log_prob(ts, np.zeros((4, 2)), A, np.zeros(2), D)


SPD = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]])


def test_linalg():
    b = np.array([1.0, -2.0, 0.5])
    x, err = thermo.linalg.solve(SPD, b, seed=1, return_error=True)
    exact = np.linalg.solve(SPD, b)
    assert np.all(np.abs(x - exact) < 5 * err + 1e-3)
    np.testing.assert_allclose(thermo.linalg.solve(SPD, b, seed=1), x)
    np.testing.assert_allclose(thermo.linalg.inv(SPD, analog_time=4000), np.linalg.inv(SPD), atol=0.05)
    w, v = np.linalg.eigh(SPD / 4)
    np.testing.assert_allclose(thermo.linalg.expnegm(SPD / 4, analog_time=4000), (v * np.exp(-w)) @ v.T, atol=0.05)
    np.testing.assert_allclose(thermo.linalg.expm(-SPD / 4, analog_time=4000), (v * np.exp(-w)) @ v.T, atol=0.05)
    assert thermo.linalg.logdet(SPD, analog_time=4000) == pytest.approx(np.linalg.slogdet(SPD)[1], abs=0.1)


def test_linalg_bad_input():
    with pytest.raises(ValueError):
        thermo.linalg.solve(np.ones((2, 3)), [1.0, 2.0])
    with pytest.raises(ValueError):
        thermo.linalg.solve(np.array([[1.0, 0.0], [0.0, -1.0]]), [1.0, 2.0])  # not SPD
    with pytest.raises(ValueError):
        thermo.linalg.solve(SPD, [1.0, 2.0])  # wrong length
    with pytest.raises(ValueError):
        thermo.linalg.inv(SPD, analog_time=-1)
