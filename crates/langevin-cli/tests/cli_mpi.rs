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
