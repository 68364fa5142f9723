//! End-to-end runs of the Gaussian methods (`fit --method vi|vi-dense|ivon|laplace-*|ekf|ekf-dense`)
//! and of `langevin compare`, with short settings.
//!
//! Correctness: on Bayesian linear regression with a known noise sd the
//! posterior is Gaussian, `N(P⁻¹ X̃ᵀ y / σ², P⁻¹)` with `P = X̃ᵀ X̃ / σ² + I / s²`
//! and `X̃ = [X, 1]` (the standardised rows `fit` uses). The Hessian and GGN
//! Laplace approximations at the MAP are then exact; diagonal VI's optimum has
//! the exact mean and the sds `1 / sqrt(Pⱼⱼ)`.

mod common;

use std::path::Path;

use common::{
    assert_png, conjugate_posterior, draws, fails, fit, floats, json, mean_sd, ok, path_str,
    predict, read, summary, tempdir,
};

const METHODS: [&str; 10] = [
    "vi",
    "vi-dense",
    "ivon",
    "laplace-diag-fisher",
    "laplace-dense-fisher",
    "laplace-diag-ggn",
    "laplace-dense-ggn",
    "laplace-hessian",
    "ekf",
    "ekf-dense",
];

/// Every Gaussian method on the default data: the files of a sampler run,
/// `gaussian.{kind, mean, sd}` in summary.json that the draws reproduce
/// within Monte Carlo error, and `predict` / `diagnose` on the output.
#[test]
fn every_gaussian_method_writes_a_run_that_predict_and_diagnose_read() {
    let tmp = tempdir();
    for (i, method) in METHODS.iter().enumerate() {
        let dir = tmp.path().join(method);
        let d = path_str(&dir);
        let mut args = vec![
            "fit", "--method", method, "--chains", "2", "--seed", "3", "--out", d,
        ];
        if method.starts_with("vi") || *method == "ivon" {
            args.extend(["--steps", "1500"]);
        }
        // Plots once is enough to check them.
        if i > 0 {
            args.push("--no-plots");
        }
        let out = ok(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bundled data set `iris_virginica`"), "{err}");
        let s = summary(&dir);
        let run = json(&dir.join("run.json"));
        assert_eq!(run["config"]["method"], *method);
        assert_eq!(s["config"]["method"], *method);
        let g = &s["gaussian"];
        let kind = if method.contains("dense") || *method == "laplace-hessian" {
            "dense"
        } else {
            "diag"
        };
        assert_eq!(g["kind"], kind, "{method}");
        let (mu, sd) = (floats(&g["mean"]), floats(&g["sd"]));
        assert_eq!(mu.len(), 5);
        assert!(
            sd.iter().all(|&s| s > 0.0 && s.is_finite()),
            "{method}: {sd:?}"
        );
        // 2 chains x 1000 independent draws of q: the draws' mean is within
        // 5 standard errors (sd / sqrt(2000)) of q's mean, their sd within
        // 5 standard errors (about sd / sqrt(2 · 2000)) of q's sd.
        let (cols, chains) = draws(&dir);
        assert_eq!(chains, 2);
        let n = cols[0].len() as f64;
        assert_eq!(n, 2000.0);
        let params = s["params"].as_array().unwrap();
        for j in 0..5 {
            let (m, s_) = mean_sd(&cols[j]);
            assert!(
                (m - mu[j]).abs() < 5.0 * sd[j] / n.sqrt(),
                "{method} {j}: {m} vs {}",
                mu[j]
            );
            assert!(
                (s_ / sd[j] - 1.0).abs() < 5.0 / (2.0 * n).sqrt(),
                "{method} {j}: sd {s_} vs {}",
                sd[j]
            );
            assert!((params[j]["mean"].as_f64().unwrap() - m).abs() < 1e-9);
            let rhat = params[j]["rhat"].as_f64().unwrap();
            assert!(
                rhat < 1.01,
                "{method} {j}: R-hat {rhat} of independent draws"
            );
        }
        // A sensible classifier (the samplers reach 0.97 on these 30 rows).
        let m = &s["metrics"];
        assert!(m["test_accuracy"].as_f64().unwrap() > 0.8, "{method}: {m}");
        for k in ["test_nll", "ece", "brier"] {
            assert!(m[k].as_f64().unwrap().is_finite(), "{method} {k}: {m}");
        }
        if i == 0 {
            for f in ["trace.png", "marginals.png", "reliability.png"] {
                assert_png(&dir.join(f));
            }
        }
        let out = ok(&["diagnose", "--run", d]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("petal_width"), "{text}");
        let preds = dir.join("preds.csv");
        let p = predict(d, "iris_virginica", &preds);
        assert_eq!(p.lines().count(), 151, "{method}");
        assert!(p.starts_with("row,predicted,"), "{method}");
    }
}

/// Laplace with the Hessian or the GGN at the MAP of a linear-Gaussian
/// posterior is the exact posterior; diagonal VI finds its mean and the
/// conditional sds `1 / sqrt(Pⱼⱼ)`.
#[test]
fn gaussian_methods_recover_the_conjugate_linear_regression_posterior() {
    let tmp = tempdir();
    let sigma = 0.7;
    let mut exact = None;
    for method in [
        "laplace-hessian",
        "laplace-dense-ggn",
        "laplace-diag-ggn",
        "vi",
        "ivon",
    ] {
        let dir = tmp.path().join(method);
        let s = fit(
            &dir,
            &[
                "--data",
                "diabetes",
                "--model",
                "linear",
                "--noise-sd",
                "0.7",
                "--test-fraction",
                "0",
                "--chains",
                "1",
                "--no-plots",
                "--quiet",
                "--method",
                method,
            ],
        );
        let run = json(&dir.join("run.json"));
        let (mu, cov) = exact
            .get_or_insert_with(|| conjugate_posterior(&run, sigma, 1.0))
            .clone();
        let p = mu.len();
        assert_eq!(p, 11);
        let g = &s["gaussian"];
        let (m, sd) = (floats(&g["mean"]), floats(&g["sd"]));
        for j in 0..p {
            let sd_exact = cov[j * p + j].sqrt();
            match method {
                // The MAP (L-BFGS to a batch-averaged gradient below 1e-9)
                // is the posterior mean to about 1e-7 posterior sds; the GGN
                // is exact and the Hessian by central differences of an
                // exactly quadratic log density is exact up to rounding.
                "laplace-hessian" | "laplace-dense-ggn" => {
                    assert!(
                        (m[j] - mu[j]).abs() < 1e-4 * sd_exact,
                        "{method} mean {j}: {} vs {}",
                        m[j],
                        mu[j]
                    );
                    assert!(
                        (sd[j] / sd_exact - 1.0).abs() < 1e-4,
                        "{method} sd {j}: {} vs {sd_exact}",
                        sd[j]
                    );
                }
                "laplace-diag-ggn" => {
                    assert!((m[j] - mu[j]).abs() < 1e-4 * sd_exact, "{method} mean {j}");
                    // A diagonal precision: the sd given the other parameters.
                    assert!(sd[j] <= sd_exact * (1.0 + 1e-9), "{method} sd {j}");
                }
                _ => {
                    // VI (defaults: 10 000 Adam steps, one sample per step,
                    // decayed to 1e-4): the optimum's mean is the exact mean,
                    // but along the collinear serum features (s1-s5, marginal
                    // sds up to 7x the conditional ones) it is weakly
                    // identified: measured errors up to 0.25 posterior sd,
                    // changing sign between 10 000 and 30 000 steps. The
                    // tolerance is twice that. Its sds are the conditional
                    // ones, below the marginal ones. IVON (10 000 steps,
                    // learning rate 0.1 to 1e-3) has the same target; its
                    // diagonal-Newton steps measured mean errors up to 0.04
                    // posterior sd and sds within 2.5% of 1/sqrt(P_jj); it
                    // gets VI's tolerances.
                    eprintln!(
                        "{method} mean {j}: error {:.3} posterior sd",
                        (m[j] - mu[j]) / sd_exact
                    );
                    assert!(
                        (m[j] - mu[j]).abs() < 0.5 * sd_exact,
                        "{method} mean {j}: {} vs {} (sd {sd_exact})",
                        m[j],
                        mu[j]
                    );
                    assert!(sd[j] < sd_exact * 1.1, "{method} sd {j}");
                }
            }
        }
        if method == "laplace-diag-ggn" || method == "vi" || method == "ivon" {
            // All target sd_j = 1 / sqrt(P_jj) (the GGN exactly, VI and IVON
            // at their optimum: IVON's Hessian estimate has the expectation
            // P_jj / N there).
            let prec_diag = exact_precision_diag(&dir, sigma);
            for j in 0..p {
                let want = 1.0 / prec_diag[j].sqrt();
                let tol = if method == "laplace-diag-ggn" {
                    1e-6
                } else {
                    0.1
                };
                eprintln!("{method} sd {j}: {:.4} of 1/sqrt(P_jj)", sd[j] / want);
                assert!(
                    (sd[j] / want - 1.0).abs() < tol,
                    "{method} sd {j}: {} vs {want}",
                    sd[j]
                );
            }
        }
    }
}

/// The diagonal of the exact posterior precision `X̃ᵀ X̃ / σ² + I` (prior sd 1).
fn exact_precision_diag(dir: &Path, sigma: f64) -> Vec<f64> {
    let run = json(&dir.join("run.json"));
    let ds = langevin_models::bundled::find("diabetes")
        .unwrap()
        .load(None)
        .unwrap();
    let d = ds.d();
    let mean = floats(&run["standardizer"]["mean"]);
    let sd = floats(&run["standardizer"]["sd"]);
    let mut diag = vec![1.0; d + 1];
    for row in ds.x.chunks_exact(d) {
        for j in 0..d {
            let x = (row[j] - mean[j]) / sd[j];
            diag[j] += x * x / (sigma * sigma);
        }
        diag[d] += 1.0 / (sigma * sigma);
    }
    diag
}

#[test]
fn dense_methods_refuse_large_models_and_options_are_checked() {
    let tmp = tempdir();
    let dir = tmp.path().join("big");
    let d = path_str(&dir);
    // 64 features, 10 classes, one hidden layer of 64: 4810 parameters.
    let err = fails(
        &[
            "fit",
            "--data",
            "digits",
            "--model",
            "mlp",
            "--hidden",
            "64",
            "--method",
            "laplace-dense-ggn",
            "--out",
            d,
        ],
        2,
    );
    assert!(err.contains("4810") && err.contains("2000"), "{err}");
    assert!(!dir.join("run.json").exists());
    for bad in [
        vec!["fit", "--method", "vi", "--friction", "1", "--out", d],
        vec!["fit", "--method", "ekf", "--step-size", "0.1", "--out", d],
        vec![
            "fit",
            "--method",
            "laplace-hessian",
            "--thin",
            "2",
            "--out",
            d,
        ],
        vec!["fit", "--method", "vi", "--steps", "0", "--out", d],
    ] {
        fails(&bad, 2);
    }
}

#[test]
fn compare_writes_one_row_per_method_and_names_unknown_methods() {
    let tmp = tempdir();
    let dir = tmp.path().join("cmp");
    let d = path_str(&dir);
    let out = ok(&[
        "compare",
        "--methods",
        "map,sghmc,vi,laplace-diag-ggn",
        "--steps",
        "2000",
        "--chains",
        "2",
        "--out",
        d,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("| method | test NLL | test accuracy | ECE | seconds |"),
        "{text}"
    );
    let csv = read(dir.join("compare.csv"));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "method,test_nll,test_accuracy,ece,seconds,status");
    assert_eq!(lines.len(), 5, "{csv}");
    for (line, m) in lines[1..]
        .iter()
        .zip(["map", "sghmc", "vi", "laplace-diag-ggn"])
    {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f[0], m);
        for v in &f[1..5] {
            assert!(v.parse::<f64>().unwrap().is_finite(), "{line}");
        }
        assert_eq!(f[5], "ok");
        assert!(dir.join(m).join("summary.json").is_file());
    }
    assert!(read(dir.join("compare.md")).contains("laplace-diag-ggn"));
    assert_png(&dir.join("compare.png"));

    let err = fails(&["compare", "--methods", "map,bogus", "--out", d], 2);
    assert!(err.contains("`bogus`"));
}
