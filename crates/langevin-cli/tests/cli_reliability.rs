//! Cases of the hostile test of issue 15 that the run-loop move fixed, each
//! through the binary: resume with relative paths, runs with no finite step,
//! overflowing input, options that do not apply, damaged run folders.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{
    command, expect, expect_no_output, fails, kill, ok, path_str, tempdir, wait_until, write,
};

const IRIS_VIRGINICA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/iris_virginica.csv");

fn steps_done(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("checkpoint.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["steps_done"].as_u64()
}

/// A run in `cwd` with `args`, to completion; panics on failure.
fn run_in(cwd: &Path, args: &[&str]) {
    let o = command().current_dir(cwd).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Issue 15, case 1: a relative `--data` (and a relative or absolute
/// `--out`) resumes after kill -9, byte-identical to an uninterrupted run.
#[test]
fn resume_with_a_relative_data_path() {
    let tmp = tempdir();
    let cwd = tmp.path();
    std::fs::copy(IRIS_VIRGINICA, cwd.join("base.csv")).unwrap();
    let base = [
        "fit",
        "--data",
        "base.csv",
        "--target",
        "virginica",
        "--steps",
        "30000",
        "--chains",
        "2",
        "--checkpoint-every",
        "500",
        "--quiet",
        "--no-plots",
    ];
    let whole = cwd.join("whole");
    let mut args = base.to_vec();
    args.extend(["--out", "whole"]);
    run_in(cwd, &args);
    let abs = cwd.join("abs");
    for out in ["k", path_str(&abs)] {
        let dir = cwd.join(out);
        let mut args = base.to_vec();
        args.extend(["--out", out]);
        let mut child = command()
            .current_dir(cwd)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(wait_until(Duration::from_secs(120), || steps_done(&dir)
            .unwrap_or(0)
            > 0));
        let interrupted = kill(&mut child);
        run_in(cwd, &["fit", "--resume", out, "--quiet", "--no-plots"]);
        assert_eq!(
            std::fs::read(dir.join("samples.csv")).unwrap(),
            std::fs::read(whole.join("samples.csv")).unwrap(),
            "--out {out} (killed mid-run: {interrupted})"
        );
    }
}

/// Issue 15, cases 2 and 3: a run with no finite step is no result (exit 3),
/// and input that overflows is refused up front (exit 2) naming the cause.
#[test]
fn no_finite_step_and_overflow_are_not_results() {
    let tmp = tempdir();
    let d = tmp.path();
    let mut huge = String::from("a,b,y\n");
    for i in 0..40 {
        huge += &format!("{}e300,{},{}\n", 1 + i % 7, i % 3, i % 2);
    }
    let huge = write(d, "huge.csv", huge);
    let out = d.join("nostd");
    let e = fails(
        &[
            "fit",
            "--data",
            &huge,
            "--target",
            "y",
            "--no-standardize",
            "--steps",
            "50",
            "--out",
            path_str(&out),
            "--quiet",
        ],
        3,
    );
    assert!(e.contains("divergent"), "{e}");
    assert!(!out.join("summary.json").exists());
    let e = fails(
        &[
            "fit",
            "--data",
            &huge,
            "--target",
            "y",
            "--method",
            "map",
            "--no-standardize",
            "--steps",
            "50",
            "--out",
            path_str(&d.join("map")),
            "--quiet",
        ],
        3,
    );
    assert!(e.contains("divergent"), "{e}");
    let mut big = String::from("a,b,y\n");
    for i in 0..40 {
        big += &format!("{}e307,{},{}\n", 1 + i % 9, i % 3, i % 2);
    }
    let big = write(d, "big.csv", big);
    expect_no_output(
        &[
            "fit",
            "--data",
            &big,
            "--target",
            "y",
            "--out",
            path_str(&d.join("o1")),
        ],
        &d.join("o1"),
        &["column `a`", "too large"],
    );
    expect_no_output(
        &[
            "fit",
            "--prior-sd",
            "1e155",
            "--out",
            path_str(&d.join("o2")),
        ],
        &d.join("o2"),
        &["--prior-sd", "overflows"],
    );
    expect_no_output(
        &[
            "fit",
            "--prior-sd",
            "1e-300",
            "--out",
            path_str(&d.join("o3")),
        ],
        &d.join("o3"),
        &["--prior-sd", "underflows"],
    );
}

/// Issue 15: `--thin` past the run, and options that do not apply, are exit 2
/// before any output.
#[test]
fn inapplicable_options_are_refused_before_output() {
    let tmp = tempdir();
    let d = tmp.path();
    let cases: [(&[&str], &[&str]); 6] = [
        (&["--steps", "100", "--thin", "500"], &["--thin", "no draw"]),
        (&["--hidden", "8"], &["--hidden", "mlp"]),
        (&["--noise-sd", "1"], &["--noise-sd", "regression"]),
        (
            &["--method", "sgld", "--friction", "1"],
            &["--friction", "sgld"],
        ),
        (
            &["--method", "map", "--burn-in", "10"],
            &["--burn-in", "map"],
        ),
        (&["--method", "vi", "--thin", "2"], &["--thin", "samplers"]),
    ];
    for (i, (args, needles)) in cases.iter().enumerate() {
        let out = d.join(format!("o{i}"));
        let mut all = vec!["fit"];
        all.extend_from_slice(args);
        all.extend(["--out", path_str(&out)]);
        expect_no_output(&all, &out, needles);
    }
}

/// Issue 15, case 4 and its siblings: damaged run folders are refused with
/// exit 2 naming the file (and the line or field).
#[test]
fn damaged_run_folders_are_refused() {
    let tmp = tempdir();
    let d = tmp.path();
    let run = d.join("run");
    let r = path_str(&run);
    ok(&[
        "fit",
        "--steps",
        "2000",
        "--chains",
        "2",
        "--out",
        r,
        "--quiet",
        "--no-plots",
    ]);
    let samples = std::fs::read_to_string(run.join("samples.csv")).unwrap();
    // Cut mid-row.
    std::fs::write(run.join("samples.csv"), &samples[..samples.len() - 3]).unwrap();
    expect(&["diagnose", "--run", r], 2, &["samples.csv", "cut"]);
    expect(
        &["predict", "--run", r, "--data", "iris_virginica"],
        2,
        &["samples.csv", "cut"],
    );
    // A NaN.
    let mut lines: Vec<&str> = samples.lines().collect();
    let bad = lines[5].rsplit_once(',').unwrap().0.to_string() + ",NaN";
    lines[5] = &bad;
    std::fs::write(run.join("samples.csv"), lines.join("\n") + "\n").unwrap();
    expect(&["diagnose", "--run", r], 2, &["samples.csv:6", "finite"]);
    // Diagnose's thresholds.
    std::fs::write(run.join("samples.csv"), &samples).unwrap();
    expect(
        &["diagnose", "--run", r, "--max-rhat", "nan"],
        2,
        &["--max-rhat"],
    );
    expect(&["diagnose", "--run", r, "--min-ess=-5"], 2, &["--min-ess"]);
    // predict --out a folder: refused before computing.
    expect(
        &[
            "predict",
            "--run",
            r,
            "--data",
            "iris_virginica",
            "--out",
            path_str(d),
        ],
        2,
        &["directory"],
    );

    // A checkpointed run, killed, then its folder damaged.
    let ck = d.join("ck");
    let c = path_str(&ck);
    let mut child = common::spawn(&[
        "fit",
        "--steps",
        "200000",
        "--chains",
        "2",
        "--checkpoint-every",
        "500",
        "--out",
        c,
        "--quiet",
        "--no-plots",
    ]);
    assert!(wait_until(Duration::from_secs(120), || steps_done(&ck)
        .unwrap_or(0)
        >= 500));
    kill(&mut child);
    let good = std::fs::read_to_string(ck.join("checkpoint.json")).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value), needles: &[&str]| {
        let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
        f(&mut v);
        std::fs::write(
            ck.join("checkpoint.json"),
            serde_json::to_string(&v).unwrap(),
        )
        .unwrap();
        expect(&["fit", "--resume", c], 2, needles);
    };
    edit(
        &|v| {
            v["chains"][0]["state"]["momenta"]
                .as_array_mut()
                .unwrap()
                .pop();
        },
        &["checkpoint.json", "chains[0].state", "momenta"],
    );
    edit(
        &|v| v["steps_done"] = serde_json::json!(123),
        &["checkpoint.json", "step"],
    );
    edit(
        &|v| v["chains"][1]["step"] = serde_json::json!(7),
        &["checkpoint.json", "chains[1].step"],
    );
    edit(
        &|v| v["chains"][1]["draws"] = serde_json::json!(7),
        &["checkpoint.json", "chains[1].draws"],
    );
    edit(
        &|v| v["chains"][0]["cursor"]["order"] = serde_json::json!([0, 0]),
        &["checkpoint.json", "cursor"],
    );
    std::fs::write(ck.join("checkpoint.json"), &good).unwrap();
    std::fs::remove_file(ck.join("run.json")).unwrap();
    expect(&["fit", "--resume", c], 2, &["run.json"]);
}

/// Issue 15, case 5 (part): sizes and work that cannot fit are refused up
/// front with the estimate, not killed by the OOM killer or left running.
#[test]
fn sizes_that_cannot_fit_are_refused_up_front() {
    let tmp = tempdir();
    let d = tmp.path();
    let o = d.join("o1");
    expect_no_output(
        &[
            "fit",
            "--model",
            "mlp",
            "--hidden",
            "100000000",
            "--out",
            path_str(&o),
        ],
        &o,
        &["parameters", "--hidden"],
    );
    let o = d.join("o2");
    expect_no_output(
        &[
            "thermo",
            "sample",
            "--steps",
            "100000000000",
            "--out",
            path_str(&o),
        ],
        &o,
        &["GB", "--steps"],
    );
    let o = d.join("o3");
    expect_no_output(
        &[
            "thermo",
            "solve",
            "--sampling-interval",
            "1e-12",
            "--out",
            path_str(&o),
        ],
        &o,
        &["readouts", "--sampling-interval"],
    );
    let o = d.join("o4");
    expect_no_output(
        &["thermo", "solve", "--rc", "nan", "--out", path_str(&o)],
        &o,
        &["--rc"],
    );
}

/// Issue 15: thermo input that f64 cannot carry (entries outside
/// [1e-150, 1e150] such as subnormals or 1e308, a result that overflows) is refused before any output, naming the cause;
/// a long cell is cut in the message.
#[test]
fn thermo_numbers_out_of_range_are_refused() {
    let tmp = tempdir();
    let d = tmp.path();
    let sub = write(d, "sub.csv", "1e-320,0\n0,1\n");
    let o = d.join("o1");
    expect_no_output(
        &["thermo", "solve", "--matrix", &sub, "--out", path_str(&o)],
        &o,
        &["sub.csv:1", "outside"],
    );
    let big = write(d, "big.csv", "800,0\n0,1\n");
    let o = d.join("o2");
    expect_no_output(
        &["thermo", "expm", "--matrix", &big, "--out", path_str(&o)],
        &o,
        &["big.csv", "non-finite"],
    );
    let huge = write(d, "huge.csv", "1e308,0\n0,1e308\n");
    let o = d.join("o3");
    expect_no_output(
        &["thermo", "inv", "--matrix", &huge, "--out", path_str(&o)],
        &o,
        &["huge.csv"],
    );
    let long = write(
        d,
        "long.csv",
        format!("1,{}\n0,1\n", "7".repeat(5_000_000) + "x"),
    );
    let o = d.join("o4");
    let e = fails(
        &["thermo", "solve", "--matrix", &long, "--out", path_str(&o)],
        2,
    );
    assert!(
        e.contains("long.csv:1") && e.contains("5000001 characters"),
        "{e}"
    );
    assert!(
        e.len() < 1_000,
        "the cell is cut: {} bytes of message",
        e.len()
    );
}

/// A 5 MB cell (or header name) in a data file is cut in the message, for
/// `fit` as for `thermo`, and no output folder is left.
#[test]
fn long_cells_in_data_files_are_cut_in_messages() {
    let tmp = tempdir();
    let d = tmp.path();
    let cell = "7".repeat(5_000_000) + "x";
    for (name, text, needle) in [
        (
            "cell.csv",
            format!("a,y\n{cell},1\n1,0\n"),
            "cell.csv:2: column `a`",
        ),
        (
            "header.csv",
            format!("{cell},{cell},y\n1,1,0\n"),
            "header.csv",
        ),
    ] {
        let data = write(d, name, text);
        let out = d.join(format!("out-{name}"));
        let e = fails(
            &[
                "fit",
                "--data",
                &data,
                "--target",
                "y",
                "--out",
                path_str(&out),
            ],
            2,
        );
        assert!(
            e.contains(needle) && e.contains("5000001 characters"),
            "{e}"
        );
        assert!(e.len() < 1_000, "{} bytes of message", e.len());
        assert!(!out.exists(), "{} left behind", out.display());
    }
}
