//! `run_team`: a run split over the ranks of a team gives rank 0's observer
//! what one process gives it, for any number of ranks: the same
//! `samples.csv` and checkpoints (so a run checkpointed with K ranks resumes
//! with another K), and the same stop of a run until converged. A failing
//! rank ends the run on every rank. The ranks here are threads joined by
//! barriers (the same protocol as `MpiTeam`, which `langevin-cli`'s
//! `cli_mpi` test runs under `mpirun`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};

use langevin::adapt::AdaptConfig;
use langevin::run::{
    chains_of, run_adaptive, run_team, BatchRef, BatchSource, Checkpoint, Observer, RunConfig,
    RunFiles, RunOutput, Stop, Team, Thinning, Until, SAMPLES_FILE,
};
use langevin::sgmcmc::{Sghmc, SghmcConfig, SghmcState};
use langevin::{ChainRng, Error, FnDensity, LogDensity, ParamLayout, Params};

/// `size` threads as a team: a shared slot per rank and a barrier.
struct Threads {
    size: usize,
    slots: Mutex<Vec<Vec<u8>>>,
    barrier: Barrier,
}

impl Threads {
    fn new(size: usize) -> Self {
        Self {
            size,
            slots: Mutex::new(vec![Vec::new(); size]),
            barrier: Barrier::new(size),
        }
    }
}

struct Member<'a> {
    rank: usize,
    team: &'a Threads,
}

impl Team for Member<'_> {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.team.size
    }
    fn gather(&self, bytes: &[u8]) -> langevin::Result<Option<Vec<Vec<u8>>>> {
        self.team.slots.lock().unwrap()[self.rank] = bytes.to_vec();
        self.team.barrier.wait();
        let out = (self.rank == 0).then(|| self.team.slots.lock().unwrap().clone());
        self.team.barrier.wait();
        Ok(out)
    }
    fn broadcast(&self, bytes: Vec<u8>) -> langevin::Result<Vec<u8>> {
        if self.rank == 0 {
            self.team.slots.lock().unwrap()[0] = bytes;
        }
        self.team.barrier.wait();
        let out = self.team.slots.lock().unwrap()[0].clone();
        self.team.barrier.wait();
        Ok(out)
    }
}

fn layout() -> ParamLayout {
    ParamLayout::new([("w", vec![2]), ("b", vec![])]).unwrap()
}

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

/// Per-step shifts of the mean; chain `bad` gets a failing batch (an error
/// that is not a divergence) from step 1200 on.
struct Shifts(Option<usize>);

impl BatchSource for Shifts {
    type Batch = f64;
    type Cursor = ();
    fn cursor(&self, _chain: usize) {}
    fn next<'a>(
        &'a self,
        chain: usize,
        step: u64,
        _cursor: &mut (),
        _rng: &mut ChainRng,
    ) -> langevin::Result<BatchRef<'a, f64>> {
        if Some(chain) == self.0 && step >= 1200 {
            return Err(Error::Data("this batch cannot be read".into()));
        }
        Ok(BatchRef::Owned(
            0.01 * ((step * 7 + chain as u64) % 5) as f64,
        ))
    }
}

fn shifts(bad: Option<usize>) -> Shifts {
    Shifts(bad)
}

fn config(until: bool) -> RunConfig {
    RunConfig {
        steps: if until { 40_000 } else { 3_000 },
        thinning: Thinning::new(500, if until { 1 } else { 7 }).unwrap(),
        round: Some(400),
        max_divergences: 10,
        threads: Some(1),
        until: until.then(|| Until {
            target_ess: 300.0,
            max_draws: 500,
            ..Until::default()
        }),
    }
}

const CHAINS: usize = 5;

fn names() -> Vec<String> {
    layout().scalar_names()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("langevin-run-team-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Interrupts after `n` chain-steps (of rank 0's chains).
struct StopAfter(AtomicU64, u64);
impl<S, C> Observer<S, C> for StopAfter {
    fn on_progress(&self, s: u64) {
        self.0.fetch_add(s, Ordering::Relaxed);
    }
    fn interrupted(&self) -> bool {
        self.0.load(Ordering::Relaxed) >= self.1
    }
}

/// The run in `dir` on `k` ranks (fresh, or resumed from its checkpoint),
/// interrupted after `stop` chain-steps of rank 0 (0: never); rank 0's output.
fn on_team(
    dir: &Path,
    k: usize,
    until: bool,
    stop: u64,
    bad: Option<usize>,
    resume: bool,
) -> Vec<langevin::Result<RunOutput<SghmcState>>> {
    let team = Threads::new(k);
    let cfg = config(until);
    let adapt = AdaptConfig::default();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..k)
            .map(|rank| {
                let (team, cfg, adapt) = (&team, &cfg, &adapt);
                s.spawn(move || {
                    let t = sghmc(gaussian());
                    let b = shifts(bad);
                    let member = Member { rank, team };
                    let stopper =
                        StopAfter(AtomicU64::new(0), if stop == 0 { u64::MAX } else { stop });
                    if rank == 0 {
                        let (files, start, previous) = if resume {
                            let (f, ck, prev) =
                                RunFiles::resume::<SghmcState, ()>(dir, cfg, &names(), |_| true)
                                    .unwrap();
                            (f, ck, Some(prev))
                        } else {
                            let f = RunFiles::create(dir, &names(), Some(serde_json::json!({})))
                                .unwrap();
                            (f, Checkpoint::start(&t, &b, 9, CHAINS, init).unwrap(), None)
                        };
                        let mut obs = (files, stopper);
                        run_team(
                            &t,
                            &b,
                            cfg,
                            Some(adapt),
                            Some(start),
                            previous,
                            &mut obs,
                            &member,
                        )
                    } else {
                        run_team(&t, &b, cfg, Some(adapt), None, None, &mut (), &member)
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The one-process run in `dir`.
fn alone(dir: &Path, until: bool) -> RunOutput<SghmcState> {
    let t = sghmc(gaussian());
    let b = shifts(None);
    let mut files = RunFiles::create(dir, &names(), Some(serde_json::json!({}))).unwrap();
    let start = Checkpoint::start(&t, &b, 9, CHAINS, init).unwrap();
    run_adaptive(
        &t,
        &b,
        &config(until),
        &AdaptConfig::default(),
        start,
        None,
        &mut files,
    )
    .unwrap()
}

#[test]
fn chains_are_split_in_consecutive_blocks() {
    assert_eq!(chains_of(0, 2, 5), 0..2);
    assert_eq!(chains_of(1, 2, 5), 2..5);
    let all: Vec<_> = (0..7).flat_map(|r| chains_of(r, 7, 4)).collect();
    assert_eq!(all, vec![0, 1, 2, 3]);
    assert_eq!(chains_of(0, 1, 4), 0..4);
}

#[test]
fn any_number_of_ranks_writes_the_one_process_files() {
    for until in [false, true] {
        let one = tmp(&format!("one-{until}"));
        let reference = alone(&one, until);
        let expected = std::fs::read(one.join(SAMPLES_FILE)).unwrap();
        if until {
            // The run stopped on the verdict before its maximum.
            assert!(
                reference.steps_done < config(true).steps,
                "{}",
                reference.steps_done
            );
        }
        for k in [1, 2, 3, 7] {
            let dir = tmp(&format!("k{k}-{until}"));
            let outs = on_team(&dir, k, until, 0, None, false);
            let root = outs.into_iter().next().unwrap().unwrap();
            assert_eq!(root.steps_done, reference.steps_done, "k {k}");
            assert_eq!(root.thinning, reference.thinning);
            assert_eq!(root.samples.chains.len(), CHAINS);
            assert!(
                std::fs::read(dir.join(SAMPLES_FILE)).unwrap() == expected,
                "until {until}, {k} ranks: samples.csv differs"
            );
            assert_eq!(root.verdict, reference.verdict);
            let _ = std::fs::remove_dir_all(&dir);
        }
        let _ = std::fs::remove_dir_all(&one);
    }
}

#[test]
fn a_checkpoint_of_k_ranks_resumes_with_another_k() {
    let one = tmp("resume-one");
    alone(&one, false);
    let expected = std::fs::read(one.join(SAMPLES_FILE)).unwrap();
    for (k1, k2) in [(2, 3), (3, 1), (1, 2)] {
        let dir = tmp(&format!("resume-{k1}-{k2}"));
        let cut = on_team(&dir, k1, false, 1_500, None, false);
        assert_eq!(cut[0].as_ref().unwrap().stop, Some(Stop::Interrupted));
        let done = on_team(&dir, k2, false, 0, None, true);
        assert!(done[0].as_ref().unwrap().stop.is_none());
        assert!(
            std::fs::read(dir.join(SAMPLES_FILE)).unwrap() == expected,
            "{k1} then {k2} ranks: samples.csv differs"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&one);
}

#[test]
fn a_failing_rank_ends_the_run_on_every_rank() {
    let dir = tmp("failing");
    // Chain 4 is on rank 2 of 3 (chains 3..5).
    let outs = on_team(&dir, 3, false, 0, Some(4), false);
    for (rank, out) in outs.iter().enumerate() {
        let e = out.as_ref().unwrap_err();
        if rank == 2 {
            assert!(matches!(e, Error::InChain { chain: 4, .. }), "{e}");
        } else {
            assert!(
                matches!(
                    e,
                    Error::Remote {
                        rank: 2,
                        bad_input: true,
                        ..
                    }
                ),
                "rank {rank}: {e}"
            );
            assert!(e.to_string().contains("chain 4"), "{e}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
