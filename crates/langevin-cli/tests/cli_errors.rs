//! Bad input gives exit code 2 and a message naming the problem (file, line,
//! column for data); divergence gives exit code 3; nothing panics and no
//! failed run leaves a summary.json.

mod common;

use std::path::Path;

use common::{expect, expect_no_output, ok, path_str, predict, read, tempdir, write};

#[test]
fn bad_data_files_exit_2_naming_file_line_and_column() {
    let tmp = tempdir();
    let out = tmp.path().join("out");
    let o = path_str(&out);
    let t = tmp.path();
    // `fit --data T/NAME --target y --out OUT` plus `extra`, on a CSV with `text`.
    let fit_y = |name: &str, text: &str, extra: &[&str], needles: &[&str]| {
        let f = write(t, name, text);
        let mut args = vec!["fit", "--data", &f, "--target", "y", "--out", o];
        args.extend_from_slice(extra);
        expect(&args, 2, needles);
    };
    fit_y(
        "notarget.csv",
        "a,b\n1,2\n",
        &[],
        &["notarget.csv", "no column named `y`"],
    );
    fit_y(
        "text.csv",
        "a,y\n1,0\n2,1\nabc,0\n",
        &[],
        &["text.csv:4: column `a`: `abc` is not a number"],
    );
    fit_y("empty.csv", "", &[], &["empty.csv", "empty file"]);
    fit_y(
        "ragged.csv",
        "a,y\n1,0\n2,1,5\n",
        &[],
        &["ragged.csv:3", "3 fields", "header has 2"],
    );
    fit_y(
        "nan.csv",
        "a,y\n1,0\nNaN,1\n",
        &[],
        &["nan.csv:3: column `a`", "not a finite number"],
    );
    fit_y(
        "inf.csv",
        "a,y\n1,0\n2,inf\n",
        &[],
        &["inf.csv:3: column `y`", "not a finite number"],
    );
    fit_y(
        "oneclass.csv",
        "a,y\n1,1\n2,1\n3,1\n",
        &["--model", "logistic"],
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
    let tmp = tempdir();
    let out = tmp.path().join("out");
    let o = path_str(&out);
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["fit", "--step-size", "0", "--out", o],
            &["--step-size must be a finite number > 0"],
        ),
        (&["fit", "--step-size", "-1", "--out", o], &["--step-size"]),
        (
            &["fit", "--chains", "0", "--out", o],
            &["--chains must be at least 1"],
        ),
        (
            &["fit", "--steps", "100", "--burn-in", "100", "--out", o],
            &["--burn-in (100) must be smaller than --steps (100)"],
        ),
        (&["fit", "--thin", "0", "--out", o], &["--thin"]),
        (&["fit", "--batch-size", "0", "--out", o], &["--batch-size"]),
        (&["fit", "--prior-sd", "0", "--out", o], &["--prior-sd"]),
        (
            &["fit", "--test-fraction", "1", "--out", o],
            &["--test-fraction"],
        ),
        (
            &["fit", "--hidden", "64,x", "--model", "mlp", "--out", o],
            &["--hidden"],
        ),
        (&["fit", "--model", "forest", "--out", o], &["forest"]),
        (&["fit", "--method", "hmc", "--out", o], &["hmc"]),
        (
            &["fit", "--data", "nonesuch", "--out", o],
            &["nonesuch", "bundled"],
        ),
        (&["predict", "--run", o, "--data", "iris"], &["run.json"]),
        (&["diagnose", "--run", o], &["run.json"]),
    ];
    for (args, needles) in cases {
        expect(args, 2, needles);
    }
    assert!(!out.join("summary.json").exists());
    // thermo tbi checks both dimension lists before creating its folder.
    let tbi = tmp.path().join("tbi");
    let t = path_str(&tbi);
    expect_no_output(
        &["thermo", "tbi", "--dims", "2,x", "--out", t],
        &tbi,
        &["bad dimension list `2,x`"],
    );
    expect_no_output(
        &["thermo", "tbi", "--logistic-dims", "0", "--out", t],
        &tbi,
        &["dimensions must be in 1..=4096"],
    );
}

#[test]
fn divergence_stops_with_exit_3_and_no_summary() {
    let tmp = tempdir();
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
            path_str(&out),
        ],
        3,
        &["divergent", "--step-size"],
    );
    assert!(out.join("samples.csv").exists());
    assert!(!out.join("summary.json").exists());
}

#[test]
fn predict_on_bad_data_exits_2() {
    let tmp = tempdir();
    let run = tmp.path().join("run");
    let r = path_str(&run);
    ok(&["fit", "--steps", "200", "--quiet", "--no-plots", "--out", r]);
    let t = tmp.path();
    // `predict --run RUN --data T/NAME` on a CSV with `text`.
    let predict_fails = |name: &str, text: &str, needles: &[&str]| {
        let f = write(t, name, text);
        expect(&["predict", "--run", r, "--data", &f], 2, needles);
    };
    predict_fails(
        "missing.csv",
        "sepal_length,sepal_width,petal_length\n1,2,3\n",
        &["missing.csv", "no column named `petal_width`"],
    );
    predict_fails(
        "bad.csv",
        "sepal_length,sepal_width,petal_length,petal_width\n1,2,3,4\n1,2,x,4\n",
        &["bad.csv:3: column `petal_length`"],
    );
    // A target column with an unseen label.
    predict_fails(
        "label.csv",
        "sepal_length,sepal_width,petal_length,petal_width,virginica\n1,2,3,4,7\n",
        &["label.csv:2: column `virginica`", "not seen in training"],
    );
    // A target-less file works and writes one row per data row.
    let f = write(
        t,
        "new.csv",
        "id,petal_width,sepal_length,sepal_width,petal_length\na,0.2,5.1,3.5,1.4\nb,2.3,6.9,3.1,5.4\n",
    );
    let preds = t.join("p.csv");
    let text = predict(r, &f, &preds);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3);
    // setosa-like row: not virginica; virginica-like row: virginica.
    assert!(rows[1].starts_with("2,0,"), "{text}");
    assert!(rows[2].starts_with("3,1,"), "{text}");
}

// ---------------------------------------------------------------------------
// The bad-input corpus of issue #8: every item through the binary, exit code
// 2, a message naming the problem (file and line for data, the option and the
// value for options), and no output directory left behind.
// ---------------------------------------------------------------------------

/// `fit --data DATA --target y --out T/OUT` plus `extra` fails before the run
/// starts (see [`expect_no_output`]).
fn fit_data_fails(t: &Path, data: &str, out: &str, extra: &[&str], needles: &[&str]) {
    let out = t.join(out);
    let mut args = vec![
        "fit",
        "--data",
        data,
        "--target",
        "y",
        "--out",
        path_str(&out),
    ];
    args.extend_from_slice(extra);
    expect_no_output(&args, &out, needles);
}

/// [`fit_data_fails`] on a CSV file `name` with the contents `text`.
fn fit_file_fails(t: &Path, name: &str, text: impl AsRef<[u8]>, extra: &[&str], needles: &[&str]) {
    let f = write(t, name, text);
    fit_data_fails(t, &f, &format!("out-{name}"), extra, needles);
}

#[test]
fn corpus_bad_data_files() {
    let tmp = tempdir();
    let t = tmp.path();
    // Missing file.
    let missing = t.join("missing.csv");
    let missing = path_str(&missing);
    fit_data_fails(t, missing, "out-missing", &[], &[missing, "no such file"]);
    // A directory given as the data file.
    let dir = path_str(t);
    fit_data_fails(t, dir, "out-dir", &[], &[dir, "not a regular file"]);
    fit_file_fails(t, "empty.csv", "", &[], &["empty.csv", "empty file"]);
    fit_file_fails(
        t,
        "header.csv",
        "a,y\n",
        &[],
        &["header.csv", "no data rows after the header"],
    );
    fit_file_fails(
        t,
        "blank.csv",
        "a,y\n\n   \n",
        &[],
        &["blank.csv", "no data rows after the header"],
    );
    fit_file_fails(
        t,
        "ragged.csv",
        "a,y\n1,0\n2,1\n3\n",
        &[],
        &["ragged.csv:4: row has 1 fields but the header has 2"],
    );
    fit_file_fails(
        t,
        "ragged2.csv",
        "a,y\n1,0\n2,1,5\n",
        &[],
        &["ragged2.csv:3: row has 3 fields but the header has 2"],
    );
    fit_file_fails(
        t,
        "text.csv",
        "a,y\n1,0\n2,1\nabc,0\n",
        &[],
        &["text.csv:4: column `a`: `abc` is not a number"],
    );
    fit_file_fails(
        t,
        "emptycell.csv",
        "a,y\n1,0\n,1\n",
        &[],
        &["emptycell.csv:3: column `a`: empty cell"],
    );
    fit_file_fails(
        t,
        "nan.csv",
        "a,y\n1,0\nNaN,1\n",
        &[],
        &["nan.csv:3: column `a`: `NaN` is not a finite number"],
    );
    fit_file_fails(
        t,
        "inf.csv",
        "a,y\n1,0\n2,inf\n",
        &[],
        &["inf.csv:3: column `y`: `inf` is not a finite number"],
    );
    fit_file_fails(
        t,
        "overflow.csv",
        "a,y\n1,0\n-1e400,1\n",
        &[],
        &["overflow.csv:3: column `a`: `-1e400` is not a finite number"],
    );
    fit_file_fails(
        t,
        "binary.csv",
        "a,y\n1,0\n\u{0}\u{1},1\n",
        &[],
        &["binary.csv:3: column `a`", "is not a number"],
    );
    fit_file_fails(
        t,
        "latin1.csv",
        b"a,y\n1,0\n\xe9,1\n",
        &[],
        &["latin1.csv:3", "UTF-8"],
    );
    fit_file_fails(
        t,
        "notarget.csv",
        "a,b\n1,2\n3,4\n",
        &[],
        &["notarget.csv", "no column named `y`", "columns are: a, b"],
    );
    fit_file_fails(
        t,
        "onlytarget.csv",
        "y\n1\n2\n",
        &[],
        &["onlytarget.csv", "no feature columns"],
    );
    fit_file_fails(
        t,
        "dupe.csv",
        "a,a,y\n1,2,0\n",
        &[],
        &["dupe.csv", "header names column `a` twice"],
    );
    // A constant target for every classifier.
    for extra in [
        &["--model", "logistic"][..],
        &["--model", "softmax"][..],
        &["--model", "mlp", "--task", "classification"][..],
    ] {
        fit_file_fails(
            t,
            "oneclass.csv",
            "a,y\n1,1\n2,1\n3,1\n4,1\n5,1\n",
            extra,
            &["oneclass.csv", "target `y` has a single class (1)"],
        );
    }
    // Non-integer labels for a classifier.
    fit_file_fails(
        t,
        "frac.csv",
        "a,y\n1,0\n2,1\n3,0.5\n4,1\n",
        &["--model", "logistic"],
        &["frac.csv:4: column `y`", "0.5 is not a class label"],
    );
    // More classes than (training) rows: 4 rows, 4 classes, one held out.
    fit_file_fails(
        t,
        "classes.csv",
        "a,y\n1,0\n2,1\n3,2\n4,3\n",
        &[],
        &["classes.csv", "4 classes but only 3 training rows"],
    );
    fit_file_fails(
        t,
        "classes2.csv",
        "a,y\n1,0\n2,1\n3,2\n4,3\n5,4\n",
        &["--model", "softmax", "--test-fraction", "0.5"],
        &["classes2.csv", "5 classes but only 2 training rows"],
    );
    // Too few rows to hold any out.
    fit_file_fails(
        t,
        "onerow.csv",
        "a,y\n1,0.5\n",
        &[],
        &["onerow.csv", "test_fraction", "leaves no training rows"],
    );
    // A binary model on a three-class target.
    let out = t.join("out-iris");
    expect_no_output(
        &[
            "fit",
            "--data",
            "iris",
            "--model",
            "logistic",
            "--out",
            path_str(&out),
        ],
        &out,
        &["binary target", "3 classes"],
    );
}

#[test]
fn corpus_bad_options() {
    let tmp = tempdir();
    let out = tmp.path().join("out");
    let o = path_str(&out);
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--step-size", "0"],
            &["--step-size must be a finite number > 0, got 0"],
        ),
        (
            &["--step-size", "-0.5"],
            &["--step-size must be a finite number > 0, got -0.5"],
        ),
        (
            &["--step-size", "NaN"],
            &["--step-size must be a finite number > 0, got NaN"],
        ),
        (
            &["--step-size", "inf"],
            &["--step-size must be a finite number > 0, got inf"],
        ),
        (&["--chains", "0"], &["--chains must be at least 1"]),
        (
            &["--steps", "100", "--burn-in", "100"],
            &["--burn-in (100) must be smaller than --steps (100)"],
        ),
        (
            &["--steps", "100", "--burn-in", "250"],
            &["--burn-in (250) must be smaller than --steps (100)"],
        ),
        (&["--steps", "0"], &["--steps must be at least 1"]),
        (&["--thin", "0"], &["--thin must be at least 1"]),
        (&["--batch-size", "0"], &["--batch-size must be at least 1"]),
        (
            &["--prior-sd", "-1"],
            &["--prior-sd must be a finite number > 0, got -1"],
        ),
        (
            &["--noise-sd", "0"],
            &["--noise-sd must be a finite number > 0, got 0"],
        ),
        (
            &["--friction", "-2"],
            &["--friction must be a finite number >= 0, got -2"],
        ),
        (
            &["--test-fraction", "1"],
            &["--test-fraction must be in [0, 1), got 1"],
        ),
        (
            &["--test-fraction", "-0.1"],
            &["--test-fraction must be in [0, 1), got -0.1"],
        ),
        (
            &["--hidden", "64,0", "--model", "mlp"],
            &["--hidden: `0` is not a positive integer"],
        ),
        (
            &["--task", "classification", "--model", "linear"],
            &["--task classification does not fit --model linear"],
        ),
        // clap rejects unknown names and malformed numbers (its exit code is 2).
        (&["--model", "forest"], &["'forest'", "--model"]),
        (&["--method", "hmc"], &["'hmc'", "--method"]),
        // clap takes `-1` for an option here: "unexpected argument '-1'".
        (&["--chains", "-1"], &["'-1'"]),
        (&["--steps", "many"], &["'many'", "--steps"]),
        (&["--no-such-option"], &["--no-such-option"]),
    ];
    for (extra, needles) in cases {
        let mut args = vec!["fit", "--quiet", "--out", o];
        args.extend_from_slice(extra);
        expect_no_output(&args, &out, needles);
    }
    expect_no_output(
        &["fit", "--data", "nonesuch", "--out", o],
        &out,
        &["--data nonesuch", "no bundled data set"],
    );
}

#[test]
fn corpus_unwritable_output_directory() {
    let tmp = tempdir();
    let t = tmp.path();
    let file = t.join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let under = file.join("run");
    // Short, with an explicit step size: the failure is about the directory.
    let quick = [
        "--steps",
        "20",
        "--step-size",
        "0.01",
        "--quiet",
        "--no-plots",
    ];
    for out in [&under, &file] {
        let mut args = vec!["fit", "--out", path_str(out)];
        args.extend_from_slice(&quick);
        expect(&args, 2, &["cannot create output directory", path_str(out)]);
    }
    assert!(!under.exists());
    assert_eq!(read(&file), "not a directory");
    // thermo: the same, after the computation, before any file is written.
    let m = write(t, "spd.csv", "2,0.5\n0.5,1\n");
    expect(
        &[
            "thermo",
            "solve",
            "--matrix",
            &m,
            "--analog-time",
            "50",
            "--out",
            path_str(&under),
        ],
        2,
        &["--out", path_str(&under), "cannot create the output folder"],
    );
}

#[test]
fn corpus_thermo_bad_matrices() {
    let tmp = tempdir();
    let t = tmp.path();
    let out = t.join("out");
    let o = path_str(&out);
    let nonsquare = write(t, "nonsquare.csv", "1,0,0\n0,1,0\n");
    let indefinite = write(t, "indefinite.csv", "1,2\n2,1\n");
    let asym = write(t, "asym.csv", "2,1\n0,2\n");
    let ragged = write(t, "ragged.csv", "1,0\n0\n");
    let text = write(t, "text.csv", "1,0\n0,x\n");
    let nan = write(t, "nan.csv", "1,0\n0,NaN\n");
    let empty = write(t, "empty.csv", "\n");
    let unstable = write(t, "unstable.csv", "-1,0\n0,1\n");
    let missing = t.join("missing.csv");
    let missing = path_str(&missing);
    for cmd in ["solve", "inv", "logdet", "expm"] {
        let run = |m: &str, needles: &[&str]| {
            expect_no_output(&["thermo", cmd, "--matrix", m, "--out", o], &out, needles);
        };
        run(
            &nonsquare,
            &["nonsquare.csv", "must be square", "2 rows of 3 values"],
        );
        run(&ragged, &["ragged.csv:2", "ragged row"]);
        run(&text, &["text.csv:2: column 2: `x` is not a number"]);
        run(&nan, &["nan.csv:2: column 2", "non-finite"]);
        run(&empty, &["empty.csv", "no data"]);
        run(missing, &[missing, "cannot read"]);
        // expm takes any square A (the library shifts it so that the symmetric part
        // of cI − A is positive definite, as thermox accepts non-symmetric A).
        if cmd != "expm" {
            run(&asym, &["asym.csv", "not symmetric"]);
            run(&indefinite, &["indefinite.csv", "not positive definite"]);
        }
    }
    // ... and its estimate of a non-symmetric exponential agrees with the digital one
    // within 4.5 of its own (Monte Carlo) error estimate.
    let ok_out = t.join("asym_expm");
    ok(&[
        "thermo",
        "expm",
        "--matrix",
        &asym,
        "--out",
        path_str(&ok_out),
    ]);
    let s: serde_json::Value = serde_json::from_str(&read(ok_out.join("summary.json"))).unwrap();
    let rel = s["relative_actual_error"].as_f64().unwrap();
    let est = s["relative_error_estimate"].as_f64().unwrap();
    assert!(
        rel < 4.5 * est && est < 0.5,
        "expm of a non-symmetric matrix: relative error {rel}, estimate {est}"
    );
    // The OU sampler: a non-square or unstable drift.
    expect_no_output(
        &["thermo", "sample", "--matrix", &nonsquare, "--out", o],
        &out,
        &["nonsquare.csv", "must be square"],
    );
    expect_no_output(
        &["thermo", "sample", "--matrix", &unstable, "--out", o],
        &out,
        &["unstable.csv", "unstable drift"],
    );
    expect_no_output(
        &["thermo", "sample", "--diffusion", &indefinite, "--out", o],
        &out,
        &["not semi-positive definite"],
    );
    // solve with a right-hand side of the wrong length.
    let spd = write(t, "spd.csv", "2,0.5\n0.5,1\n");
    let v3 = write(t, "v3.csv", "1\n2\n3\n");
    expect_no_output(
        &[
            "thermo", "solve", "--matrix", &spd, "--vector", &v3, "--out", o,
        ],
        &out,
        &["v3.csv", "vector has 3 entries, matrix is 2x2"],
    );
    // The SPU model reads its matrix before creating the output folder.
    expect_no_output(
        &["thermo", "spu", "--matrix", &nonsquare, "--out", o],
        &out,
        &["nonsquare.csv", "square"],
    );
}

#[test]
fn corpus_emt_missing_or_bad_model() {
    let tmp = tempdir();
    let t = tmp.path();
    let missing = t.join("no-model.gguf");
    let m = path_str(&missing);
    expect(
        &[
            "emt",
            "ask",
            "--no-memory",
            "--question",
            "Where does Marta live?",
            "--model",
            m,
        ],
        2,
        &["model file not found", m],
    );
    expect(
        &["emt", "bench", "--items", "2", "--model", m],
        2,
        &["model file not found", m],
    );
    let junk = write(t, "junk.gguf", "this is not a GGUF file\n");
    expect(
        &[
            "emt",
            "ask",
            "--no-memory",
            "--question",
            "q",
            "--model",
            &junk,
        ],
        2,
        &["junk.gguf", "invalid GGUF"],
    );
    let doc = t.join("no-doc.txt");
    expect(
        &[
            "emt",
            "ask",
            "--memory",
            path_str(&doc),
            "--question",
            "q",
            "--model",
            m,
        ],
        2,
        &["cannot read", path_str(&doc)],
    );
}
