//! Evidence tuning of the prior (`fit --marglik`) and the linearised (GLM)
//! predictive (`gaussian.safetensors`, `predict --predictive glm`).
//!
//! References:
//! * a linear-Gaussian model (diabetes, `--model linear --noise-sd 0.7`, every row).
//!   `--marglik` is post hoc (as laplace-torch's): it maximises the Laplace evidence
//!   `log p(y | θ*) − δ/2 ‖θ*‖² + p/2 ln δ − ½ ln det(XᵀX/σ² + δ I)` at the MAP θ* of the
//!   fixed prior. The test computes θ* in closed form, maximises that function by
//!   golden-section search in `ln δ` (to 1e-10), and asks for δ* to 1e-6 relative and
//!   the log evidence to 1e-6. At the prior whose precision maximises the *exact*
//!   evidence `log N(y; 0, σ² I + X Xᵀ / δ)` (found the same way), θ* is the mode for
//!   that δ, the Laplace evidence is exact and δ* must return that very precision (a
//!   fixed point of the type-II maximum likelihood); the stored covariance must be
//!   `(XᵀX/σ² + δ* I)⁻¹`.
//! * the GLM predictive of a linear model is exact: the predictive of row x is
//!   `N(x θ*, x Σ xᵀ + σ²)`. `predict` estimates the epistemic part `v = x Σ xᵀ` by
//!   S = 4000 Monte Carlo draws per row: the mean is within `5 √(v/S)` and the variance
//!   within `5 v √(2/S)` (5 standard errors; over 442 rows a false alarm has probability
//!   below 1e-3), in standardised units.

mod common;

use common::{
    diabetes_design, expect, fails, fit, floats, json, langevin, ok, path_str, read, tempdir,
};
use langevin_cli::glm::{GaussianCov, StoredGaussian};

const SIGMA: f64 = 0.7;

/// Lower Cholesky factor of a symmetric positive definite matrix.
fn cholesky(a: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let p = a.len();
    let mut l = vec![vec![0.0; p]; p];
    for i in 0..p {
        for j in 0..=i {
            let s = a[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            l[i][j] = if i == j { s.sqrt() } else { s / l[j][j] };
        }
    }
    l
}

/// `A = XᵀX/σ² + δ I`, `b = Xᵀy/σ²`.
fn system(x: &[Vec<f64>], y: &[f64], delta: f64) -> (Vec<Vec<f64>>, Vec<f64>) {
    let p = x[0].len();
    let mut a = vec![vec![0.0; p]; p];
    let mut b = vec![0.0; p];
    for (r, yi) in x.iter().zip(y) {
        for i in 0..p {
            b[i] += r[i] * yi / (SIGMA * SIGMA);
            for j in 0..p {
                a[i][j] += r[i] * r[j] / (SIGMA * SIGMA);
            }
        }
    }
    for (i, row) in a.iter_mut().enumerate() {
        row[i] += delta;
    }
    (a, b)
}

/// `A⁻¹ v` from the Cholesky factor.
fn solve(l: &[Vec<f64>], v: &[f64]) -> Vec<f64> {
    let p = l.len();
    let mut z = vec![0.0; p];
    for i in 0..p {
        z[i] = (v[i] - (0..i).map(|k| l[i][k] * z[k]).sum::<f64>()) / l[i][i];
    }
    let mut w = vec![0.0; p];
    for i in (0..p).rev() {
        w[i] = (z[i] - (i + 1..p).map(|k| l[k][i] * w[k]).sum::<f64>()) / l[i][i];
    }
    w
}

/// `log N(y; 0, σ² I + X Xᵀ / δ)` through `A` (Woodbury and the determinant lemma).
fn log_evidence(x: &[Vec<f64>], y: &[f64], delta: f64) -> f64 {
    let (n, p) = (y.len() as f64, x[0].len() as f64);
    let (a, b) = system(x, y, delta);
    let l = cholesky(&a);
    let logdet_a: f64 = 2.0 * l.iter().enumerate().map(|(i, r)| r[i].ln()).sum::<f64>();
    let w = solve(&l, &b);
    let yy: f64 = y.iter().map(|v| v * v).sum();
    let quad = yy / (SIGMA * SIGMA) - b.iter().zip(&w).map(|(u, v)| u * v).sum::<f64>();
    -0.5 * n * (2.0 * std::f64::consts::PI * SIGMA * SIGMA).ln() - 0.5 * quad + 0.5 * p * delta.ln()
        - 0.5 * logdet_a
}

fn linear_laplace(dir: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    fit(
        dir,
        &[
            &[
                "--data",
                "diabetes",
                "--model",
                "linear",
                "--noise-sd",
                "0.7",
                "--test-fraction",
                "0",
                "--method",
                "laplace-dense-ggn",
                "--no-plots",
                "--quiet",
            ],
            extra,
        ]
        .concat(),
    )
}

/// The post-hoc Laplace evidence at the MAP of the prior precision `delta0`.
fn post_hoc_evidence(x: &[Vec<f64>], y: &[f64], delta0: f64, delta: f64) -> f64 {
    let (n, p) = (y.len() as f64, x[0].len() as f64);
    let (a0, b) = system(x, y, delta0);
    let theta = solve(&cholesky(&a0), &b);
    let rss: f64 = x
        .iter()
        .zip(y)
        .map(|(r, yi)| (yi - r.iter().zip(&theta).map(|(u, v)| u * v).sum::<f64>()).powi(2))
        .sum();
    let log_lik =
        -0.5 * n * (2.0 * std::f64::consts::PI * SIGMA * SIGMA).ln() - rss / (2.0 * SIGMA * SIGMA);
    let (a, _) = system(x, y, delta);
    let l = cholesky(&a);
    let logdet_a: f64 = 2.0 * l.iter().enumerate().map(|(i, r)| r[i].ln()).sum::<f64>();
    let tt: f64 = theta.iter().map(|t| t * t).sum();
    log_lik - 0.5 * delta * tt + 0.5 * p * delta.ln() - 0.5 * logdet_a
}

/// The maximiser of `f(ln δ)` by golden-section search on [-12, 12].
fn argmax_delta(f: impl Fn(f64) -> f64) -> f64 {
    let (mut lo, mut hi) = (-12.0f64, 12.0f64);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    while hi - lo > 1e-10 {
        let (a, b) = (hi - g * (hi - lo), lo + g * (hi - lo));
        if f(a) > f(b) {
            hi = b;
        } else {
            lo = a;
        }
    }
    (0.5 * (lo + hi)).exp()
}

fn marglik_of(s: &serde_json::Value) -> (f64, f64) {
    let m = &s["gaussian"]["marglik"];
    (
        m["prior_precision"].as_f64().unwrap(),
        m["log_evidence"].as_f64().unwrap(),
    )
}

#[test]
fn marglik_maximises_the_laplace_evidence_and_finds_the_exact_fixed_point() {
    let tmp = tempdir();
    // Post hoc at prior sd 1.
    let dir = tmp.path().join("run");
    let s = linear_laplace(&dir, &["--marglik"]);
    let run = json(&dir.join("run.json"));
    let (x, y) = diabetes_design(&run);
    let delta_ref = argmax_delta(|t| post_hoc_evidence(&x, &y, 1.0, t.exp()));
    let (delta, le) = marglik_of(&s);
    assert!(
        (delta / delta_ref - 1.0).abs() < 1e-6,
        "δ* {delta} vs the post-hoc evidence's maximiser {delta_ref}"
    );
    let le_ref = post_hoc_evidence(&x, &y, 1.0, delta);
    assert!((le - le_ref).abs() < 1e-6, "log evidence {le} vs {le_ref}");
    assert_eq!(
        s["gaussian"]["marglik"]["fixed_prior_precision"].as_f64(),
        Some(1.0)
    );
    // At the exact evidence's maximiser the post-hoc tuning is a fixed point.
    let delta_exact = argmax_delta(|t| log_evidence(&x, &y, t.exp()));
    let prior_sd = format!("{}", delta_exact.sqrt().recip());
    let dir2 = tmp.path().join("fixed-point");
    let s2 = linear_laplace(&dir2, &["--marglik", "--prior-sd", &prior_sd]);
    let (delta2, le2) = marglik_of(&s2);
    assert!(
        (delta2 / delta_exact - 1.0).abs() < 1e-6,
        "δ* {delta2} vs the exact evidence's maximiser {delta_exact}"
    );
    let exact = log_evidence(&x, &y, delta2);
    assert!(
        (le2 - exact).abs() < 1e-6,
        "log evidence {le2} vs exact {exact}"
    );
    // The stored covariance is (XᵀX/σ² + δ* I)⁻¹.
    let g = StoredGaussian::read(&dir, x[0].len()).unwrap().unwrap();
    let GaussianCov::Dense(cov) = &g.cov else {
        panic!("a dense Laplace run stores a dense covariance");
    };
    let (a, _) = system(&x, &y, delta);
    let l = cholesky(&a);
    let p = x[0].len();
    let scale = cov.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for j in 0..p {
        let mut e = vec![0.0; p];
        e[j] = 1.0;
        let col = solve(&l, &e);
        for i in 0..p {
            assert!(
                (cov[i * p + j] - col[i]).abs() < 1e-9 * scale,
                "cov[{i},{j}] {} vs {}",
                cov[i * p + j],
                col[i]
            );
        }
    }
    // Without --marglik nothing is tuned.
    let dir3 = tmp.path().join("fixed");
    let s3 = linear_laplace(&dir3, &[]);
    assert!(s3["gaussian"].get("marglik").is_none());
}

#[test]
fn glm_predictive_of_a_linear_model_is_the_exact_predictive() {
    let tmp = tempdir();
    let dir = tmp.path().join("run");
    linear_laplace(&dir, &[]);
    let run = json(&dir.join("run.json"));
    let (x, _) = diabetes_design(&run);
    let ts = floats(&run["target_scaler"]);
    let g = StoredGaussian::read(&dir, x[0].len()).unwrap().unwrap();
    let GaussianCov::Dense(cov) = &g.cov else {
        panic!("dense expected");
    };
    let p = x[0].len();
    let out = tmp.path().join("p.csv");
    // `auto` is glm for a Laplace run.
    let o = ok(&[
        "predict",
        "--run",
        path_str(&dir),
        "--data",
        "diabetes",
        "--max-draws",
        "4000",
        "--out",
        path_str(&out),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("linearised (GLM)"), "{err}");
    let text = read(&out);
    let s = 4000.0f64;
    for (i, line) in text.lines().skip(1).enumerate() {
        let cols: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
        let (mean, sd) = ((cols[1] - ts[0]) / ts[1], cols[2] / ts[1]);
        let xi = &x[i];
        let m_exact: f64 = xi.iter().zip(&g.mean).map(|(a, b)| a * b).sum();
        let v: f64 = (0..p)
            .map(|a| (0..p).map(|b| xi[a] * cov[a * p + b] * xi[b]).sum::<f64>())
            .sum();
        assert!(
            (mean - m_exact).abs() < 5.0 * (v / s).sqrt(),
            "row {i}: mean {mean} vs {m_exact} (v {v})"
        );
        let var = sd * sd;
        assert!(
            (var - v - SIGMA * SIGMA).abs() < 5.0 * v * (2.0 / s).sqrt(),
            "row {i}: variance {var} vs {}",
            v + SIGMA * SIGMA
        );
        // aleatoric_sd is the noise.
        assert!((cols[3] / ts[1] - SIGMA).abs() < 1e-12, "{line}");
    }
}

#[test]
fn glm_predictive_for_classifiers_and_vi() {
    let tmp = tempdir();
    // Logistic regression, diagonal GGN Laplace, tuned prior.
    let dir = tmp.path().join("laplace");
    let s = fit(
        &dir,
        &[
            "--method",
            "laplace-diag-ggn",
            "--marglik",
            "--no-plots",
            "--quiet",
        ],
    );
    let glm = &s["glm"];
    assert!(glm["test_accuracy"].as_f64().unwrap() >= 0.9, "{glm}");
    let nll = glm["test_nll"].as_f64().unwrap();
    assert!(nll.is_finite() && nll < 0.4, "{glm}");
    let delta = s["gaussian"]["marglik"]["prior_precision"]
        .as_f64()
        .unwrap();
    assert!(delta.is_finite() && delta > 0.0);
    // A VI run stores its diagonal Gaussian; glm on request, samples by default.
    let vi = tmp.path().join("vi");
    fit(&vi, &["--method", "vi", "--no-plots", "--quiet"]);
    let g = StoredGaussian::read(&vi, 5).unwrap().unwrap();
    assert!(matches!(g.cov, GaussianCov::Diag(ref v) if v.iter().all(|v| *v > 0.0)));
    for (mode, needle) in [("glm", "linearised (GLM)"), ("auto", "posterior draws")] {
        let out = tmp.path().join(format!("{mode}.csv"));
        let o = ok(&[
            "predict",
            "--run",
            path_str(&vi),
            "--data",
            "iris_virginica",
            "--predictive",
            mode,
            "--out",
            path_str(&out),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{mode}: {err}");
        let acc: f64 = err
            .split("accuracy ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(acc >= 0.9, "{mode}: {err}");
    }
}

#[test]
fn marglik_and_glm_refuse_what_they_cannot_do() {
    let tmp = tempdir();
    expect(
        &["fit", "--method", "sgld", "--marglik", "--steps", "10"],
        2,
        &["--marglik", "laplace"],
    );
    let dir = tmp.path().join("map");
    fit(&dir, &["--method", "map", "--no-plots", "--quiet"]);
    let err = fails(
        &[
            "predict",
            "--run",
            path_str(&dir),
            "--data",
            "iris_virginica",
            "--predictive",
            "glm",
        ],
        2,
    );
    assert!(err.contains("gaussian.safetensors"), "{err}");
    // A corrupt file is bad input, not a panic.
    let lap = tmp.path().join("lap");
    fit(
        &lap,
        &["--method", "laplace-diag-ggn", "--no-plots", "--quiet"],
    );
    std::fs::write(lap.join("gaussian.safetensors"), b"not safetensors").unwrap();
    let o = langevin(&[
        "predict",
        "--run",
        path_str(&lap),
        "--data",
        "iris_virginica",
    ]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}

/// Last-layer Laplace on the digits MLP: the network is linear in its last layer, so
/// the GLM predictive is exact there and must agree with pushing the draws through
/// the network. Per row and class, both are averages of draws of a probability whose
/// variance is at most p(1 − p) (1000 Monte Carlo draws for glm, the run's S draws of
/// q, S = min(1000, chains × draws per chain), for samples): they agree within
/// `5 √(p(1 − p) (1/1000 + 1/S)) + 1e-3` (5 standard errors of the difference).
#[test]
fn last_layer_laplace_glm_equals_the_sampled_predictive() {
    let tmp = tempdir();
    let dir = tmp.path().join("ll");
    let s = fit(
        &dir,
        &[
            "--data",
            "digits",
            "--model",
            "mlp",
            "--steps",
            "1500",
            "--method",
            "laplace-dense-ggn",
            "--last-layer",
            "--marglik",
            "--no-plots",
            "--quiet",
        ],
    );
    assert_eq!(
        s["gaussian"]["subset"],
        serde_json::json!(["layer2.weight", "layer2.bias"])
    );
    // The verdict is on the last layer (the other parameters are constant).
    let reason = s["convergence"]["reason"].as_str().unwrap_or("");
    assert!(!reason.contains("layer0"), "{reason}");
    let d = json(&dir.join("run.json"))["param_names"]
        .as_array()
        .unwrap()
        .len();
    let g = StoredGaussian::read(&dir, d).unwrap().unwrap();
    assert_eq!(g.subset.as_ref().map(|s| s.len()), Some(64 * 10 + 10));
    assert!(matches!(g.cov, GaussianCov::Dense(ref c) if c.len() == 650 * 650));
    assert!(
        s["glm"]["test_accuracy"].as_f64().unwrap() >= 0.9,
        "{}",
        s["glm"]
    );
    let probs = |mode: &str| -> Vec<Vec<f64>> {
        let out = tmp.path().join(format!("{mode}.csv"));
        ok(&[
            "predict",
            "--run",
            path_str(&dir),
            "--data",
            "digits",
            "--predictive",
            mode,
            "--out",
            path_str(&out),
        ]);
        read(&out)
            .lines()
            .skip(1)
            .map(|l| {
                l.split(',')
                    .skip(2)
                    .take(10)
                    .map(|v| v.parse().unwrap())
                    .collect()
            })
            .collect()
    };
    let (a, b) = (probs("glm"), probs("samples"));
    let total = s["draws_per_chain"]
        .as_array()
        .map(|v| v.iter().map(|x| x.as_u64().unwrap()).sum::<u64>())
        .or_else(|| s["draws_per_chain"].as_u64().map(|v| 4 * v))
        .unwrap();
    let s_draws = total.min(1000) as f64;
    assert_eq!(a.len(), 1797);
    for (i, (ra, rb)) in a.iter().zip(&b).enumerate() {
        for (pa, pb) in ra.iter().zip(rb) {
            let p = 0.5 * (pa + pb);
            let tol = 5.0 * (p * (1.0 - p) * (1.0 / 1000.0 + 1.0 / s_draws)).sqrt() + 1e-3;
            assert!(
                (pa - pb).abs() < tol,
                "row {i}: glm {ra:?} vs samples {rb:?}"
            );
        }
    }
}

/// A KFAC Laplace run stores its Kronecker factors (`gaussian-kron.json`) and its GLM
/// predictive applies the covariance through them. For one Gaussian linear layer KFAC
/// is the exact GGN, so with the same seed (the same Monte Carlo stream) the predictions
/// must equal the dense GGN run's to rounding (1e-6 relative).
#[test]
fn kfac_glm_predictive_equals_the_dense_one_where_kfac_is_exact() {
    let tmp = tempdir();
    let run = |method: &str| {
        let dir = tmp.path().join(method);
        fit(
            &dir,
            &[
                "--data",
                "diabetes",
                "--model",
                "linear",
                "--noise-sd",
                "0.7",
                "--method",
                method,
                "--no-plots",
                "--quiet",
            ],
        );
        let out = tmp.path().join(format!("{method}.csv"));
        ok(&[
            "predict",
            "--run",
            path_str(&dir),
            "--data",
            "diabetes",
            "--out",
            path_str(&out),
        ]);
        (dir, read(&out))
    };
    let (kdir, k) = run("laplace-kfac");
    let (_, d) = run("laplace-dense-ggn");
    assert!(kdir.join("gaussian-kron.json").is_file());
    assert_eq!(k.lines().count(), d.lines().count());
    for (lk, ld) in k.lines().zip(d.lines()).skip(1) {
        for (a, b) in lk.split(',').zip(ld.split(',')) {
            let (a, b): (f64, f64) = (a.parse().unwrap(), b.parse().unwrap());
            assert!(
                (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0),
                "{lk} vs {ld}"
            );
        }
    }
}

/// `--marglik-noise` on the linear-Gaussian model: MacKay's updates with the exact mode
/// recomputed at every step (`θ = A⁻¹ Xᵀy/σ²`, `γ = p − δ tr A⁻¹`, `δ = γ/‖θ‖²`,
/// `σ² = ‖y − Xθ‖²/(n − γ)`) converge to the maximiser of the exact evidence in (δ, σ).
/// A run started at that prior and noise has its MAP at the exact mode, so its post-hoc
/// tuning must return the same (δ, σ) to 1e-6, write σ into run.json, and report it.
#[test]
fn marglik_noise_returns_the_exact_type_ii_maximum_likelihood_fixed_point() {
    let tmp = tempdir();
    // Any run gives the standardisation of all rows.
    let probe = tmp.path().join("probe");
    linear_laplace(&probe, &[]);
    let (x, y) = diabetes_design(&json(&probe.join("run.json")));
    let p = x[0].len();
    let n = y.len() as f64;
    let (mut delta, mut s2) = (1.0f64, 0.5f64);
    for _ in 0..2000 {
        let sigma2 = s2;
        let mut a = vec![vec![0.0; p]; p];
        let mut b = vec![0.0; p];
        for (r, yi) in x.iter().zip(&y) {
            for i in 0..p {
                b[i] += r[i] * yi / sigma2;
                for j in 0..p {
                    a[i][j] += r[i] * r[j] / sigma2;
                }
            }
        }
        for (i, row) in a.iter_mut().enumerate() {
            row[i] += delta;
        }
        let l = cholesky(&a);
        let theta = solve(&l, &b);
        let tr: f64 = (0..p)
            .map(|j| {
                let mut e = vec![0.0; p];
                e[j] = 1.0;
                solve(&l, &e)[j]
            })
            .sum();
        let gamma = p as f64 - delta * tr;
        let tt: f64 = theta.iter().map(|t| t * t).sum();
        let rss: f64 = x
            .iter()
            .zip(&y)
            .map(|(r, yi)| (yi - r.iter().zip(&theta).map(|(u, v)| u * v).sum::<f64>()).powi(2))
            .sum();
        delta = gamma / tt;
        s2 = rss / (n - gamma);
    }
    let sigma = s2.sqrt();
    let dir = tmp.path().join("fixed-point");
    let prior_sd = format!("{}", delta.sqrt().recip());
    let noise = format!("{sigma}");
    let s = fit(
        &dir,
        &[
            "--data",
            "diabetes",
            "--model",
            "linear",
            "--noise-sd",
            &noise,
            "--prior-sd",
            &prior_sd,
            "--test-fraction",
            "0",
            "--method",
            "laplace-dense-ggn",
            "--marglik",
            "--marglik-noise",
            "--no-plots",
            "--quiet",
        ],
    );
    let m = &s["gaussian"]["marglik"];
    let (d2, sd2) = (
        m["prior_precision"].as_f64().unwrap(),
        m["noise_sd"].as_f64().unwrap(),
    );
    assert!((d2 / delta - 1.0).abs() < 1e-6, "δ* {d2} vs {delta}");
    assert!((sd2 / sigma - 1.0).abs() < 1e-6, "σ* {sd2} vs {sigma}");
    let run = json(&dir.join("run.json"));
    let stored = run["model"]["noise"]["fixed"].as_f64().unwrap();
    assert!(
        (stored - sd2).abs() < 1e-12,
        "run.json noise {stored} vs {sd2}"
    );
    // The option is refused where it cannot apply.
    expect(
        &[
            "fit",
            "--method",
            "laplace-diag-ggn",
            "--marglik",
            "--marglik-noise",
        ],
        2,
        &["--marglik-noise", "classification"],
    );
    expect(
        &[
            "fit",
            "--data",
            "diabetes",
            "--method",
            "laplace-diag-fisher",
            "--noise-sd",
            "0.7",
            "--marglik",
            "--marglik-noise",
        ],
        2,
        &["--marglik-noise", "GGN"],
    );
}
