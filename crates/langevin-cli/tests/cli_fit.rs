//! End-to-end runs of `langevin fit`, `predict` and `diagnose` (short runs).

use std::path::Path;
use std::process::{Command, Output};

fn langevin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_langevin"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> Output {
    let out = langevin(args);
    assert!(
        out.status.success(),
        "langevin {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

fn header(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("samples.csv"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn default_fit_runs_on_bundled_data_and_writes_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let d = dir.to_str().unwrap();
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
    assert_eq!(s["config"]["method"], "sghmc");
    assert!(s["seconds"].as_f64().unwrap() > 0.0);
    for f in ["trace.png", "marginals.png", "reliability.png"] {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        assert_eq!(&bytes[..4], b"\x89PNG", "{f}");
    }
    // 4 chains x (3000 - 750 burn-in) kept draws, thinned to at most 1000 per chain.
    let rows = std::fs::read_to_string(dir.join("samples.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    assert_eq!(rows, 4 * 750);

    // diagnose reads it back and prints the table.
    let out = ok(&["diagnose", "--run", d]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("petal_width") && text.contains("ess_bulk"),
        "{text}"
    );

    // predict: probabilities and an uncertainty decomposition per row.
    let preds = tmp.path().join("preds.csv");
    ok(&[
        "predict",
        "--run",
        d,
        "--data",
        "iris_virginica",
        "--out",
        preds.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&preds).unwrap();
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
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: &str, threads: &str| {
        let dir = tmp.path().join(name);
        ok(&[
            "fit",
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
            "--out",
            dir.to_str().unwrap(),
        ]);
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
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lin");
    ok(&[
        "fit",
        "--data",
        "diabetes",
        "--steps",
        "2000",
        "--quiet",
        "--no-plots",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(
        header(&dir),
        "chain,draw,age,sex,bmi,bp,s1,s2,s3,s4,s5,s6,intercept,log_noise_sd"
    );
    let s = summary(&dir);
    assert_eq!(s["config"]["model"], "linear");
    let rmse = s["metrics"]["test_rmse"].as_f64().unwrap();
    // The target's sd is about 77; a linear model gets about 55.
    assert!(rmse > 30.0 && rmse < 70.0, "rmse {rmse}");
    let preds = tmp.path().join("p.csv");
    ok(&[
        "predict",
        "--run",
        dir.to_str().unwrap(),
        "--data",
        "diabetes",
        "--out",
        preds.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&preds).unwrap();
    assert!(text.starts_with("row,mean,sd,aleatoric_sd,epistemic_sd\n"));
}

#[test]
fn softmax_map_and_mlp_on_bundled_sets() {
    let tmp = tempfile::tempdir().unwrap();
    // softmax on iris fitted on every row: metrics on the training rows.
    let dir = tmp.path().join("sm");
    ok(&[
        "fit",
        "--data",
        "iris",
        "--test-fraction",
        "0",
        "--steps",
        "1000",
        "--quiet",
        "--no-plots",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let s = summary(&dir);
    assert_eq!(s["config"]["model"], "softmax");
    assert!(s["metrics"]["train_accuracy"].as_f64().unwrap() > 0.85);
    assert!(s["metrics"]["test_nll"].is_null());
    assert_eq!(s["params"].as_array().unwrap().len(), 4 * 3 + 3);
    // MAP: one point, same metrics.
    let dir = tmp.path().join("map");
    ok(&[
        "fit",
        "--data",
        "wine",
        "--method",
        "map",
        "--steps",
        "500",
        "--quiet",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let s = summary(&dir);
    assert_eq!(s["config"]["temperature"], 0.0);
    assert!(s["metrics"]["test_accuracy"].as_f64().unwrap() > 0.85);
    // MLP classifier on digits, minibatches.
    let dir = tmp.path().join("mlp");
    ok(&[
        "fit",
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
        "--out",
        dir.to_str().unwrap(),
    ]);
    let s = summary(&dir);
    assert_eq!(
        s["params"].as_array().unwrap().len(),
        64 * 16 + 16 + 16 * 10 + 10
    );
    assert!(s["metrics"]["test_accuracy"].as_f64().unwrap() > 0.5);
    // MLP regressor.
    let dir = tmp.path().join("mlpr");
    ok(&[
        "fit",
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
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(summary(&dir)["metrics"]["test_rmse"]
        .as_f64()
        .unwrap()
        .is_finite());
    // Every sampler runs.
    for method in ["sgld", "sgnht", "baoa"] {
        let dir = tmp.path().join(method);
        ok(&[
            "fit",
            "--method",
            method,
            "--steps",
            "500",
            "--chains",
            "2",
            "--quiet",
            "--no-plots",
            "--out",
            dir.to_str().unwrap(),
        ]);
        assert!(summary(&dir)["metrics"]["test_nll"]
            .as_f64()
            .unwrap()
            .is_finite());
    }
}

#[test]
fn user_csv_with_named_target() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("mine.csv");
    let mut text = String::from("x1,label,x2\n");
    for i in 0..60 {
        let a = (i as f64 * 0.37).sin();
        let b = (i as f64 * 0.91).cos();
        text += &format!("{a},{},{b}\n", u8::from(a + 0.5 * b > 0.0));
    }
    std::fs::write(&csv, text).unwrap();
    let dir = tmp.path().join("run");
    ok(&[
        "fit",
        "--data",
        csv.to_str().unwrap(),
        "--target",
        "label",
        "--steps",
        "1000",
        "--quiet",
        "--no-plots",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(header(&dir), "chain,draw,x1,x2,intercept");
    assert_eq!(summary(&dir)["config"]["model"], "logistic");
}
