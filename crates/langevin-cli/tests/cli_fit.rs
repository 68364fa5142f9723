//! End-to-end runs of `langevin fit`, `predict` and `diagnose` (short runs).

mod common;

use common::{
    assert_png, fit, header, ok, path_str, predict, sample_rows, summary, tempdir, write,
};

#[test]
fn default_fit_runs_on_bundled_data_and_writes_everything() {
    let tmp = tempdir();
    let dir = tmp.path().join("run");
    let d = path_str(&dir);
    let out = ok(&["fit", "--steps", "3000", "--out", d]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bundled data set `iris_virginica`"), "{err}");
    assert_eq!(
        header(&dir),
        "chain,draw,sepal_length,sepal_width,petal_length,petal_width,intercept"
    );
    let s = summary(&dir);
    let params = s["params"].as_array().unwrap();
    assert_eq!(params.len(), 5);
    for p in params {
        for k in ["mean", "sd", "ess_bulk", "ess_tail", "rhat"] {
            assert!(p[k].as_f64().unwrap().is_finite(), "{k}: {p}");
        }
    }
    let m = &s["metrics"];
    for k in ["test_nll", "test_accuracy", "ece", "brier"] {
        assert!(m[k].as_f64().unwrap().is_finite(), "{k}: {m}");
    }
    // A sensible classifier on this easy task.
    assert!(m["test_accuracy"].as_f64().unwrap() > 0.8, "{m}");
    assert_eq!(s["config"]["chains"], 4);
    assert_eq!(s["config"]["method"], "baoa");
    assert!(s["seconds"].as_f64().unwrap() > 0.0);
    for f in ["trace.png", "marginals.png", "reliability.png"] {
        assert_png(&dir.join(f));
    }
    // 4 chains x (3000 - 750 burn-in) kept draws, thinned to at most 1000 per chain.
    assert_eq!(sample_rows(&dir), 4 * 750);

    // diagnose reads it back and prints the table.
    let out = ok(&["diagnose", "--run", d]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("petal_width") && text.contains("ess_bulk"),
        "{text}"
    );

    // predict: probabilities and an uncertainty decomposition per row.
    let preds = tmp.path().join("preds.csv");
    let text = predict(d, "iris_virginica", &preds);
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "row,predicted,prob_0,prob_1,total_uncertainty,aleatoric_uncertainty,epistemic_uncertainty"
    );
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 150);
    for r in &rows {
        assert!((r[2] + r[3] - 1.0).abs() < 1e-9);
        assert!(r[6] >= 0.0 && r[5] >= 0.0);
        assert!((r[4] - r[5] - r[6]).abs() < 1e-9);
    }
}

#[test]
fn same_seed_same_bytes_whatever_the_threads_other_seed_other_draws() {
    let tmp = tempdir();
    let run = |name: &str, seed: &str, threads: &str| {
        let dir = tmp.path().join(name);
        fit(
            &dir,
            &[
                "--steps",
                "3000",
                "--thin",
                "7",
                "--chains",
                "5",
                "--threads",
                threads,
                "--no-plots",
                "--quiet",
                "--seed",
                seed,
            ],
        );
        std::fs::read(dir.join("samples.csv")).unwrap()
    };
    let a = run("a", "5", "1");
    let b = run("b", "5", "3");
    let c = run("c", "6", "2");
    assert!(a == b, "samples.csv depends on the number of threads");
    assert!(a != c);
}

#[test]
fn linear_regression_names_noise_and_reports_rmse() {
    let tmp = tempdir();
    let dir = tmp.path().join("lin");
    let s = fit(
        &dir,
        &[
            "--data",
            "diabetes",
            "--steps",
            "2000",
            "--quiet",
            "--no-plots",
        ],
    );
    assert_eq!(
        header(&dir),
        "chain,draw,age,sex,bmi,bp,s1,s2,s3,s4,s5,s6,intercept,log_noise_sd"
    );
    assert_eq!(s["config"]["model"], "linear");
    let rmse = s["metrics"]["test_rmse"].as_f64().unwrap();
    // The target's sd is about 77; a linear model gets about 55.
    assert!(rmse > 30.0 && rmse < 70.0, "rmse {rmse}");
    let preds = tmp.path().join("p.csv");
    let text = predict(path_str(&dir), "diabetes", &preds);
    assert!(text.starts_with("row,mean,sd,aleatoric_sd,epistemic_sd\n"));
}

#[test]
fn softmax_map_and_mlp_on_bundled_sets() {
    let tmp = tempdir();
    // softmax on iris fitted on every row: metrics on the training rows.
    let s = fit(
        &tmp.path().join("sm"),
        &[
            "--data",
            "iris",
            "--test-fraction",
            "0",
            "--steps",
            "1000",
            "--quiet",
            "--no-plots",
        ],
    );
    assert_eq!(s["config"]["model"], "softmax");
    assert!(s["metrics"]["train_accuracy"].as_f64().unwrap() > 0.85);
    assert!(s["metrics"]["test_nll"].is_null());
    assert_eq!(s["params"].as_array().unwrap().len(), 4 * 3 + 3);
    // MAP: one point, same metrics.
    let s = fit(
        &tmp.path().join("map"),
        &[
            "--data", "wine", "--method", "map", "--steps", "500", "--quiet",
        ],
    );
    assert_eq!(s["config"]["temperature"], 0.0);
    assert!(s["metrics"]["test_accuracy"].as_f64().unwrap() > 0.85);
    // MLP classifier on digits, minibatches.
    let s = fit(
        &tmp.path().join("mlp"),
        &[
            "--data",
            "digits",
            "--model",
            "mlp",
            "--hidden",
            "16",
            "--steps",
            "300",
            "--batch-size",
            "64",
            "--chains",
            "2",
            "--quiet",
            "--no-plots",
        ],
    );
    assert_eq!(
        s["params"].as_array().unwrap().len(),
        64 * 16 + 16 + 16 * 10 + 10
    );
    assert!(s["metrics"]["test_accuracy"].as_f64().unwrap() > 0.5);
    // MLP regressor.
    let s = fit(
        &tmp.path().join("mlpr"),
        &[
            "--data",
            "diabetes",
            "--model",
            "mlp",
            "--hidden",
            "8",
            "--steps",
            "300",
            "--chains",
            "1",
            "--quiet",
            "--no-plots",
        ],
    );
    assert!(s["metrics"]["test_rmse"].as_f64().unwrap().is_finite());
    // Every sampler runs.
    for method in ["sgld", "sgnht", "baoa"] {
        let s = fit(
            &tmp.path().join(method),
            &[
                "--method",
                method,
                "--steps",
                "500",
                "--chains",
                "2",
                "--quiet",
                "--no-plots",
            ],
        );
        assert!(s["metrics"]["test_nll"].as_f64().unwrap().is_finite());
    }
}

#[test]
fn user_csv_with_named_target() {
    let tmp = tempdir();
    let mut text = String::from("x1,label,x2\n");
    for i in 0..60 {
        let a = (i as f64 * 0.37).sin();
        let b = (i as f64 * 0.91).cos();
        text += &format!("{a},{},{b}\n", u8::from(a + 0.5 * b > 0.0));
    }
    let csv = write(tmp.path(), "mine.csv", text);
    let dir = tmp.path().join("run");
    let s = fit(
        &dir,
        &[
            "--data",
            &csv,
            "--target",
            "label",
            "--steps",
            "1000",
            "--quiet",
            "--no-plots",
        ],
    );
    assert_eq!(header(&dir), "chain,draw,x1,x2,intercept");
    assert_eq!(s["config"]["model"], "logistic");
}
