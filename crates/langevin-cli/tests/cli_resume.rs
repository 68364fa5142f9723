//! Checkpoint and resume of `langevin fit`: a run killed with SIGKILL at
//! random moments and resumed with `--resume DIR` until it completes writes a
//! `samples.csv` byte-identical to an uninterrupted run with the same seed.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_langevin"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn spawn(args: &[&str]) -> Child {
    bin()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

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

fn params(dir: &Path) -> serde_json::Value {
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    s["params"].clone()
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
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    let r = reference.to_str().unwrap();
    let t0 = Instant::now();
    let out = run(&fit_args(r, &[]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t_ref = t0.elapsed().as_secs_f64();
    let expected = std::fs::read(reference.join("samples.csv")).unwrap();
    assert!(expected.len() > 1000);
    assert!(!reference.join("checkpoint.json").exists());

    // Checkpointing changes nothing in the output.
    let plain = tmp.path().join("checkpointed");
    let p = plain.to_str().unwrap();
    let out = run(&fit_args(p, &["--checkpoint-every", "700"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(plain.join("samples.csv")).unwrap() == expected);
    assert!(
        !plain.join("checkpoint.json").exists(),
        "a complete run removes its checkpoint"
    );

    // Kill it at random moments, several times, resuming each time.
    for seed in [1u64, 2] {
        let dir = tmp.path().join(format!("killed{seed}"));
        let d = dir.to_str().unwrap();
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
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                interrupted += 1;
            }
            child.wait().unwrap();
            if dir.join("summary.json").exists() {
                break;
            }
        }
        if !dir.join("summary.json").exists() {
            let out = run(&resume);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
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
        assert_eq!(params(&dir), params(&reference));
    }
}

#[test]
fn resume_refuses_what_it_cannot_continue() {
    let tmp = tempfile::tempdir().unwrap();
    // No such directory.
    let missing = tmp.path().join("nope");
    let out = run(&["fit", "--resume", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such directory"));

    // A run without checkpoints.
    let plain = tmp.path().join("plain");
    let out = run(&[
        "fit",
        "--steps",
        "2000",
        "--quiet",
        "--no-plots",
        "--out",
        plain.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    std::fs::remove_file(plain.join("summary.json")).unwrap();
    let out = run(&["fit", "--resume", plain.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("checkpoint.json") && err.contains("--checkpoint-every"),
        "{err}"
    );

    // Options fixed by the checkpoint cannot be given again.
    let out = run(&["fit", "--resume", plain.to_str().unwrap(), "--steps", "10"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--steps"));

    // --checkpoint-every 0.
    let out = run(&[
        "fit",
        "--checkpoint-every",
        "0",
        "--out",
        tmp.path().join("z").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--checkpoint-every"));

    // The data file changed under a checkpointed run.
    let data = tmp.path().join("data.csv");
    let mut csv = String::from("a,b,y\n");
    for i in 0..60 {
        let x = i as f64 / 10.0;
        csv.push_str(&format!(
            "{x},{},{}\n",
            (x * 1.7).sin(),
            i32::from(x + (x * 3.1).cos() > 3.0)
        ));
    }
    std::fs::write(&data, &csv).unwrap();
    let dir = tmp.path().join("changed");
    let d = dir.to_str().unwrap();
    let mut child = spawn(&[
        "fit",
        "--data",
        data.to_str().unwrap(),
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
    let t0 = Instant::now();
    while steps_done(&dir).unwrap_or(0) == 0 && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // While it runs, neither a resume nor a fresh run may touch its directory.
    for args in [
        vec!["fit", "--resume", d, "--quiet"],
        vec!["fit", "--steps", "100", "--quiet", "--out", d],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("in use by another langevin process"), "{err}");
    }
    assert!(dir.join("checkpoint.json").exists() && dir.join("run.json").exists());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(steps_done(&dir).unwrap() > 0);
    std::fs::write(&data, csv.replace("0.5,", "0.55,")).unwrap();
    let out = run(&["fit", "--resume", d, "--quiet"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("differ from the checkpoint"), "{err}");
    assert!(!dir.join("summary.json").exists());
}
