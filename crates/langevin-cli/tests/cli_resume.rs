//! Checkpoint and resume of `langevin fit`: a run killed with SIGKILL at
//! random moments and resumed with `--resume DIR` until it completes writes a
//! `samples.csv` byte-identical to an uninterrupted run with the same seed.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{fails, fit, kill, ok, path_str, spawn, summary, tempdir, wait_until, write};

/// A small deterministic generator for the kill delays (the test must not
/// depend on a lucky draw, so it asserts that kills did land mid-run).
struct SplitMix(u64);
impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn steps_done(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("checkpoint.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["steps_done"].as_u64()
}

const STEPS: &str = "20000";

fn fit_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "fit",
        "--steps",
        STEPS,
        "--chains",
        "3",
        "--seed",
        "5",
        "--quiet",
        "--no-plots",
        "--out",
        out,
    ];
    a.extend_from_slice(extra);
    a
}

#[test]
fn killed_and_resumed_run_is_byte_identical_to_an_uninterrupted_one() {
    let tmp = tempdir();
    let reference = tmp.path().join("reference");
    let r = path_str(&reference);
    let t0 = Instant::now();
    ok(&fit_args(r, &[]));
    let t_ref = t0.elapsed().as_secs_f64();
    let expected = std::fs::read(reference.join("samples.csv")).unwrap();
    assert!(expected.len() > 1000);
    assert!(!reference.join("checkpoint.json").exists());

    // Checkpointing changes nothing in the output.
    let plain = tmp.path().join("checkpointed");
    let p = path_str(&plain);
    ok(&fit_args(p, &["--checkpoint-every", "700"]));
    assert!(std::fs::read(plain.join("samples.csv")).unwrap() == expected);
    assert!(
        !plain.join("checkpoint.json").exists(),
        "a complete run removes its checkpoint"
    );

    // Kill it at random moments, several times, resuming each time.
    for seed in [1u64, 2] {
        let dir = tmp.path().join(format!("killed{seed}"));
        let d = path_str(&dir);
        let first = fit_args(d, &["--checkpoint-every", "500"]);
        let resume = ["fit", "--resume", d, "--quiet", "--no-plots"];
        let mut rng = SplitMix(seed);
        let mut interrupted = 0;
        let mut resumed_from = Vec::new();
        for attempt in 0..6 {
            let started = dir.join("checkpoint.json").exists();
            if started {
                resumed_from.push(steps_done(&dir).unwrap());
            }
            let mut child = if attempt == 0 || !started {
                spawn(&first)
            } else {
                spawn(&resume)
            };
            // Three attempts take at most 3/4 of an uninterrupted run, so at
            // least three kills land before the end.
            let delay = (0.02 + 0.23 * rng.next_f64()) * t_ref;
            std::thread::sleep(Duration::from_secs_f64(delay));
            if kill(&mut child) {
                interrupted += 1;
            }
            if dir.join("summary.json").exists() {
                break;
            }
        }
        if !dir.join("summary.json").exists() {
            ok(&resume);
        }
        assert!(
            interrupted >= 3,
            "seed {seed}: only {interrupted} kills landed mid-run"
        );
        assert!(
            resumed_from.iter().any(|&s| s > 0),
            "seed {seed}: never resumed from a mid-run checkpoint: {resumed_from:?}"
        );
        let got = std::fs::read(dir.join("samples.csv")).unwrap();
        assert!(
            got == expected,
            "seed {seed}: samples.csv differs after resuming from {resumed_from:?} \
             ({} vs {} bytes)",
            got.len(),
            expected.len()
        );
        assert_eq!(summary(&dir)["params"], summary(&reference)["params"]);
    }
}

#[test]
fn resume_refuses_what_it_cannot_continue() {
    let tmp = tempdir();
    // No such directory.
    let missing = tmp.path().join("nope");
    let err = fails(&["fit", "--resume", path_str(&missing)], 2);
    assert!(err.contains("no such directory"));

    // A run without checkpoints.
    let plain = tmp.path().join("plain");
    fit(&plain, &["--steps", "2000", "--quiet", "--no-plots"]);
    std::fs::remove_file(plain.join("summary.json")).unwrap();
    let err = fails(&["fit", "--resume", path_str(&plain)], 2);
    assert!(
        err.contains("checkpoint.json") && err.contains("--checkpoint-every"),
        "{err}"
    );

    // Options fixed by the checkpoint cannot be given again.
    let err = fails(&["fit", "--resume", path_str(&plain), "--steps", "10"], 2);
    assert!(err.contains("--steps"));

    // --checkpoint-every 0.
    let err = fails(
        &[
            "fit",
            "--checkpoint-every",
            "0",
            "--out",
            path_str(&tmp.path().join("z")),
        ],
        2,
    );
    assert!(err.contains("--checkpoint-every"));

    // The data file changed under a checkpointed run.
    let mut csv = String::from("a,b,y\n");
    for i in 0..60 {
        let x = i as f64 / 10.0;
        csv.push_str(&format!(
            "{x},{},{}\n",
            (x * 1.7).sin(),
            i32::from(x + (x * 3.1).cos() > 3.0)
        ));
    }
    let data = write(tmp.path(), "data.csv", &csv);
    let dir = tmp.path().join("changed");
    let d = path_str(&dir);
    let mut child = spawn(&[
        "fit",
        "--data",
        &data,
        "--target",
        "y",
        "--steps",
        "2000000",
        "--checkpoint-every",
        "1000",
        "--quiet",
        "--no-plots",
        "--out",
        d,
    ]);
    wait_until(Duration::from_secs(120), || {
        steps_done(&dir).unwrap_or(0) > 0
    });
    // While it runs, neither a resume nor a fresh run may touch its directory.
    for args in [
        vec!["fit", "--resume", d, "--quiet"],
        vec!["fit", "--steps", "100", "--quiet", "--out", d],
    ] {
        let err = fails(&args, 2);
        assert!(err.contains("in use by another langevin process"), "{err}");
    }
    assert!(dir.join("checkpoint.json").exists() && dir.join("run.json").exists());
    kill(&mut child);
    assert!(steps_done(&dir).unwrap() > 0);
    write(tmp.path(), "data.csv", csv.replace("0.5,", "0.55,"));
    let err = fails(&["fit", "--resume", d, "--quiet"], 2);
    assert!(err.contains("differ from the checkpoint"), "{err}");
    assert!(!dir.join("summary.json").exists());
}
