import numpy as np
import pytest

import langevin
from langevin import laplace, vi

MU = np.array([1.0, -2.0, 0.5])
SD = np.array([0.5, 1.0, 2.0])


def gaussian(params, batch):
    d = (params["x"] - MU) / SD
    return -0.5 * d @ d, {"x": -d / SD}


def test_vi_diag_reaches_the_gaussian():
    # posteriors' VI check: Adam 1e-2, 2 samples, 1000 steps: mean and sd within 0.5.
    t = vi.diag.build(gaussian, lr=1e-2, n_samples=2)
    s = t.init({"x": np.zeros(3)}, seed=0)
    s, trace = t.run(s, None, 1000)
    np.testing.assert_allclose(s.params["x"], MU, atol=0.5)
    np.testing.assert_allclose(s.sd, SD, atol=0.5)
    assert np.isfinite(s.nelbo)
    # longer: closer
    s, _ = t.run(s, None, 4000)
    np.testing.assert_allclose(s.params["x"], MU, atol=0.1)
    np.testing.assert_allclose(s.sd, SD, rtol=0.15)


def test_vi_nelbo_zero_at_the_target():
    # q equal to a normalised Gaussian target: the NELBO is exactly 0 whatever the draw.
    t = vi.diag.build(gaussian, lr=1e-2)
    assert np.isnan(t.init({"x": MU.copy()}).nelbo)

    def one(params, batch):
        d = (params["x"] - 1.0) / 0.5
        return float(-0.5 * d @ d - 0.5 * np.log(2 * np.pi) - np.log(0.5)), {"x": -d / 0.5}

    t3 = vi.diag.build(one, lr=1e-12, n_samples=4, init_log_sds=float(np.log(0.5)))
    s3 = t3.update(t3.init({"x": np.array([1.0])}, seed=3), None)
    assert s3.nelbo == pytest.approx(0.0, abs=1e-10)


def test_laplace_dense_hessian_precision():
    t = laplace.dense_hessian.build(gaussian)
    s = t.init({"x": MU.copy()})
    s = t.update(s, None)
    np.testing.assert_allclose(s.prec, np.diag(1 / SD**2), atol=1e-4)
    np.testing.assert_array_equal(s.params["x"], MU)
    s = t.update(s, None)  # precisions add up over batches
    np.testing.assert_allclose(s.prec, 2 * np.diag(1 / SD**2), atol=1e-4)


def test_vi_laplace_errors():
    with pytest.raises(TypeError):
        vi.diag.build(None)
    with pytest.raises(ValueError):
        vi.diag.build(gaussian, n_samples=0)
    with pytest.raises(ValueError):
        laplace.dense_hessian.build(gaussian, rescale=-1.0)
    t = vi.diag.build(lambda p, b: (float("nan"), {"x": np.zeros(3)}))
    s = t.init({"x": np.zeros(3)})
    with pytest.raises(langevin.NonFiniteLogDensityError):
        t.update(s, None)
    assert s.step == 0
