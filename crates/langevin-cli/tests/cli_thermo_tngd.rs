//! `langevin thermo tngd` (issue 19): the bundled digits from any working
//! directory, no silent toy fallback, an explicit `--data` file that is used
//! (or, when missing, is an error naming it), and learning rates chosen on a
//! validation split and reported.

mod common;

use std::path::Path;

use common::{command, path_str, tempdir, write};

/// Runs `langevin thermo tngd ARGS` with `cwd` as the working directory and
/// returns (exit code, stdout, stderr).
fn tngd_in(cwd: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let o = command()
        .current_dir(cwd)
        .args([&["thermo", "tngd"], args].concat())
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A working directory outside the repository, with no `data/` folder.
fn outside_repo() -> tempfile::TempDir {
    let tmp = tempdir();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .canonicalize()
        .unwrap();
    let cwd = tmp.path().canonicalize().unwrap();
    assert!(
        !cwd.starts_with(&repo),
        "{} is inside the repository",
        cwd.display()
    );
    assert!(!cwd.join("data/digits.csv").exists());
    tmp
}

const SMALL: [&str; 6] = [
    "--iters",
    "3",
    "--lr-grid",
    "0.1,0.3",
    "--adam-lr-grid",
    "0.01,0.03",
];

#[test]
fn default_data_is_the_bundled_digits_from_any_folder() {
    let tmp = outside_repo();
    let (code, out, err) = tngd_in(tmp.path(), &[&SMALL[..], &["--out", "run"]].concat());
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    assert!(!err.contains("toy") && !out.contains("toy"), "{out}\n{err}");
    assert!(
        out.contains("data: bundled:digits, 1797 rows, 64 features, 10 classes"),
        "{out}"
    );
    let s = common::summary(&tmp.path().join("run"));
    assert_eq!(s["data"], "bundled:digits");
    assert_eq!(s["classes"], 10);
    assert_eq!(s["features"], 64);
    assert_eq!(s["n"], 1797);
    let n = |k: &str| s[k].as_u64().unwrap();
    // 20 % test (round(359.4)), then 20 % of the 1438 training rows for validation.
    assert_eq!((n("n_train"), n("n_test")), (1438, 359));
    assert_eq!((n("n_fit"), n("n_validation")), (1150, 288));
    // Every method's learning rate comes from its grid, is reported in the
    // results, and is the arg-min of the validation losses it records.
    let methods = s["lr_search"]["methods"].as_array().unwrap();
    let estimate = s["estimate"].as_array().unwrap();
    assert_eq!(methods.len(), 5);
    for (m, e) in methods.iter().zip(estimate) {
        let chosen = m["chosen"].as_f64().unwrap();
        let grid = if m["label"] == "Adam" {
            [0.01, 0.03]
        } else {
            [0.1, 0.3]
        };
        assert!(grid.contains(&chosen), "{m}");
        assert_eq!(e["lr"].as_f64().unwrap(), chosen, "{e}");
        assert_eq!(e["method"], m["label"]);
        let cands = m["candidates"].as_array().unwrap();
        assert_eq!(cands.len(), 2);
        let best = cands
            .iter()
            .filter_map(|c| Some((c["lr"].as_f64()?, c["val_loss"].as_f64()?)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        assert_eq!(best.0, chosen, "{m}");
        let acc = e["test_accuracy"].as_f64().unwrap();
        let loss = e["test_loss"].as_f64().unwrap();
        assert!(
            (0.0..=1.0).contains(&acc) && loss.is_finite() && loss > 0.0,
            "{e}"
        );
        assert!(
            out.contains(&format!("-> lr {chosen}")),
            "lr {chosen} not in {out}"
        );
    }
}

#[test]
fn an_explicit_data_file_is_used_and_a_missing_one_is_an_error_naming_it() {
    let tmp = outside_repo();
    let t = tmp.path();
    // Missing file: exit code 2, the file named, no output, no fallback.
    let (code, out, err) = tngd_in(
        t,
        &[&SMALL[..], &["--data", "no_such_file.csv", "--out", "gone"]].concat(),
    );
    assert_eq!(code, Some(2), "stdout: {out}\nstderr: {err}");
    assert!(err.contains("no_such_file.csv"), "{err}");
    assert!(!err.contains("panicked") && !out.contains("toy"), "{err}");
    assert!(!t.join("gone").exists());
    // A regression set is not a classification problem.
    let (code, _, err) = tngd_in(
        t,
        &[&SMALL[..], &["--data", "diabetes", "--out", "gone"]].concat(),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("regression"), "{err}");
    // A 3-class file of 40 rows: that file is what runs.
    let mut csv = String::from("a,b,label\n");
    for i in 0..40 {
        let c = i % 3;
        csv.push_str(&format!(
            "{},{},{c}\n",
            c as f64 + 0.1 * i as f64,
            2.0 - c as f64
        ));
    }
    let file = write(t, "three.csv", csv);
    let (code, out, err) = tngd_in(
        t,
        &[
            &SMALL[..],
            &["--data", &file, "--batch", "8", "--out", "mine"],
        ]
        .concat(),
    );
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    let s = common::summary(&t.join("mine"));
    assert_eq!(s["data"], file.as_str());
    assert_eq!(
        (s["n"].as_u64(), s["classes"].as_u64()),
        (Some(40), Some(3))
    );
    assert_eq!(s["features"], 2);
    assert!(out.contains(path_str(Path::new(&file))), "{out}");
}

#[test]
fn bad_learning_rate_grids_and_validation_fractions_are_refused_before_any_output() {
    let tmp = outside_repo();
    let t = tmp.path();
    for (i, (bad, needle)) in [
        (&["--lr-grid", "0.1,0"][..], "--lr-grid"),
        (&["--adam-lr-grid", "nan"][..], "--adam-lr-grid"),
        (&["--val-fraction", "1"][..], "--val-fraction"),
        (&["--val-fraction", "0"][..], "--val-fraction"),
    ]
    .iter()
    .enumerate()
    {
        let out = format!("bad{i}");
        let (code, _, err) = tngd_in(t, &[&["--out", out.as_str()], *bad].concat());
        assert_eq!(code, Some(2), "{bad:?}: {err}");
        assert!(err.contains(needle), "{bad:?}: {err}");
        assert!(!t.join(&out).exists(), "{bad:?} left {out} behind");
    }
}
