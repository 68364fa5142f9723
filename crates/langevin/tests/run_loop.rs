//! The library's run loop (`langevin::run`): determinism over threads and
//! round lengths, the divergence policy, observers, and byte-identical
//! resume through `RunFiles` with every saved field validated.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use langevin::run::{
    run, Checkpoint, Draw, FnBatches, FullBatch, Observer, RunConfig, RunFiles, RunOutput, Samples,
    Stop, Thinning, CHECKPOINT_FILE, SAMPLES_FILE,
};
use langevin::sgmcmc::{Sghmc, SghmcConfig, SghmcState};
use langevin::{ChainRng, Error, FnDensity, LogDensity, ParamLayout, Params};

fn layout() -> ParamLayout {
    ParamLayout::new([("w", vec![2]), ("b", vec![])]).unwrap()
}

/// A 3-D Gaussian with unit precision around (1, -2, 0.5); the batch is a
/// per-step offset of the mean (so minibatch order matters).
fn gaussian() -> impl LogDensity<Batch = f64, Aux = ()> {
    FnDensity::new(|x: &[f64], shift: &f64, g: &mut [f64]| {
        let m = [1.0 + shift, -2.0, 0.5];
        let mut v = 0.0;
        for i in 0..3 {
            g[i] = -(x[i] - m[i]);
            v -= 0.5 * (x[i] - m[i]).powi(2);
        }
        v
    })
}

fn sghmc<D: LogDensity>(d: D) -> Sghmc<D> {
    Sghmc::new(
        d,
        SghmcConfig {
            step_size: 0.1.into(),
            friction: 1.0,
            ..Default::default()
        },
    )
    .unwrap()
}

fn init(_: usize, rng: &mut ChainRng) -> langevin::Result<Params> {
    let mut v = vec![0.0; 3];
    langevin::core::rng::fill_standard_normal(rng, &mut v);
    Params::new(layout(), v)
}

fn shifts() -> FnBatches<impl Fn(usize, u64) -> f64 + Sync> {
    FnBatches(|chain: usize, step: u64| 0.01 * ((step * 7 + chain as u64) % 5) as f64)
}

fn config(round: Option<u64>, threads: Option<usize>) -> RunConfig {
    RunConfig {
        steps: 3_000,
        thinning: Thinning::new(500, 7).unwrap(),
        round,
        max_divergences: 10,
        threads,
        until: None,
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("langevin-run-loop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn draws_of(out: &RunOutput<SghmcState>) -> Vec<Vec<f64>> {
    out.samples
        .chains
        .iter()
        .map(|c| c.as_slice().to_vec())
        .collect()
}

#[test]
fn draws_do_not_depend_on_threads_or_rounds() {
    let t = sghmc(gaussian());
    let b = shifts();
    let go = |round, threads| {
        let start = Checkpoint::start(&t, &b, 11, 5, init).unwrap();
        run(&t, &b, &config(round, threads), start, None, &mut ()).unwrap()
    };
    let reference = go(None, Some(1));
    assert_eq!(reference.samples.chains.len(), 5);
    // (3000 - 500) / 7 = 357 draws per chain.
    assert!(reference.samples.chains.iter().all(|c| c.n_draws() == 357));
    assert!(reference.stop.is_none());
    for (round, threads) in [
        (Some(7), Some(3)),
        (Some(1000), Some(2)),
        (Some(2999), None),
    ] {
        assert_eq!(
            draws_of(&go(round, threads)),
            draws_of(&reference),
            "{round:?} {threads:?}"
        );
    }
    // And the chains differ from each other (their own streams).
    assert_ne!(
        reference.samples.chains[0].as_slice(),
        reference.samples.chains[1].as_slice()
    );
}

/// Records the order of the events.
#[derive(Default)]
struct Log {
    events: Vec<String>,
    draws: Vec<(usize, usize)>,
    progress: AtomicU64,
}

impl<S, C> Observer<S, C> for Log {
    fn on_start(
        &mut self,
        _: &langevin::run::RunInfo<'_>,
        ck: &Checkpoint<S, C>,
    ) -> langevin::Result<()> {
        self.events.push(format!("start {}", ck.steps_done));
        Ok(())
    }
    fn on_draws(&mut self, d: &[Draw]) -> langevin::Result<()> {
        self.events.push(format!("draws {}", d.len()));
        self.draws.extend(d.iter().map(|d| (d.chain, d.index)));
        Ok(())
    }
    fn on_round(&mut self, ck: &Checkpoint<S, C>) -> langevin::Result<()> {
        self.events.push(format!("round {}", ck.steps_done));
        Ok(())
    }
    fn on_finish(&mut self, out: &RunOutput<S>) -> langevin::Result<()> {
        self.events.push(format!("finish {}", out.steps_done));
        Ok(())
    }
    fn on_progress(&self, steps: u64) {
        self.progress.fetch_add(steps, Ordering::Relaxed);
    }
}

#[test]
fn observers_see_rounds_in_order_and_draws_draw_major() {
    let t = sghmc(gaussian());
    let b = shifts();
    let mut log = Log::default();
    let start = Checkpoint::start(&t, &b, 1, 3, init).unwrap();
    let out = run(&t, &b, &config(Some(1_000), Some(2)), start, None, &mut log).unwrap();
    assert_eq!(
        log.events,
        [
            "start 0",
            "draws 213",
            "round 1000",
            "draws 429",
            "round 2000",
            "draws 429",
            "round 3000",
            "finish 3000"
        ]
    );
    // Draw-major within each round: (chain 0, i), (chain 1, i), (chain 2, i), ...
    assert_eq!(&log.draws[..4], &[(0, 0), (1, 0), (2, 0), (0, 1)]);
    assert_eq!(log.draws.len(), out.samples.n_draws());
    assert_eq!(log.progress.load(Ordering::Relaxed), 3 * 3_000);
}

/// NaN whenever the step's batch says so: the divergence policy.
fn sometimes_nan(
    every: u64,
) -> (
    impl LogDensity<Batch = u64, Aux = ()>,
    FnBatches<impl Fn(usize, u64) -> u64 + Sync>,
) {
    let d = FnDensity::new(|x: &[f64], step: &u64, g: &mut [f64]| {
        for i in 0..3 {
            g[i] = -x[i];
        }
        if *step == u64::MAX {
            f64::NAN
        } else {
            -0.5 * x.iter().map(|v| v * v).sum::<f64>()
        }
    });
    let b = FnBatches(move |chain: usize, step: u64| {
        if every > 0 && chain == 1 && step % every == 3 {
            u64::MAX
        } else {
            step
        }
    });
    (d, b)
}

#[test]
fn divergent_steps_are_skipped_and_counted_until_the_limit() {
    // Chain 1 diverges every 400th step: 8 times in 3000 steps, under the limit of 10.
    let (d, b) = sometimes_nan(400);
    let t = sghmc(d);
    let start = Checkpoint::start(&t, &b, 3, 2, init).unwrap();
    let out = run(&t, &b, &config(None, None), start, None, &mut ()).unwrap();
    assert_eq!(out.divergences, vec![0, 8]);
    assert!(out.stop.is_none());
    let flagged = out.samples.chains[1]
        .diverged()
        .iter()
        .filter(|&&f| f)
        .count();
    assert!(flagged <= 8);
    // Every 100th step: 30 divergences > 10, chain 1 stops, the run says so.
    let (d, b) = sometimes_nan(100);
    let t = sghmc(d);
    let start = Checkpoint::start(&t, &b, 3, 2, init).unwrap();
    let out = run(&t, &b, &config(Some(500), None), start, None, &mut ()).unwrap();
    assert_eq!(
        out.stop,
        Some(Stop::Divergences {
            chains: vec![1],
            limit: 10
        })
    );
    assert_eq!(out.divergences[1], 11);
    // A chain none of whose steps is finite is not a result, whatever the limit.
    let t = sghmc(FnDensity::new(|_: &[f64], _: &(), g: &mut [f64]| {
        g.fill(0.0);
        f64::NAN
    }));
    let cfg = RunConfig {
        steps: 50,
        max_divergences: 100,
        ..Default::default()
    };
    let start = Checkpoint::start(&t, &FullBatch(()), 3, 2, init).unwrap();
    let out = run(&t, &FullBatch(()), &cfg, start, None, &mut ()).unwrap();
    assert!(
        matches!(out.stop, Some(Stop::Divergences { .. })),
        "{:?}",
        out.stop
    );
}

#[test]
fn a_run_that_keeps_no_draw_is_refused_at_construction() {
    let t = sghmc(gaussian());
    let b = shifts();
    let cfg = RunConfig {
        steps: 100,
        thinning: Thinning::new(50, 60).unwrap(),
        ..Default::default()
    };
    let start = Checkpoint::start(&t, &b, 3, 2, init).unwrap();
    let e = run(&t, &b, &cfg, start, None, &mut ()).unwrap_err();
    assert!(
        matches!(e, Error::InvalidConfig { field: "thin", .. }),
        "{e}"
    );
}

/// Interrupts after `n` chain-steps.
struct StopAfter(AtomicU64, u64);
impl<S, C> Observer<S, C> for StopAfter {
    fn on_progress(&self, s: u64) {
        self.0.fetch_add(s, Ordering::Relaxed);
    }
    fn interrupted(&self) -> bool {
        self.0.load(Ordering::Relaxed) >= self.1
    }
}

fn names() -> Vec<String> {
    layout().scalar_names()
}

/// A checkpointed run in `dir`, interrupted after `stop` chain-steps (0: not interrupted).
fn on_disk(dir: &Path, stop: u64) -> RunOutput<SghmcState> {
    let t = sghmc(gaussian());
    let b = shifts();
    let files = RunFiles::create(dir, &names(), Some(serde_json::json!({"who": "test"}))).unwrap();
    let start = Checkpoint::start(&t, &b, 5, 3, init).unwrap();
    let mut obs = (
        files,
        StopAfter(AtomicU64::new(0), if stop == 0 { u64::MAX } else { stop }),
    );
    run(&t, &b, &config(Some(400), Some(2)), start, None, &mut obs).unwrap()
}

fn resume(dir: &Path) -> langevin::Result<RunOutput<SghmcState>> {
    let t = sghmc(gaussian());
    let b = shifts();
    let cfg = config(Some(400), Some(2));
    let (mut files, ck, before) =
        RunFiles::resume::<SghmcState, ()>(dir, &cfg, &names(), |_| true)?;
    run(&t, &b, &cfg, ck, Some(before), &mut files)
}

#[test]
fn resume_is_byte_identical_and_every_saved_field_is_checked() {
    let whole = tmp("whole");
    let reference = on_disk(&whole, 0);
    let expected = std::fs::read(whole.join(SAMPLES_FILE)).unwrap();
    assert_eq!(
        Samples::read_csv(whole.join(SAMPLES_FILE))
            .unwrap()
            .chains
            .len(),
        3
    );
    for stop in [1, 1_500, 5_000] {
        let dir = tmp(&format!("cut{stop}"));
        let cut = on_disk(&dir, stop);
        assert_eq!(cut.stop, Some(Stop::Interrupted));
        // A killed process may have written rows after the checkpoint.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(SAMPLES_FILE))
            .unwrap();
        std::io::Write::write_all(&mut f, b"0,999,1,2,3\n0,1000,4").unwrap();
        drop(f);
        let done = resume(&dir).unwrap();
        assert!(done.stop.is_none());
        assert_eq!(
            std::fs::read(dir.join(SAMPLES_FILE)).unwrap(),
            expected,
            "stop {stop}"
        );
        assert_eq!(draws_of(&done), draws_of(&reference));
        std::fs::remove_dir_all(&dir).ok();
    }

    // Damaged checkpoints are refused, naming the file and the field.
    let dir = tmp("damaged");
    on_disk(&dir, 5_000);
    let ck_path = dir.join(CHECKPOINT_FILE);
    let good = std::fs::read_to_string(&ck_path).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
        f(&mut v);
        std::fs::write(&ck_path, serde_json::to_string(&v).unwrap()).unwrap();
        let e = resume(&dir).unwrap_err();
        assert!(matches!(e, Error::InvalidCheckpoint { .. }), "{e}");
        e.to_string()
    };
    let e = edit(&|v| v["steps_done"] = serde_json::json!(99_999));
    assert!(
        e.contains("checkpoint.json") && e.contains("steps_done"),
        "{e}"
    );
    let e = edit(&|v| v["chains"][1]["step"] = serde_json::json!(10));
    assert!(e.contains("chains[1].step"), "{e}");
    let e = edit(&|v| v["chains"][0]["draws"] = serde_json::json!(3));
    assert!(e.contains("chains[0].draws"), "{e}");
    let e = edit(&|v| v["chains"][2]["state"]["params"]["values"] = serde_json::json!([1.0]));
    assert!(e.contains("chains[2].state"), "{e}");
    let e = edit(&|v| {
        let m = v["chains"][0]["state"]["momenta"].as_array_mut().unwrap();
        m.pop();
    });
    assert!(e.contains("checkpoint.json"), "{e}");
    let e = edit(&|v| v["samples_hash"] = serde_json::json!(12345));
    assert!(e.contains("samples.csv") && e.contains("checksum"), "{e}");
    let e = edit(&|v| v["version"] = serde_json::json!(1));
    assert!(e.contains("version"), "{e}");
    // The draws file changed before the checkpoint's length: refused.
    std::fs::write(&ck_path, &good).unwrap();
    let csv = std::fs::read(dir.join(SAMPLES_FILE)).unwrap();
    let mut changed = csv.clone();
    // A digit of the first draw (well inside what the checkpoint covers).
    let header = csv.iter().position(|&b| b == b'\n').unwrap() + 1;
    let at = header
        + csv[header..]
            .iter()
            .position(|b| (b'1'..=b'8').contains(b))
            .unwrap()
        + 4;
    let at = at - 4
        + csv[at - 4..]
            .iter()
            .position(|b| b.is_ascii_digit() && *b != b'0')
            .unwrap();
    changed[at] += 1;
    std::fs::write(dir.join(SAMPLES_FILE), &changed).unwrap();
    let e = resume(&dir).unwrap_err().to_string();
    assert!(e.contains("samples.csv"), "{e}");
    std::fs::write(dir.join(SAMPLES_FILE), &csv[..header + 10]).unwrap();
    let e = resume(&dir).unwrap_err().to_string();
    assert!(e.contains("shorter"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&whole).ok();
}
