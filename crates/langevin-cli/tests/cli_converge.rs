//! Issue 14 through the binary: runs that adapt and stop when converged.
//!
//! * the default command says it converged, with the verdict and the
//!   adaptation in `summary.json` and the verdict on stdout;
//! * a run cut short by `--max-steps` reports `"converged": false` and why,
//!   warns on stderr, exits 0, and with `--require-converged` exits 4 after
//!   writing everything;
//! * checkpointing does not change where a run until converged stops or what
//!   it keeps (byte-identical `samples.csv`);
//! * options that do not apply, or bad values, are refused with exit 2.
//!
//! Whether the converged answer is *right* is `cli_nuts`'s
//! `default_run_until_converged_agrees_with_nuts`.

mod common;

use common::{expect, expect_no_output, fails, langevin, ok, path_str, read, summary, tempdir};

#[test]
fn default_run_reports_convergence_and_adaptation() {
    let dir = tempdir();
    let out = dir.path().join("run");
    let o = ok(&["fit", "--no-plots", "--out", path_str(&out)]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("until converged"), "{stderr}");
    assert!(stdout.contains("converged: "), "{stdout}");
    let s = summary(&out);
    assert_eq!(s["converged"], true, "{}", s["convergence"]);
    let v = &s["convergence"];
    assert_eq!(v["target_ess"], 400.0);
    assert_eq!(v["max_rhat"], 1.01);
    assert!(v["worst_rhat"].as_f64().unwrap() <= 1.01, "{v}");
    assert!(v["min_ess_bulk"].as_f64().unwrap() >= 400.0, "{v}");
    assert!(v["min_ess_tail"].as_f64().unwrap() >= 400.0, "{v}");
    assert!(
        v["reason"].as_str().unwrap().starts_with("converged"),
        "{v}"
    );
    // It stopped at a check (a multiple of 2500 steps after the 5000-step
    // warm-up), well before the maximum.
    let done = s["steps_done"].as_u64().unwrap();
    assert!(
        done > 5000 && done < 200_000 && done.is_multiple_of(2500),
        "{done}"
    );
    for p in s["params"].as_array().unwrap() {
        assert!(p["rhat"].as_f64().unwrap() <= 1.01, "{p}");
        assert!(p["ess_bulk"].as_f64().unwrap() >= 400.0, "{p}");
    }
    let a = &s["adaptation"];
    assert_eq!(a["adapt"], "diag", "{a}");
    let eps = a["step_size_per_chain"].as_array().unwrap();
    assert_eq!(eps.len(), 4);
    for e in eps {
        let e = e.as_f64().unwrap();
        assert!(e.is_finite() && e > 0.0, "{a}");
    }
    assert_eq!(s["config"]["method"], "baoa");
}

/// breast_cancer with a 200-step warm-up and at most 600 steps cannot reach
/// ESS 400 (measured: it needs about 17 500 steps).
const SHORT: [&str; 6] = [
    "--data",
    "breast_cancer",
    "--burn-in",
    "200",
    "--max-steps",
    "600",
];

#[test]
fn unconverged_run_says_why_and_require_converged_exits_4() {
    let dir = tempdir();
    let out = dir.path().join("short");
    let args = [&["fit", "--no-plots", "--out", path_str(&out)][..], &SHORT].concat();
    let o = ok(&args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("warning: not converged"), "{stderr}");
    assert!(stderr.contains("--max-steps 600"), "{stderr}");
    let s = summary(&out);
    assert_eq!(s["converged"], false);
    assert_eq!(s["steps_done"], 600);
    let reason = s["convergence"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("not converged: "), "{reason}");

    let out4 = dir.path().join("required");
    let args = [
        &[
            "fit",
            "--no-plots",
            "--require-converged",
            "--out",
            path_str(&out4),
        ][..],
        &SHORT,
    ]
    .concat();
    let msg = fails(&args, 4);
    assert!(msg.contains("--require-converged: not converged"), "{msg}");
    // Everything was written, the same as without the option.
    let s4 = summary(&out4);
    assert_eq!(s4["converged"], false);
    assert_eq!(
        read(out.join("samples.csv")),
        read(out4.join("samples.csv"))
    );

    // A run that converges exits 0 with the option.
    let ok_out = dir.path().join("fine");
    ok(&[
        "fit",
        "--no-plots",
        "--quiet",
        "--require-converged",
        "--out",
        path_str(&ok_out),
    ]);
    assert_eq!(summary(&ok_out)["converged"], true);
}

#[test]
fn checkpointing_does_not_change_where_a_run_stops() {
    let dir = tempdir();
    let plain = dir.path().join("plain");
    let ckpt = dir.path().join("ckpt");
    ok(&["fit", "-q", "--no-plots", "--out", path_str(&plain)]);
    ok(&[
        "fit",
        "-q",
        "--no-plots",
        "--checkpoint-every",
        "700",
        "--out",
        path_str(&ckpt),
    ]);
    assert_eq!(summary(&plain)["steps_done"], summary(&ckpt)["steps_done"]);
    assert!(
        read(plain.join("samples.csv")) == read(ckpt.join("samples.csv")),
        "samples.csv differs with --checkpoint-every 700"
    );
}

#[test]
fn bad_convergence_options_are_refused() {
    let dir = tempdir();
    let out = dir.path().join("run");
    let o = path_str(&out);
    for (args, needle) in [
        (
            vec!["--steps", "1000", "--max-steps", "2000"],
            "give one of them",
        ),
        (
            vec!["--method", "map", "--adapt", "diag"],
            "--adapt does not apply to --method map",
        ),
        (
            vec!["--method", "map", "--max-steps", "100"],
            "--max-steps does not apply",
        ),
        (
            vec!["--method", "map", "--target-ess", "100"],
            "--target-ess does not apply",
        ),
        (
            vec!["--method", "map", "--require-converged"],
            "--require-converged does not apply",
        ),
        (
            vec!["--method", "nuts", "--adapt", "dense"],
            "--adapt does not apply to --method nuts",
        ),
        (
            vec!["--method", "nuts", "--max-steps", "100"],
            "--max-steps does not apply to --method nuts",
        ),
        (
            vec!["--target-ess", "0"],
            "--target-ess must be a finite number > 0",
        ),
        (
            vec!["--target-ess", "NaN"],
            "--target-ess must be a finite number > 0",
        ),
        (
            vec!["--target-rhat", "1"],
            "--target-rhat must be a finite number > 1",
        ),
        (vec!["--max-steps", "0"], "--max-steps must be at least 1"),
        (
            vec!["--max-steps", "4000", "--burn-in", "4000"],
            "must be smaller than --max-steps",
        ),
        (vec!["--adapt", "full"], "invalid value 'full'"),
    ] {
        let args: Vec<&str> = [&["fit", "--out", o][..], &args].concat();
        expect_no_output(&args, &out, &[needle]);
    }
    // Fixed by a checkpoint: not allowed with --resume.
    expect(
        &["fit", "--resume", o, "--target-ess", "100"],
        2,
        &["cannot be used with"],
    );
    // The help documents the exit code.
    let help = langevin(&["fit", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--require-converged"), "{help}");
}

/// Issue 14: every bundled set with its default model ends converged with
/// no option but `--data` (digits takes about 7 minutes in a debug build).
#[test]
#[ignore = "long (about 9 minutes): cargo test -p langevin-cli --test cli_converge -- --ignored every_bundled_set_converges_by_default --nocapture"]
fn every_bundled_set_converges_by_default() {
    let dir = tempdir();
    for data in [
        "iris_virginica",
        "iris",
        "wine",
        "breast_cancer",
        "diabetes",
        "digits",
    ] {
        let out = dir.path().join(data);
        let t = std::time::Instant::now();
        ok(&[
            "fit",
            "-q",
            "--no-plots",
            "--data",
            data,
            "--out",
            path_str(&out),
        ]);
        let s = summary(&out);
        eprintln!(
            "{data}: converged {} after {} steps per chain in {:.1} s ({})",
            s["converged"],
            s["steps_done"],
            t.elapsed().as_secs_f64(),
            s["convergence"]["reason"]
        );
        assert_eq!(s["converged"], true, "{data}: {}", s["convergence"]);
    }
}
