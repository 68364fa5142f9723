//! One run over several processes: each process (a *rank* of a [`Team`])
//! advances a disjoint block of the chains, and rank 0 sees the whole run.
//!
//! # The protocol
//!
//! [`run_team`] is [`super::run`] (or [`super::run_adaptive`]) split over
//! the ranks of a team. Rank 0 holds the checkpoint to start from (a fresh
//! one for every chain, or the one [`RunFiles::resume`](super::RunFiles)
//! read) and broadcasts it; rank `r` of `K` keeps chains
//! [`chains_of(r, K, C)`](chains_of) (consecutive blocks, sizes differing by
//! at most one). Every round, each rank advances its chains over its own
//! threads, then sends rank 0 its draws, its chains (state, generator,
//! cursor, counters) and its error or interruption, if any, in one gather.
//! Rank 0 merges the draws into draw-major order (draw `i` of chain
//! `0, 1, ..., C - 1`, then draw `i + 1`), which is exactly the order of a
//! single process, gives them to its observer, and decides what a single
//! process would: an error ends the run (the first in rank order), a chain
//! over the divergence limit stops it, a run until converged thins and
//! judges the draws of *all* chains. It then calls the observer's
//! [`Observer::on_round`] with the checkpoint of every chain, and broadcasts
//! the decision. So, for the same seed, rank 0's observer sees the same
//! events with the same data for any number of ranks: the same
//! `samples.csv`, the same checkpoints, and a checkpoint written with `K`
//! ranks resumes with any other number (every rank takes its block of it).
//!
//! No rank waits forever on a failed one: every rank takes part in every
//! gather and broadcast whatever happened to its chains, an error travels
//! in the gather, and every rank ends the run after the same round (rank 0
//! returns the failing rank's error as [`Error::Remote`] unless it was its
//! own; the other ranks return [`Error::Remote`]). A process that dies
//! outright is the MPI launcher's to clean up (Open MPI's `mpirun` ends the
//! job).
//!
//! The messages are JSON (numbers in shortest round-trip form, draws as the
//! bits of their `f64`s): the chain states of the checkpoint are sent every
//! round, which costs little next to a round of steps for the models this
//! is for (chains of up to about 10^5 parameters).
//!
//! [`Team`] is the few collectives the protocol needs; [`Solo`] is the team
//! of one process (for tests and single runs), and with the cargo feature
//! `mpi`, [`MpiTeam`](super::MpiTeam) is `MPI_COMM_WORLD`.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use langevin_core::{Error, Result, TransformState};

use super::observer::{Draw, Observer, RunInfo};
use super::{
    advance_all, Chain, Checkpoint, NoHook, RunConfig, RunOutput, Samples, StepHook, Stop, Verdict,
    WarmupHook,
};
use crate::adapt::{AdaptConfig, Adaptive, Warmup, Windows};
use langevin_core::BatchSource;

/// The collectives of a run over several processes (rank 0 is the root).
pub trait Team {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// Number of processes.
    fn size(&self) -> usize;
    /// Every rank's `bytes`, in rank order, on rank 0 (`None` on the others).
    fn gather(&self, bytes: &[u8]) -> Result<Option<Vec<Vec<u8>>>>;
    /// Rank 0's `bytes` on every rank (the others' argument is ignored).
    fn broadcast(&self, bytes: Vec<u8>) -> Result<Vec<u8>>;
}

/// The team of one process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Solo;

impl Team for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn gather(&self, bytes: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        Ok(Some(vec![bytes.to_vec()]))
    }
    fn broadcast(&self, bytes: Vec<u8>) -> Result<Vec<u8>> {
        Ok(bytes)
    }
}

/// The chains of rank `rank` of `size` in a run of `chains` chains:
/// consecutive blocks whose sizes differ by at most one (empty when there
/// are more ranks than chains).
pub fn chains_of(rank: usize, size: usize, chains: usize) -> std::ops::Range<usize> {
    let size = size.max(1);
    let at = |r: usize| r * chains / size;
    at(rank.min(size))..at((rank + 1).min(size))
}

/// Rank 0's view of the whole run: every chain's checkpoint and draws.
type Whole<S, C> = (Checkpoint<S, C>, Samples);

/// A draw on the wire (values as bits: exact, and NaN-safe).
#[derive(Serialize, Deserialize)]
struct WireDraw {
    chain: usize,
    index: usize,
    values: Vec<u64>,
    log_density: u64,
    diverged: bool,
}

/// What a rank sends rank 0 after a round.
#[derive(Serialize, Deserialize)]
#[serde(bound(
    serialize = "S: Serialize, C: Serialize",
    deserialize = "S: DeserializeOwned, C: DeserializeOwned"
))]
struct Report<S, C> {
    draws: Vec<WireDraw>,
    chains: Vec<Chain<S, C>>,
    /// The message and whether it is bad input.
    error: Option<(String, bool)>,
    interrupted: bool,
}

/// What rank 0 decides after a round.
#[derive(Serialize, Deserialize, Default)]
struct Decision {
    /// The rank whose error ends the run, the message, and whether it is
    /// bad input.
    error: Option<(usize, String, bool)>,
    interrupted: bool,
    stop: Option<Stop>,
    converged: bool,
    /// Times the thinning interval was doubled.
    doublings: u32,
}

fn wire<E: std::fmt::Display>(e: E) -> Error {
    Error::Data(format!("team message: {e}"))
}

/// [`super::run`] (`adapt: None`) or [`super::run_adaptive`] over the ranks
/// of `team` (see the module docs). On rank 0, `start` is the checkpoint of
/// every chain (fresh or resumed) and `previous` the draws before it; the
/// other ranks pass `None` for both and receive their block. Only rank 0's
/// observer sees events, and only rank 0's output holds every chain and
/// every draw; on the other ranks `samples` is empty and `states` and
/// `divergences` are those of the rank's chains.
#[allow(clippy::too_many_arguments)]
pub fn run_team<T, B, O, M>(
    transform: &T,
    batches: &B,
    config: &RunConfig,
    adapt: Option<&AdaptConfig>,
    start: Option<Checkpoint<T::State, B::Cursor>>,
    previous: Option<Samples>,
    observer: &mut O,
    team: &M,
) -> Result<RunOutput<T::State>>
where
    T: Adaptive<Batch = B::Batch>,
    B: BatchSource,
    B::Cursor: Clone + Serialize + DeserializeOwned,
    O: Observer<T::State, B::Cursor> + ?Sized,
    M: Team + ?Sized,
{
    config.validate()?;
    match adapt {
        Some(adapt) => {
            adapt.validate()?;
            let warmup = config.thinning.burn_in;
            let hook = WarmupHook(Warmup {
                config: adapt,
                windows: Windows::new(warmup),
                warmup,
            });
            drive_team(
                transform, batches, config, start, previous, observer, team, &hook,
            )
        }
        None => drive_team(
            transform, batches, config, start, previous, observer, team, &NoHook,
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn drive_team<T, B, O, M, H>(
    transform: &T,
    batches: &B,
    config: &RunConfig,
    start: Option<Checkpoint<T::State, B::Cursor>>,
    previous: Option<Samples>,
    observer: &mut O,
    team: &M,
    hook: &H,
) -> Result<RunOutput<T::State>>
where
    T: Adaptive<Batch = B::Batch>,
    B: BatchSource,
    B::Cursor: Clone + Serialize + DeserializeOwned,
    O: Observer<T::State, B::Cursor> + ?Sized,
    M: Team + ?Sized,
    H: StepHook<T, B>,
{
    let (rank, size) = (team.rank(), team.size());
    let root = rank == 0;
    // Rank 0's start to every rank.
    let bytes = match (&start, root) {
        (Some(s), true) => serde_json::to_vec(s).map_err(wire)?,
        (None, true) => {
            return Err(Error::config(
                "start",
                "rank 0 must give the checkpoint to start from",
            ))
        }
        _ => Vec::new(),
    };
    let bytes = team.broadcast(bytes)?;
    let global: Checkpoint<T::State, B::Cursor> = match start {
        Some(s) if root => s,
        _ => serde_json::from_slice(&bytes).map_err(wire)?,
    };
    drop(bytes);
    let Some(first) = global.chains.first() else {
        return Err(Error::config("chains", "at least one chain is needed"));
    };
    let names = first.state.params().layout().scalar_names();
    let dim = names.len();
    global.validate(config, dim, "checkpoint")?;
    let n = global.chains.len();
    let base = global.first_chain;
    let mine = chains_of(rank, size, n);
    let mut ck = global.slice(base + mine.start..base + mine.end)?;
    // Rank 0 keeps the whole run's checkpoint and draws.
    let mut whole: Option<Whole<T::State, B::Cursor>> = None;
    if root {
        let samples = previous.unwrap_or_else(|| Samples::new(names.clone(), n));
        if samples.chains.len() != n || samples.dim() != dim {
            return Err(Error::DimensionMismatch {
                what: "chains of the previous draws",
                expected: n,
                got: samples.chains.len(),
            });
        }
        for (k, (tr, ch)) in samples.chains.iter().zip(&global.chains).enumerate() {
            if tr.n_draws() != ch.draws {
                return Err(Error::checkpoint(
                    "draws",
                    format!("chain {}", base + k),
                    format!(
                        "{} draws given, the checkpoint says {}",
                        tr.n_draws(),
                        ch.draws
                    ),
                ));
            }
        }
        let mut samples = samples;
        samples.names = names.clone();
        observer.on_start(
            &RunInfo {
                names: &names,
                config,
                chains: n,
            },
            &global,
        )?;
        whole = Some((global, samples));
    } else {
        drop(global);
    }
    let first = ck.first_chain;
    let round = config.round_len();
    let check_every = config.check_every();
    let mut stop = None;
    let mut verdict: Option<Verdict> = None;
    let mut converged = false;
    while ck.steps_done < config.steps && stop.is_none() && !converged {
        let mut end = (ck.steps_done + round).min(config.steps);
        if let Some(c) = check_every {
            end = end.min((ck.steps_done / c + 1) * c);
        }
        let thinning = ck.thinning(config);
        let local = ck.chains.len();
        let mut new: Vec<Vec<Draw>> = (0..local).map(|_| Vec::new()).collect();
        let interrupted = AtomicBool::new(false);
        // Rank 0's observer is polled for interruptions; the others' chains
        // run to the end of the round.
        let r = if root {
            advance_all(
                transform,
                batches,
                config,
                thinning,
                first,
                &mut ck.chains,
                &mut new,
                end,
                &*observer,
                &interrupted,
                hook,
            )
        } else {
            advance_all(
                transform,
                batches,
                config,
                thinning,
                first,
                &mut ck.chains,
                &mut new,
                end,
                &(),
                &interrupted,
                hook,
            )
        };
        let mut draws = Vec::new();
        for (i, chain_draws) in new.into_iter().enumerate() {
            ck.chains[i].draws += chain_draws.len();
            for d in chain_draws {
                draws.push(WireDraw {
                    chain: d.chain,
                    index: d.index,
                    values: d.values.iter().map(|v| v.to_bits()).collect(),
                    log_density: d.log_density.to_bits(),
                    diverged: d.diverged,
                });
            }
        }
        let mut own_error = None;
        let report = Report {
            draws,
            chains: ck.chains.clone(),
            error: match r {
                Ok(()) => None,
                Err(e) => {
                    let msg = (e.to_string(), e.is_bad_input());
                    own_error = Some(e);
                    Some(msg)
                }
            },
            interrupted: interrupted.load(Ordering::Relaxed),
        };
        let bytes = serde_json::to_vec(&report).map_err(wire)?;
        drop(report);
        let gathered = team.gather(&bytes)?;
        let mut root_error = None;
        let decision = match (gathered, whole.as_mut()) {
            (Some(all), Some((gck, samples))) => {
                let mut d = Decision::default();
                match decide(
                    config,
                    all,
                    gck,
                    samples,
                    end,
                    observer,
                    &mut d,
                    &mut verdict,
                ) {
                    Ok(()) => {}
                    Err(e) => {
                        if d.error.is_none() {
                            d.error = Some((0, e.to_string(), e.is_bad_input()));
                        }
                        root_error = Some(e);
                    }
                }
                d
            }
            _ => Decision::default(),
        };
        let bytes = if root {
            serde_json::to_vec(&decision).map_err(wire)?
        } else {
            Vec::new()
        };
        let decision: Decision = serde_json::from_slice(&team.broadcast(bytes)?).map_err(wire)?;
        if let Some((r, message, bad_input)) = decision.error {
            if r == rank {
                if let Some(e) = own_error.or(root_error) {
                    return Err(e);
                }
            }
            return Err(Error::Remote {
                rank: r,
                message,
                bad_input,
            });
        }
        if decision.interrupted {
            stop = Some(Stop::Interrupted);
            break;
        }
        ck.steps_done = end;
        if let Some(s) = decision.stop {
            stop = Some(s);
            break;
        }
        for _ in 0..decision.doublings {
            for ch in ck.chains.iter_mut() {
                ch.draws /= 2;
            }
            ck.thin = Some(ck.thinning(config).thin * 2);
        }
        converged = decision.converged;
    }
    match whole {
        Some((gck, samples)) => {
            let mut stop = stop;
            if stop.is_none() {
                let dead: Vec<usize> = (0..n)
                    .filter(|&k| {
                        let ch = &gck.chains[k];
                        ch.step > 0 && ch.divergences == ch.step
                    })
                    .map(|k| base + k)
                    .collect();
                if !dead.is_empty() {
                    stop = Some(Stop::Divergences {
                        chains: dead,
                        limit: config.divergence_limit(),
                    });
                }
            }
            if verdict.is_none() && samples.min_draws() >= crate::diagnostics::MIN_DRAWS {
                let u = config.until.clone().unwrap_or_default();
                verdict = Some(Verdict::of(
                    &samples,
                    u.target_ess,
                    u.max_rhat,
                    u.min_draws,
                )?);
            }
            let thinning = gck.thinning(config);
            let out = RunOutput {
                samples,
                divergences: gck.chains.iter().map(|c| c.divergences).collect(),
                states: gck.chains.into_iter().map(|c| c.state).collect(),
                steps_done: gck.steps_done,
                stop,
                verdict,
                thinning,
            };
            observer.on_finish(&out)?;
            Ok(out)
        }
        None => Ok(RunOutput {
            samples: Samples::new(names, 0),
            divergences: ck.chains.iter().map(|c| c.divergences).collect(),
            thinning: ck.thinning(config),
            states: ck.chains.into_iter().map(|c| c.state).collect(),
            steps_done: ck.steps_done,
            stop,
            verdict: None,
        }),
    }
}

/// Rank 0 after a round: merge the ranks' reports into the whole run's
/// checkpoint and draws, tell the observer, and decide as one process would
/// (an `Err` is rank 0's own failure, an observer's for example).
#[allow(clippy::too_many_arguments)]
fn decide<S, C, O>(
    config: &RunConfig,
    all: Vec<Vec<u8>>,
    gck: &mut Checkpoint<S, C>,
    samples: &mut Samples,
    end: u64,
    observer: &mut O,
    d: &mut Decision,
    verdict: &mut Option<Verdict>,
) -> Result<()>
where
    S: TransformState,
    C: Serialize + DeserializeOwned,
    O: Observer<S, C> + ?Sized,
{
    let base = gck.first_chain;
    let mut draws = Vec::new();
    let mut at = 0;
    for (r, bytes) in all.iter().enumerate() {
        let rep: Report<S, C> = serde_json::from_slice(bytes).map_err(wire)?;
        if d.error.is_none() {
            if let Some((e, bad)) = rep.error {
                d.error = Some((r, e, bad));
            }
        }
        d.interrupted |= rep.interrupted;
        for ch in rep.chains {
            if at >= gck.chains.len() {
                return Err(wire("more chains than the run has"));
            }
            gck.chains[at] = ch;
            at += 1;
        }
        draws.extend(rep.draws);
    }
    if at != gck.chains.len() {
        return Err(wire("fewer chains than the run has"));
    }
    // Draw-major, as one process delivers them.
    draws.sort_by_key(|w| (w.index, w.chain));
    let draws: Vec<Draw> = draws
        .into_iter()
        .map(|w| Draw {
            chain: w.chain,
            index: w.index,
            values: w.values.into_iter().map(f64::from_bits).collect(),
            log_density: f64::from_bits(w.log_density),
            diverged: w.diverged,
        })
        .collect();
    for w in &draws {
        samples.chains[w.chain - base].push_with(&w.values, w.log_density, w.diverged)?;
    }
    observer.on_draws(&draws)?;
    if d.error.is_some() || d.interrupted {
        return Ok(());
    }
    gck.steps_done = end;
    let stopped: Vec<usize> = (0..gck.chains.len())
        .filter(|&k| gck.chains[k].stopped)
        .map(|k| base + k)
        .collect();
    if !stopped.is_empty() {
        d.stop = Some(Stop::Divergences {
            chains: stopped,
            limit: config.divergence_limit(),
        });
        return Ok(());
    }
    if let Some(until) = &config.until {
        let at_check = config
            .check_every()
            .is_some_and(|c| gck.steps_done.is_multiple_of(c))
            || gck.steps_done == config.steps;
        if at_check && gck.steps_done >= config.thinning.burn_in {
            while samples.min_draws() > until.max_draws {
                for tr in samples.chains.iter_mut() {
                    tr.keep_every_second();
                }
                for ch in gck.chains.iter_mut() {
                    ch.draws /= 2;
                }
                gck.thin = Some(gck.thinning(config).thin * 2);
                d.doublings += 1;
                observer.on_thinned(samples)?;
            }
            if samples.min_draws() >= crate::diagnostics::MIN_DRAWS {
                let v = Verdict::of(samples, until.target_ess, until.max_rhat, until.min_draws)?;
                observer.on_check(&v);
                d.converged = v.converged;
                *verdict = Some(v);
            }
        }
    }
    observer.on_round(gck)?;
    Ok(())
}
