//! Bad input gives exit code 2 and a message naming the problem (file, line,
//! column for data); divergence gives exit code 3; nothing panics and no
//! failed run leaves a summary.json.

use std::path::Path;
use std::process::{Command, Output};

fn langevin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_langevin"))
        .args(args)
        .output()
        .unwrap()
}

/// Run, expect exit code `code` and a stderr containing every one of `needles`.
fn expect(args: &[&str], code: i32, needles: &[&str]) {
    let out = langevin(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "langevin {args:?}: {err}");
    for n in needles {
        assert!(
            err.contains(n),
            "langevin {args:?}: stderr lacks `{n}`: {err}"
        );
    }
    assert!(!err.contains("panicked"), "{err}");
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn bad_data_files_exit_2_naming_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    let t = tmp.path();
    let f = write(t, "notarget.csv", "a,b\n1,2\n");
    expect(
        &["fit", "--data", &f, "--target", "y", "--out", o],
        2,
        &["notarget.csv", "no column named `y`"],
    );
    let f = write(t, "text.csv", "a,y\n1,0\n2,1\nabc,0\n");
    expect(
        &["fit", "--data", &f, "--target", "y", "--out", o],
        2,
        &["text.csv:4: column `a`: `abc` is not a number"],
    );
    let f = write(t, "empty.csv", "");
    expect(
        &["fit", "--data", &f, "--target", "y", "--out", o],
        2,
        &["empty.csv", "empty file"],
    );
    let f = write(t, "ragged.csv", "a,y\n1,0\n2,1,5\n");
    expect(
        &["fit", "--data", &f, "--target", "y", "--out", o],
        2,
        &["ragged.csv:3", "3 fields", "header has 2"],
    );
    let f = write(t, "nan.csv", "a,y\n1,0\nNaN,1\n");
    expect(
        &["fit", "--data", &f, "--target", "y", "--out", o],
        2,
        &["nan.csv:3: column `a`", "not a finite number"],
    );
    let f = write(t, "inf.csv", "a,y\n1,0\n2,inf\n");
    expect(
        &["fit", "--data", &f, "--target", "y", "--out", o],
        2,
        &["inf.csv:3: column `y`", "not a finite number"],
    );
    let f = write(t, "oneclass.csv", "a,y\n1,1\n2,1\n3,1\n");
    expect(
        &[
            "fit", "--data", &f, "--target", "y", "--model", "logistic", "--out", o,
        ],
        2,
        &["oneclass.csv", "single class"],
    );
    expect(
        &[
            "fit",
            "--data",
            "/no/such/file.csv",
            "--target",
            "y",
            "--out",
            o,
        ],
        2,
        &["/no/such/file.csv", "no such file"],
    );
    let f = write(t, "ok.csv", "a,y\n1,0\n2,1\n3,0\n4,1\n5,1\n");
    expect(
        &["fit", "--data", &f, "--out", o],
        2,
        &["--target is required"],
    );
    expect(
        &["fit", "--data", "iris", "--model", "logistic", "--out", o],
        2,
        &["binary target", "3 classes"],
    );
    assert!(!out.join("summary.json").exists());
}

#[test]
fn bad_arguments_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    expect(
        &["fit", "--step-size", "0", "--out", o],
        2,
        &["--step-size must be a finite number > 0"],
    );
    expect(
        &["fit", "--step-size", "-1", "--out", o],
        2,
        &["--step-size"],
    );
    expect(
        &["fit", "--chains", "0", "--out", o],
        2,
        &["--chains must be at least 1"],
    );
    expect(
        &["fit", "--steps", "100", "--burn-in", "100", "--out", o],
        2,
        &["--burn-in (100) must be smaller than --steps (100)"],
    );
    expect(&["fit", "--thin", "0", "--out", o], 2, &["--thin"]);
    expect(
        &["fit", "--batch-size", "0", "--out", o],
        2,
        &["--batch-size"],
    );
    expect(&["fit", "--prior-sd", "0", "--out", o], 2, &["--prior-sd"]);
    expect(
        &["fit", "--test-fraction", "1", "--out", o],
        2,
        &["--test-fraction"],
    );
    expect(
        &["fit", "--hidden", "64,x", "--model", "mlp", "--out", o],
        2,
        &["--hidden"],
    );
    expect(&["fit", "--model", "forest", "--out", o], 2, &["forest"]);
    expect(&["fit", "--method", "nuts", "--out", o], 2, &["nuts"]);
    expect(
        &["fit", "--data", "nonesuch", "--out", o],
        2,
        &["nonesuch", "bundled"],
    );
    expect(&["predict", "--run", o, "--data", "iris"], 2, &["run.json"]);
    expect(&["diagnose", "--run", o], 2, &["run.json"]);
    assert!(!out.join("summary.json").exists());
}

#[test]
fn divergence_stops_with_exit_3_and_no_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    expect(
        &[
            "fit",
            "--method",
            "sgld",
            "--step-size",
            "1e6",
            "--steps",
            "5000",
            "--max-divergences",
            "5",
            "--chains",
            "1",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ],
        3,
        &["divergent", "--step-size"],
    );
    assert!(out.join("samples.csv").exists());
    assert!(!out.join("summary.json").exists());
}

#[test]
fn predict_on_bad_data_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let r = run.to_str().unwrap();
    let out = langevin(&["fit", "--steps", "200", "--quiet", "--no-plots", "--out", r]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = tmp.path();
    let f = write(
        t,
        "missing.csv",
        "sepal_length,sepal_width,petal_length\n1,2,3\n",
    );
    expect(
        &["predict", "--run", r, "--data", &f],
        2,
        &["missing.csv", "no column named `petal_width`"],
    );
    let f = write(
        t,
        "bad.csv",
        "sepal_length,sepal_width,petal_length,petal_width\n1,2,3,4\n1,2,x,4\n",
    );
    expect(
        &["predict", "--run", r, "--data", &f],
        2,
        &["bad.csv:3: column `petal_length`"],
    );
    // A target column with an unseen label.
    let f = write(
        t,
        "label.csv",
        "sepal_length,sepal_width,petal_length,petal_width,virginica\n1,2,3,4,7\n",
    );
    expect(
        &["predict", "--run", r, "--data", &f],
        2,
        &["label.csv:2: column `virginica`", "not seen in training"],
    );
    // A target-less file works and writes one row per data row.
    let f = write(
        t,
        "new.csv",
        "id,petal_width,sepal_length,sepal_width,petal_length\na,0.2,5.1,3.5,1.4\nb,2.3,6.9,3.1,5.4\n",
    );
    let preds = t.join("p.csv");
    let out = langevin(&[
        "predict",
        "--run",
        r,
        "--data",
        &f,
        "--out",
        preds.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&preds).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3);
    // setosa-like row: not virginica; virginica-like row: virginica.
    assert!(rows[1].starts_with("2,0,"), "{text}");
    assert!(rows[2].starts_with("3,1,"), "{text}");
}
