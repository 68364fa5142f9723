import concurrent.futures
import json
import os
import subprocess

import arviz as az
import numpy as np
import pytest

import langevin
from conftest import cli_binary

FAST = dict(steps=600, burn_in=200)


@pytest.fixture(scope="module")
def cancer():
    return langevin.datasets.load("breast_cancer", return_names=True)


def test_datasets():
    assert "breast_cancer" in langevin.datasets.names()
    X, y = langevin.datasets.load("iris")
    assert X.shape == (150, 4) and y.shape == (150,)
    assert set(np.unique(y)) == {0.0, 1.0, 2.0}
    assert langevin.datasets.describe()["diabetes"]["task"] == "regression"
    with pytest.raises(ValueError, match="no bundled data set"):
        langevin.datasets.load("nope")


def test_fit_logistic_inferencedata(cancer, tmp_path):
    X, y, names, _ = cancer
    idata = langevin.fit(X, y, model="logistic", seed=1, chains=2, out=tmp_path / "run", **FAST)
    assert isinstance(idata, az.InferenceData)
    post = idata.posterior
    assert list(post.data_vars) == [f"x{j}" for j in range(30)] + ["intercept"]
    assert post["x0"].dims == ("chain", "draw")
    assert post.sizes["chain"] == 2 and post.sizes["draw"] > 10
    assert "step_size" in idata.sample_stats and "diverging" in idata.sample_stats
    lp = idata.sample_stats["lp"].values
    assert lp.shape == post["x0"].shape and np.all(np.isfinite(lp)) and np.all(lp < 0)
    # The log posterior is the model's: the MAP scores higher than the draws on average.
    m = langevin.fit(X, y, method="map", seed=1, chains=1, steps=600)
    assert m.sample_stats["lp"].values.max() >= lp.mean()
    attrs = post.attrs
    assert attrs["method"] and attrs["model"] == "logistic"
    assert isinstance(attrs["converged"], bool)
    assert 0.85 < attrs["test_accuracy"] <= 1.0
    assert attrs["convergence_reason"]
    s = az.summary(idata)
    assert len(s) == 31
    # The folder is a complete run of the program.
    assert (tmp_path / "run" / "summary.json").is_file()


def test_fit_verdict_is_the_programs(cancer, tmp_path):
    X, y, _, _ = cancer
    idata = langevin.fit(X, y, seed=2, out=tmp_path / "r", **FAST)
    summary = json.loads(idata.posterior.attrs["summary"])
    assert idata.posterior.attrs["converged"] == summary["converged"]
    assert idata.posterior.attrs["convergence_reason"] == summary["convergence"]["reason"]


@pytest.mark.parametrize("method", ["sgld", "sghmc", "sgnht", "baoa", "map", "vi", "laplace-diag-fisher"])
def test_fit_methods(method):
    X, y = langevin.datasets.load("iris_virginica")
    idata = langevin.fit(X, y, method=method, seed=0, chains=2, steps=400)
    assert idata.posterior.sizes["draw"] >= 1
    assert idata.posterior.attrs["method"] == method


def test_fit_linear_and_softmax():
    X, y = langevin.datasets.load("diabetes")
    idata = langevin.fit(X, y, model="linear", seed=0, chains=2, **FAST)
    assert "test_rmse" in idata.posterior.attrs or any("rmse" in k for k in idata.posterior.attrs)
    X, y = langevin.datasets.load("iris")
    idata = langevin.fit(X, y, model="softmax", seed=0, chains=2, **FAST)
    assert idata.posterior.attrs["model"] == "softmax"
    # indexed names become array variables: x0[0..2] -> x0 with a dim of 3
    assert idata.posterior["x0"].shape[2:] == (3,)
    idata = langevin.fit(X, y, model="mlp", hidden=[3], seed=0, chains=2, steps=300)
    post = idata.posterior
    assert post["layer0.weight"].shape[2:] == (4, 3) and post["layer1.bias"].shape[2:] == (3,)
    n = sum(int(np.prod(v.shape[2:])) for v in post.data_vars.values())
    assert n == 4 * 3 + 3 + 3 * 3 + 3
    assert len(az.summary(idata)) == n


def test_fit_same_seed_identical_and_array_like(cancer):
    X, y, _, _ = cancer

    class ArrayLike:
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a

    a = langevin.fit(X, y, seed=5, chains=2, **FAST)
    b = langevin.fit(ArrayLike(X), ArrayLike(y), seed=5, chains=2, **FAST)
    c = langevin.fit(X, y, seed=6, chains=2, **FAST)
    np.testing.assert_array_equal(a.posterior["x3"].values, b.posterior["x3"].values)
    assert not np.array_equal(a.posterior["x3"].values, c.posterior["x3"].values)


def test_fit_matches_the_cli(cancer, tmp_path):
    exe = cli_binary()
    if exe is None:
        pytest.skip("the langevin program is not built (cargo build -p langevin-cli)")
    X, y, names, target = cancer
    out = tmp_path / "cli"
    subprocess.run(
        [exe, "fit", "--data", "breast_cancer", "--seed", "3", "--chains", "2", "--steps", "600",
         "--burn-in", "200", "--quiet", "--no-plots", "--out", str(out)],
        check=True,
    )
    cli = langevin.load_run(out)
    py = langevin.fit(X, y, feature_names=names, target=target, seed=3, chains=2, **FAST)
    assert list(cli.posterior.data_vars) == list(py.posterior.data_vars)
    for v in cli.posterior.data_vars:
        np.testing.assert_array_equal(cli.posterior[v].values, py.posterior[v].values)
    assert cli.posterior.attrs["converged"] == py.posterior.attrs["converged"]
    assert cli.posterior.attrs["test_accuracy"] == py.posterior.attrs["test_accuracy"]
    # lp of the program's folder, computed again from the bundled set: the same.
    np.testing.assert_array_equal(cli.sample_stats["lp"].values, py.sample_stats["lp"].values)


def test_concurrent_fits(cancer):
    X, y, _, _ = cancer
    ref = langevin.fit(X, y, seed=11, chains=2, **FAST).posterior["x0"].values
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(langevin.fit, X, y, seed=11, chains=2, **FAST) for _ in range(3)]
        results = [f.result().posterior["x0"].values for f in futures]
    for r in results:
        np.testing.assert_array_equal(r, ref)


def test_fit_bad_input(cancer):
    X, y, _, _ = cancer
    with pytest.raises(ValueError, match="one value per row"):
        langevin.fit(X, y[:-1])
    with pytest.raises(ValueError, match="2-D"):
        langevin.fit(np.zeros((3, 4, 5)), np.zeros(3))
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        langevin.fit(Xn, y)
    with pytest.raises(TypeError):
        langevin.fit("not an array", y)
    with pytest.raises(ValueError, match="model"):
        langevin.fit(X, y, model="transformer")
    with pytest.raises(ValueError):
        langevin.fit(X, y, method="nope")
    with pytest.raises(ValueError, match="step-size"):
        langevin.fit(X, y, step_size=-1.0)
    with pytest.raises(ValueError, match="feature_names"):
        langevin.fit(X, y, feature_names=["a"])


def test_load_run_errors(tmp_path):
    with pytest.raises(ValueError, match="no such run folder"):
        langevin.load_run(tmp_path / "missing")
    (tmp_path / "half").mkdir()
    with pytest.raises(ValueError, match="summary.json"):
        langevin.load_run(tmp_path / "half")


def test_load_run_of_fit(cancer, tmp_path):
    X, y, _, _ = cancer
    a = langevin.fit(X, y, seed=4, chains=2, out=tmp_path / "r", **FAST)
    b = langevin.load_run(tmp_path / "r")
    np.testing.assert_array_equal(a.posterior["x1"].values, b.posterior["x1"].values)
    assert os.path.isfile(os.path.join(b.posterior.attrs["run_dir"], "samples.csv"))


def test_grouping_of_indexed_names():
    from langevin._fit import _group

    draws = np.arange(2 * 3 * 5, dtype=float).reshape(2, 3, 5)
    g = _group(["w[0,0]", "w[0,1]", "w[1,0]", "w[1,1]", "b"], draws)
    assert list(g) == ["w", "b"] and g["w"].shape == (2, 3, 2, 2)
    np.testing.assert_array_equal(g["w"][:, :, 1, 0], draws[:, :, 2])
    g = _group(["a[0]", "a[2]", "c[0]", "c[1]", "d"], draws)  # a is incomplete
    assert list(g) == ["a[0]", "a[2]", "c", "d"]


def test_fit_folder_is_self_contained(cancer, tmp_path):
    X, y, _, _ = cancer
    a = langevin.fit(X, y, seed=8, chains=2, out=tmp_path / "r", **FAST)
    assert (tmp_path / "r" / "data.csv").is_file()
    b = langevin.load_run(tmp_path / "r")  # lp computed again from data.csv
    np.testing.assert_array_equal(a.sample_stats["lp"].values, b.sample_stats["lp"].values)
    exe = cli_binary()
    if exe is not None:  # the program predicts from it
        out = subprocess.run([exe, "predict", "--run", str(tmp_path / "r"), "--data", str(tmp_path / "r" / "data.csv")],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_fit_without_out_leaves_no_folder(cancer, tmp_path, monkeypatch):
    # Without `out` the run happens in a temporary folder, removed afterwards,
    # also when the run fails; the results are in memory.
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    X, y, _, _ = cancer
    idata = langevin.fit(X, y, seed=3, chains=2, **FAST)
    assert idata.posterior.sizes["draw"] > 0 and "lp" in idata.sample_stats
    assert "run_dir" not in idata.posterior.attrs and "run_dir" not in idata.attrs
    with pytest.raises(ValueError, match="step-size"):
        langevin.fit(X, y, step_size=-1.0)
    assert os.listdir(tmp_path) == []
