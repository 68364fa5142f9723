//! `mpirun -np K langevin fit ...` (cargo feature `mpi`): the folder rank 0
//! writes is the single process's for any K (`samples.csv`, `run.json` and
//! the plots byte for byte, `summary.json` but for the seconds), for a run of
//! fixed length and for a run until converged; a failing rank ends the run
//! on every rank with a clear message from rank 0 and a checkpoint that
//! resumes with another K; bad input ends the job with exit code 2, never
//! a hang.
//!
//! Built only with the feature (`cargo test -p langevin-cli --features mpi
//! --test cli_mpi`, as `.ci/run` does); it fails, not skips, without
//! `mpirun` (Debian: `apt-get install openmpi-bin libopenmpi-dev`).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ok, path_str, tempdir};

/// `mpirun --allow-run-as-root --oversubscribe -np K langevin ARGS`, with
/// `env`, killed (and the test failed) after two minutes: a run that hangs
/// is a failure.
fn mpirun(k: usize, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("mpirun");
    cmd.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &k.to_string(),
    ])
    .arg(env!("CARGO_BIN_EXE_langevin"))
    .args(args)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot start mpirun ({e}): these tests need Open MPI \
             (apt-get install -y openmpi-bin libopenmpi-dev)"
        )
    });
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("mpirun -np {k} langevin {args:?} hung for two minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn mpi_ok(k: usize, args: &[&str]) {
    let out = mpirun(k, args, &[]);
    assert!(
        out.status.success(),
        "mpirun -np {k} langevin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn without_seconds(dir: &Path) -> serde_json::Value {
    let mut s = common::summary(dir);
    s.as_object_mut().unwrap().remove("seconds");
    s
}

fn assert_same_run(a: &Path, b: &Path, files: &[&str]) {
    for f in files {
        let (x, y) = (
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
        );
        assert!(
            x == y,
            "{f} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
    assert_eq!(without_seconds(a), without_seconds(b));
}

#[test]
fn any_number_of_ranks_writes_the_single_process_folder() {
    let tmp = tempdir();
    let run = ["--steps", "3000", "--chains", "4", "--seed", "5", "--quiet"];
    let single = tmp.path().join("single");
    ok(&[&["fit"][..], &run, &["--out", path_str(&single)]].concat());
    for k in [1, 2, 3] {
        let dir = tmp.path().join(format!("k{k}"));
        mpi_ok(
            k,
            &[&["fit"][..], &run, &["--out", path_str(&dir)]].concat(),
        );
        assert_same_run(
            &single,
            &dir,
            &[
                "samples.csv",
                "run.json",
                "trace.png",
                "marginals.png",
                "reliability.png",
            ],
        );
    }
    // Until converged: rank 0 judges every chain's draws and tells the
    // others when to stop.
    let until = [
        "--chains",
        "4",
        "--seed",
        "5",
        "--quiet",
        "--no-plots",
        "--max-steps",
        "20000",
    ];
    let single = tmp.path().join("until1");
    ok(&[&["fit"][..], &until, &["--out", path_str(&single)]].concat());
    let two = tmp.path().join("until2");
    mpi_ok(
        2,
        &[&["fit"][..], &until, &["--out", path_str(&two)]].concat(),
    );
    assert_same_run(&single, &two, &["samples.csv", "run.json"]);
    assert!(common::summary(&two)["steps_done"].as_u64().unwrap() < 20_000);
}

#[test]
fn a_failing_rank_ends_the_run_and_it_resumes_with_another_k() {
    let tmp = tempdir();
    let run = ["--steps", "3000", "--chains", "4", "--seed", "2", "--quiet"];
    let single = tmp.path().join("single");
    ok(&[&["fit"][..], &run, &["--out", path_str(&single)]].concat());
    let dir = tmp.path().join("failed");
    let d = path_str(&dir);
    // Rank 1's chains fail at step 1000.
    let out = mpirun(
        2,
        &[
            &["fit"][..],
            &run,
            &["--out", d, "--checkpoint-every", "500"],
        ]
        .concat(),
        &[("LANGEVIN_TEST_FAIL_RANK", "1")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("error: rank 1: chain ") && err.contains("injected failure"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!dir.join("summary.json").exists());
    assert!(dir.join("checkpoint.json").is_file());
    // Written by 2 ranks, resumed by 3: the single process's draws.
    mpi_ok(3, &["fit", "--resume", d, "--quiet"]);
    assert_same_run(&single, &dir, &["samples.csv", "run.json", "trace.png"]);
    // And by 1.
    let again = tmp.path().join("again");
    let a = path_str(&again);
    let out = mpirun(
        3,
        &[
            &["fit"][..],
            &run,
            &["--out", a, "--checkpoint-every", "500"],
        ]
        .concat(),
        &[("LANGEVIN_TEST_FAIL_RANK", "2")],
    );
    assert_eq!(out.status.code(), Some(2));
    ok(&["fit", "--resume", a, "--quiet"]);
    assert_same_run(&single, &again, &["samples.csv"]);
}

#[test]
fn bad_input_ends_the_job_without_a_hang() {
    let tmp = tempdir();
    let out_dir = tmp.path().join("bad");
    let out = mpirun(
        2,
        &[
            "fit",
            "--steps",
            "100",
            "--step-size",
            "-1",
            "--quiet",
            "--out",
            path_str(&out_dir),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--step-size"), "{err}");
    let out = mpirun(
        2,
        &[
            "fit",
            "--steps",
            "100",
            "--chains",
            "2",
            "--chain-range",
            "0..1",
            "--quiet",
            "--out",
            path_str(&out_dir),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--chain-range is for runs without MPI"),
        "{err}"
    );
}

/// The processes whose parent is `parent` (from /proc).
fn children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        if rest.split_whitespace().nth(1) == Some(&parent.to_string()) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn a_killed_rank_ends_the_job_and_the_run_resumes() {
    let tmp = tempdir();
    let run = [
        "--steps",
        "40000",
        "--chains",
        "4",
        "--seed",
        "8",
        "--quiet",
        "--no-plots",
    ];
    let single = tmp.path().join("single");
    ok(&[&["fit"][..], &run, &["--out", path_str(&single)]].concat());
    let dir = tmp.path().join("killed");
    let d = path_str(&dir);
    let mut mpirun = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
        .arg(env!("CARGO_BIN_EXE_langevin"))
        .args(
            [
                &["fit"][..],
                &run,
                &["--out", d, "--checkpoint-every", "2000"],
            ]
            .concat(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start mpirun: these tests need Open MPI");
    let started = common::wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(dir.join("checkpoint.json"))
            .map(|t| !t.contains("\"steps_done\": 0,"))
            .unwrap_or(false)
    });
    assert!(started, "no checkpoint past step 0");
    let ranks: Vec<u32> = children(mpirun.id())
        .into_iter()
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .map(|c| c.contains("langevin"))
                .unwrap_or(false)
        })
        .collect();
    assert!(!ranks.is_empty(), "no rank processes under mpirun");
    let killed = Command::new("kill")
        .args(["-9", &ranks[ranks.len() - 1].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The job ends (no rank waits forever) with a failure.
    let ended = common::wait_until(Duration::from_secs(60), || {
        mpirun.try_wait().unwrap().is_some()
    });
    if !ended {
        let _ = mpirun.kill();
        panic!("mpirun did not end after a rank was killed");
    }
    let status = mpirun.wait().unwrap();
    assert!(
        !dir.join("summary.json").exists(),
        "the run finished before the kill landed"
    );
    assert!(!status.success());
    // The last checkpoint resumes, here without mpirun.
    ok(&["fit", "--resume", d, "--quiet", "--no-plots"]);
    assert_same_run(&single, &dir, &["samples.csv", "run.json"]);
}

/// A logistic-regression CSV of `n` rows (5 features, known weights),
/// from a fixed generator: `a,b,c,e,g,y`.
fn logistic_csv(dir: &Path, n: usize) -> String {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut uniform = move || {
        // SplitMix64.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let w = [0.8, -1.2, 0.5, 0.0, 2.0];
    let mut text = String::from("a,b,c,e,g,y\n");
    for _ in 0..n {
        let x: Vec<f64> = (0..5)
            .map(|_| {
                let (u, v) = (uniform().max(1e-300), uniform());
                (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
            })
            .collect();
        let eta = 0.3 + x.iter().zip(w).map(|(a, b)| a * b).sum::<f64>();
        let y = u8::from(uniform() < 1.0 / (1.0 + (-eta).exp()));
        for v in &x {
            text.push_str(&format!("{v:.5},"));
        }
        text.push_str(&format!("{y}\n"));
    }
    common::write(dir, "big.csv", text)
}

/// `--data-parallel`: one process gives the plain run's draws bit for bit
/// (the same minibatches, one shard weighted 1); two ranks give the same
/// bits on every run; and with control variates (the large-N route) two
/// ranks reach the single process's posterior within Monte Carlo error.
/// Target: the posterior of a 5-feature logistic regression on 40 000
/// rows (32 000 training). Seed 1 for both runs until converged (every
/// bulk ESS >= 400, R-hat <= 1.01): the seed also draws the train/test
/// split, and two seeds are two training sets whose posteriors differ by
/// about a posterior sd (measured), so the runs share the seed, hence their
/// random numbers, and differ only by the rounding of the sums over ranks,
/// which the chains amplify. Tolerance per parameter: |Δ mean| <= 4.5 sqrt(se₁² + se₂²) with
/// se = sd / sqrt(ESS_bulk), and |ln(sd₁/sd₂)| <= 4.5 sqrt(1/(2 ESS₁) +
/// 1/(2 ESS₂)) (the Gaussian standard error of a log standard deviation);
/// 4.5 standard errors over 6 parameters and 2 statistics make a false
/// alarm less likely than 1e-4. The sampler and its step-size adaptation
/// are the same in both, so their discretisation bias is too: only the
/// sum over ranks differs. A gradient summed with wrong weights (one
/// rank's rows counted twice, the prior counted per rank) moves the sds by
/// ~40 % and is caught.
#[test]
fn data_parallel_ranks_reach_the_single_process_posterior() {
    let tmp = tempdir();
    let data = logistic_csv(tmp.path(), 40_000);
    let fixed = [
        "--data",
        &data,
        "--target",
        "y",
        "--steps",
        "2000",
        "--chains",
        "2",
        "--seed",
        "1",
        "--quiet",
        "--no-plots",
    ];
    let plain = tmp.path().join("plain");
    ok(&[&["fit"][..], &fixed, &["--out", path_str(&plain)]].concat());
    let one = tmp.path().join("one");
    ok(&[
        &["fit"][..],
        &fixed,
        &["--data-parallel", "--out", path_str(&one)],
    ]
    .concat());
    assert_same_run(&plain, &one, &["samples.csv", "run.json"]);
    let (a, b) = (tmp.path().join("k2a"), tmp.path().join("k2b"));
    for dir in [&a, &b] {
        mpi_ok(
            2,
            &[
                &["fit"][..],
                &fixed,
                &["--data-parallel", "--out", path_str(dir)],
            ]
            .concat(),
        );
    }
    assert_same_run(&a, &b, &["samples.csv", "run.json"]);

    let until = |seed: &'static str| {
        vec![
            "--data",
            &data,
            "--target",
            "y",
            "--control-variates",
            "--chains",
            "4",
            "--seed",
            seed,
            "--quiet",
            "--no-plots",
        ]
    };
    let single = tmp.path().join("single");
    ok(&[&["fit"][..], &until("1"), &["--out", path_str(&single)]].concat());
    let two = tmp.path().join("two");
    mpi_ok(
        2,
        &[
            &["fit"][..],
            &until("1"),
            &["--data-parallel", "--out", path_str(&two)],
        ]
        .concat(),
    );
    let (s1, s2) = (common::summary(&single), common::summary(&two));
    for s in [&s1, &s2] {
        assert_eq!(s["converged"], serde_json::Value::Bool(true), "{s}");
    }
    let params = |s: &serde_json::Value| s["params"].as_array().unwrap().clone();
    for (p, q) in params(&s1).iter().zip(params(&s2)) {
        let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
        let (m1, m2, sd1, sd2) = (f(p, "mean"), f(&q, "mean"), f(p, "sd"), f(&q, "sd"));
        let (e1, e2) = (f(p, "ess_bulk"), f(&q, "ess_bulk"));
        let se = (sd1 * sd1 / e1 + sd2 * sd2 / e2).sqrt();
        assert!(
            (m1 - m2).abs() <= 4.5 * se,
            "{}: mean {m1} (one process) vs {m2} (two ranks), se {se}",
            p["name"]
        );
        let se_log = (0.5 / e1 + 0.5 / e2).sqrt();
        assert!(
            (sd1 / sd2).ln().abs() <= 4.5 * se_log,
            "{}: sd {sd1} (one process) vs {sd2} (two ranks), se of ln sd {se_log}",
            p["name"]
        );
    }
}

/// `--data-parallel` failures: a bad cell in rank 1's shard is reported by
/// rank 0 with the file's own line (exit 2, no folder); a rank whose
/// gradient fails ends the run on every rank with a checkpoint that
/// resumes (same number of ranks) to the uninterrupted run's draws, and a
/// resume with another number of ranks is refused with the reason.
#[test]
fn data_parallel_failures_end_the_job_and_it_resumes() {
    let tmp = tempdir();
    let data = logistic_csv(tmp.path(), 4000);
    let text = common::read(&data);
    let mut lines: Vec<&str> = text.lines().collect();
    lines[3000] = "0.1,abc,0.2,0.3,0.4,1"; // line 3001, in rank 1's half
    let bad = common::write(tmp.path(), "bad.csv", lines.join("\n") + "\n");
    let out_dir = tmp.path().join("bad");
    let out = mpirun(
        2,
        &[
            "fit",
            "--data",
            &bad,
            "--target",
            "y",
            "--steps",
            "500",
            "--data-parallel",
            "--quiet",
            "--out",
            path_str(&out_dir),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad.csv:3001: column `b`: `abc` is not a number (on rank 1)"),
        "{err}"
    );
    assert!(!out_dir.exists());

    let run = [
        "--data",
        &data,
        "--target",
        "y",
        "--steps",
        "3000",
        "--chains",
        "2",
        "--seed",
        "3",
        "--quiet",
        "--no-plots",
        "--data-parallel",
        "--checkpoint-every",
        "500",
    ];
    let whole = tmp.path().join("whole");
    mpi_ok(
        2,
        &[&["fit"][..], &run, &["--out", path_str(&whole)]].concat(),
    );
    let dir = tmp.path().join("failed");
    let d = path_str(&dir);
    let out = mpirun(
        2,
        &[&["fit"][..], &run, &["--out", d]].concat(),
        &[("LANGEVIN_TEST_FAIL_RANK", "1")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: chain 0: rank 1: the gradient of its shard of the rows failed"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(dir.join("checkpoint.json").is_file());
    let out = mpirun(3, &["fit", "--resume", d, "--quiet"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("resumes with as many ranks as it started with"),
        "{err}"
    );
    mpi_ok(2, &["fit", "--resume", d, "--quiet", "--no-plots"]);
    assert_same_run(&whole, &dir, &["samples.csv", "run.json"]);
}
