//! Helpers shared by the black-box tests of the `langevin` binary: running it,
//! checking its exit code and messages, temporary folders, reading the files a
//! run writes (summary.json, run.json, samples.csv, PNGs), and driving
//! background runs (waiting for a file, killing the process).
//!
//! Each test file pulls them in with `mod common;`. Not every file uses every
//! helper, hence the `dead_code` allowance below (it applies to this module only).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

/// A `Command` for the `langevin` binary that cargo built for these tests.
pub fn command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_langevin"))
}

/// Runs `langevin args` to completion and returns its exit status and output,
/// whatever the exit code.
pub fn langevin(args: &[&str]) -> Output {
    command().args(args).output().unwrap()
}

/// Runs `langevin args`, asserts that it succeeded (the message shows the
/// arguments and stderr) and returns its output.
pub fn ok(args: &[&str]) -> Output {
    let out = langevin(args);
    assert!(
        out.status.success(),
        "langevin {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `langevin args`, asserts that it exited with `code` and returns its
/// stderr for the caller's own checks.
pub fn fails(args: &[&str], code: i32) -> String {
    let out = langevin(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "langevin {args:?}: {err}");
    err
}

/// Runs `langevin args` and expects exit code `code`, a stderr containing
/// every one of `needles`, and no panic.
pub fn expect(args: &[&str], code: i32, needles: &[&str]) {
    let err = fails(args, code);
    for n in needles {
        assert!(
            err.contains(n),
            "langevin {args:?}: stderr lacks `{n}`: {err}"
        );
    }
    assert!(!err.contains("panicked"), "{err}");
}

/// A failure before the run starts: exit code 2, the `needles` in stderr
/// (see [`expect`]), and no output directory `out` created at all (so nothing
/// can claim success).
pub fn expect_no_output(args: &[&str], out: &Path, needles: &[&str]) {
    expect(args, 2, needles);
    assert!(
        !out.exists(),
        "langevin {args:?} left {} behind",
        out.display()
    );
}

/// Runs `langevin fit ARGS --out OUT`, asserts that it succeeded and returns
/// the run's `summary.json`.
pub fn fit(out: &Path, args: &[&str]) -> serde_json::Value {
    ok(&[&["fit"], args, &["--out", path_str(out)]].concat());
    summary(out)
}

/// Runs `langevin predict --run RUN --data DATA --out OUT`, asserts that it
/// succeeded and returns the CSV it wrote.
pub fn predict(run: &str, data: &str, out: &Path) -> String {
    ok(&[
        "predict",
        "--run",
        run,
        "--data",
        data,
        "--out",
        path_str(out),
    ]);
    read(out)
}

// ---------------------------------------------------------------------------
// Background runs
// ---------------------------------------------------------------------------

/// Starts `langevin args` in the background, its stdout and stderr discarded.
pub fn spawn(args: &[&str]) -> Child {
    command()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Kills `child` with SIGKILL if it is still running, then reaps it. Returns
/// whether it was still running (that is, whether the kill landed mid-run).
pub fn kill(child: &mut Child) -> bool {
    let running = child.try_wait().unwrap().is_none();
    if running {
        child.kill().unwrap();
    }
    child.wait().unwrap();
    running
}

/// Polls `done` every 50 ms until it holds or `timeout` has passed; returns
/// its last value.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while !done() {
        if t0.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

// ---------------------------------------------------------------------------
// Files and folders
// ---------------------------------------------------------------------------

/// A fresh temporary folder, removed when the returned guard is dropped.
pub fn tempdir() -> TempDir {
    tempfile::tempdir().unwrap()
}

/// `path` as a `&str` for the command line (the test folders are UTF-8).
pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Writes `contents` to `dir/name` and returns that path as a string, ready
/// to be passed as an argument.
pub fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> String {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    path_str(&p).to_string()
}

/// The whole text of the file at `path`.
pub fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// The JSON document in the file at `path`.
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&read(path)).unwrap()
}

/// The `summary.json` of the run folder `dir`.
pub fn summary(dir: &Path) -> serde_json::Value {
    json(&dir.join("summary.json"))
}

/// A JSON array of numbers as a vector.
pub fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Asserts that the file at `path` starts with the PNG signature.
pub fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..4], b"\x89PNG", "{}", path.display());
}

// ---------------------------------------------------------------------------
// samples.csv and statistics of draws
// ---------------------------------------------------------------------------

/// The header line of `dir/samples.csv`.
pub fn header(dir: &Path) -> String {
    read(dir.join("samples.csv"))
        .lines()
        .next()
        .unwrap()
        .to_string()
}

/// The number of data rows (lines after the header) of `dir/samples.csv`.
pub fn sample_rows(dir: &Path) -> usize {
    read(dir.join("samples.csv")).lines().count() - 1
}

/// Draws of `dir/samples.csv` per parameter (all chains pooled, in file
/// order) and the number of distinct chains.
pub fn draws(dir: &Path) -> (Vec<Vec<f64>>, usize) {
    let text = read(dir.join("samples.csv"));
    let mut lines = text.lines();
    let p = lines.next().unwrap().split(',').count() - 2;
    let mut cols = vec![Vec::new(); p];
    let mut chains = BTreeSet::new();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        chains.insert(f[0].to_string());
        for j in 0..p {
            cols[j].push(f[j + 2].parse::<f64>().unwrap());
        }
    }
    (cols, chains.len())
}

/// Sample mean and sample standard deviation (divisor `n - 1`) of `x`.
pub fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, v.sqrt())
}

// ---------------------------------------------------------------------------
// Reference posteriors
// ---------------------------------------------------------------------------

/// Every diabetes row standardised with the statistics saved in run.json: the design
/// matrix with the intercept column last, and the standardised target.
pub fn diabetes_design(run: &serde_json::Value) -> (Vec<Vec<f64>>, Vec<f64>) {
    let ds = langevin_models::bundled::find("diabetes")
        .unwrap()
        .load(None)
        .unwrap();
    let d = ds.d();
    let mean = floats(&run["standardizer"]["mean"]);
    let sd = floats(&run["standardizer"]["sd"]);
    let ts = floats(&run["target_scaler"]);
    let x =
        ds.x.chunks_exact(d)
            .map(|row| {
                let mut r: Vec<f64> = row
                    .iter()
                    .zip(mean.iter().zip(&sd))
                    .map(|(v, (m, s))| (v - m) / s)
                    .collect();
                r.push(1.0);
                r
            })
            .collect();
    let y = ds.y.iter().map(|v| (v - ts[0]) / ts[1]).collect();
    (x, y)
}

/// The exact posterior of the linear model `fit --data diabetes --model
/// linear --noise-sd SIGMA --test-fraction 0` (every row, standardised with
/// the statistics saved in run.json): mean and covariance.
pub fn conjugate_posterior(
    run: &serde_json::Value,
    sigma: f64,
    prior_sd: f64,
) -> (Vec<f64>, Vec<f64>) {
    let (x, y) = diabetes_design(run);
    let p = x[0].len();
    let mut prec = vec![0.0; p * p];
    let mut b = vec![0.0; p];
    for (xt, y) in x.iter().zip(&y) {
        for a in 0..p {
            b[a] += xt[a] * y / (sigma * sigma);
            for c in 0..p {
                prec[a * p + c] += xt[a] * xt[c] / (sigma * sigma);
            }
        }
    }
    for a in 0..p {
        prec[a * p + a] += 1.0 / (prior_sd * prior_sd);
    }
    // Covariance by Gauss-Jordan elimination (P is well conditioned here).
    let mut m = prec.clone();
    let mut inv = vec![0.0; p * p];
    for a in 0..p {
        inv[a * p + a] = 1.0;
    }
    for c in 0..p {
        let piv = m[c * p + c];
        for k in 0..p {
            m[c * p + k] /= piv;
            inv[c * p + k] /= piv;
        }
        for r in 0..p {
            if r != c {
                let f = m[r * p + c];
                for k in 0..p {
                    m[r * p + k] -= f * m[c * p + k];
                    inv[r * p + k] -= f * inv[c * p + k];
                }
            }
        }
    }
    let mu = (0..p)
        .map(|a| (0..p).map(|c| inv[a * p + c] * b[c]).sum())
        .collect();
    (mu, inv)
}
