//! A run split into parts (`fit --chain-range A..B`, as a job array runs it)
//! and merged (`langevin merge`) is the single run: `samples.csv`,
//! `run.json` and the plots byte for byte, `summary.json` but for the
//! seconds. Parts that do not make one run are refused with exit code 2.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{expect, kill, ok, path_str, spawn, tempdir, wait_until};

const RUN: &[&str] = &[
    "--steps", "3000", "--chains", "4", "--seed", "11", "--quiet",
];

fn fit_part(out: &Path, range: &str, extra: &[&str]) {
    ok(&[
        &["fit"],
        RUN,
        &["--chain-range", range, "--out", path_str(out)],
        extra,
    ]
    .concat());
}

fn without_seconds(dir: &Path) -> serde_json::Value {
    let mut s = common::summary(dir);
    s.as_object_mut().unwrap().remove("seconds");
    s
}

fn assert_same_run(a: &Path, b: &Path) {
    for f in [
        "samples.csv",
        "run.json",
        "trace.png",
        "marginals.png",
        "reliability.png",
    ] {
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
fn merged_parts_are_the_single_run() {
    let tmp = tempdir();
    let full = tmp.path().join("full");
    ok(&[&["fit"], RUN, &["--out", path_str(&full)]].concat());
    let (p0, p1, p2) = (
        tmp.path().join("p0"),
        tmp.path().join("p1"),
        tmp.path().join("p2"),
    );
    fit_part(&p0, "0..1", &[]);
    // Checkpointing and threads change nothing in a part either.
    fit_part(
        &p1,
        "1..3",
        &["--checkpoint-every", "700", "--threads", "1"],
    );
    fit_part(&p2, "3..4", &[]);
    for p in [&p0, &p1, &p2] {
        assert!(p.join("part.json").is_file());
        assert!(!p.join("summary.json").exists(), "a part is not a run");
        assert!(!p.join("checkpoint.json").exists());
    }
    // The rows of a part are the single run's rows of its chains.
    let rows = |dir: &Path, keep: &dyn Fn(usize) -> bool| -> Vec<String> {
        common::read(dir.join("samples.csv"))
            .lines()
            .skip(1)
            .filter(|l| keep(l.split(',').next().unwrap().parse().unwrap()))
            .map(String::from)
            .collect()
    };
    assert_eq!(rows(&p1, &|_| true), rows(&full, &|c| (1..3).contains(&c)));

    let merged = tmp.path().join("merged");
    // Parts in any order.
    ok(&[
        "merge",
        path_str(&p2),
        path_str(&p0),
        path_str(&p1),
        "--out",
        path_str(&merged),
        "--quiet",
    ]);
    assert_same_run(&full, &merged);
    // The merged folder is a run like any other.
    ok(&["diagnose", "--run", path_str(&merged)]);
}

#[test]
fn a_killed_part_resumes_to_the_same_draws() {
    let tmp = tempdir();
    let long = [
        "--steps",
        "40000",
        "--chains",
        "2",
        "--seed",
        "3",
        "--quiet",
        "--no-plots",
    ];
    let whole = tmp.path().join("whole");
    ok(&[
        &["fit"][..],
        &long,
        &["--chain-range", "1..2", "--out", path_str(&whole)],
    ]
    .concat());
    let dir = tmp.path().join("killed");
    let d = path_str(&dir);
    let mut child = spawn(
        &[
            &["fit"][..],
            &long,
            &[
                "--chain-range",
                "1..2",
                "--out",
                d,
                "--checkpoint-every",
                "2000",
            ],
        ]
        .concat(),
    );
    let started = wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(dir.join("checkpoint.json"))
            .map(|t| t.contains("\"steps_done\": 2000") || t.contains("\"steps_done\": 4000"))
            .unwrap_or(false)
    });
    let landed = kill(&mut child);
    assert!(started);
    if landed {
        assert!(!dir.join("part.json").exists());
        ok(&["fit", "--resume", d, "--quiet"]);
    }
    assert!(dir.join("part.json").is_file());
    assert!(
        std::fs::read(dir.join("samples.csv")).unwrap()
            == std::fs::read(whole.join("samples.csv")).unwrap()
    );
}

#[test]
fn parts_that_are_not_one_run_are_refused() {
    let tmp = tempdir();
    let t = |n: &str| tmp.path().join(n);
    fit_part(&t("a"), "0..2", &[]);
    fit_part(&t("b"), "1..4", &[]);
    fit_part(&t("c"), "2..3", &[]);
    let out = t("out");
    let o = path_str(&out);
    let (a, b, c) = (t("a"), t("b"), t("c"));
    let (a, b, c) = (path_str(&a), path_str(&b), path_str(&c));
    expect(
        &["merge", a, b, "--out", o],
        2,
        &["chains 1..2 are in two parts", "overlap"],
    );
    expect(
        &["merge", a, c, "--out", o],
        2,
        &["chains 3..4", "in no part", "--chain-range 3..4"],
    );
    expect(&["merge", c, "--out", o], 2, &["chains 0..2", "in no part"]);
    // Another seed is another run.
    let other = t("other");
    ok(&[
        "fit",
        "--steps",
        "3000",
        "--chains",
        "4",
        "--seed",
        "12",
        "--quiet",
        "--chain-range",
        "2..4",
        "--out",
        path_str(&other),
    ]);
    expect(
        &["merge", a, path_str(&other), "--out", o],
        2,
        &["parts of different runs"],
    );
    // Not a part.
    expect(
        &["merge", a, path_str(tmp.path()), "--out", o],
        2,
        &["part.json", "not a finished part"],
    );
    assert!(!out.exists(), "a refused merge writes nothing");

    // What cannot be split.
    let p = t("p");
    let p = path_str(&p);
    expect(
        &[
            "fit",
            "--chains",
            "4",
            "--chain-range",
            "0..2",
            "--out",
            p,
            "--quiet",
        ],
        2,
        &["--chain-range needs a run of fixed length", "--steps"],
    );
    expect(
        &[
            "fit",
            "--steps",
            "100",
            "--chains",
            "4",
            "--chain-range",
            "2..6",
            "--out",
            p,
        ],
        2,
        &["--chain-range 2..6", "the run has 4 chains"],
    );
    expect(
        &[
            "fit",
            "--steps",
            "100",
            "--method",
            "nuts",
            "--chain-range",
            "0..1",
            "--out",
            p,
        ],
        2,
        &["--chain-range", "nuts"],
    );
    expect(
        &["fit", "--steps", "100", "--chain-range", "3..1", "--out", p],
        2,
        &["range of chains is empty"],
    );
}
