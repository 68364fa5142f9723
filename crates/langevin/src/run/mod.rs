//! The run loop: from a transform to a finished, trustworthy set of draws.
//!
//! Every front end (the `langevin` program, the Python package, multi-process
//! runs) drives chains through [`run`]; none of them re-implements rounds,
//! streaming, divergence counting or resume.
//!
//! # What a run is
//!
//! * **Chains.** `K` chains of one [`Transform`], each a [`Chain`]: the
//!   transform state, the chain's own generator
//!   ([`chain_rng(seed, k)`](langevin_core::chain_rng)), its cursor in the
//!   [`BatchSource`] and its counters. A chain's computation depends only on
//!   the seed and its index, so the draws do not depend on the number of
//!   threads, on the round length, or on where a run was interrupted.
//! * **Rounds.** All chains advance together by [`RunConfig::round_len`]
//!   steps at a time, over `min(K, threads)` worker threads. After each round
//!   the new draws go to the observer in *draw-major* order (draw `i` of
//!   chain 0, 1, ..., then draw `i + 1`), then the observer sees the
//!   [`Checkpoint`] (everything needed to continue).
//! * **Draws.** [`RunConfig::thinning`] picks the kept states
//!   ([`Thinning`]); they are returned as [`Samples`] (names from the
//!   parameter layout, per-draw log density and divergence flag).
//!
//! # The divergence policy (the one rule of the project)
//!
//! A step whose log density or gradient is not finite returns a
//! *recoverable* error ([`Error::is_recoverable`]) and leaves the state as it
//! was: the loop **skips** it, counts it as a *divergence* of that chain, and
//! goes on (the chain's step counter advances, so a kept draw at that step
//! repeats the previous state, flagged in [`Trace::diverged`]). A chain whose
//! divergences exceed [`RunConfig::divergence_limit`] (`max_divergences`,
//! or a tenth of the run's steps if that is fewer) **stops**; the other
//! chains finish the round, its draws are delivered, and the run ends with
//! [`RunOutput::stop`] = [`Stop::Divergences`] (no further checkpoint, so
//! the last one stays the point to resume from after changing the set-up).
//! Any other error (a failing model, a bad batch) stops the run at once and
//! is returned, wrapped in [`Error::InChain`], after the draws of the round
//! so far were delivered. `max_divergences = 0` makes the first divergence
//! stop the run. A chain *every* step of which diverged produced nothing
//! but its starting point: the run then also ends with
//! [`Stop::Divergences`], whatever the limit.
//!
//! # Checkpoint and resume
//!
//! A [`Checkpoint`] is plain serde data: the steps every chain completed and
//! each [`Chain`] (state, generator, cursor, counters). [`run`] starts from
//! one: [`Checkpoint::start`] makes the fresh one, and a saved one continues
//! a run bit-identically. [`RunFiles`] is the observer that streams the
//! draws to `samples.csv` and (optionally) writes `checkpoint.json` after
//! every round, atomically, with the byte length and checksum of the draws
//! file at that moment; [`RunFiles::resume`] reads it back, validates every
//! field, cuts the draws file back to the checkpoint and returns the draws
//! already collected.
//!
//! # Observers
//!
//! An [`Observer`] sees the run's events: [`Observer::on_start`],
//! [`Observer::on_draws`] (each round's draws, draw-major),
//! [`Observer::on_round`] (the checkpoint after each round),
//! [`Observer::on_finish`], [`Observer::on_progress`] (from the worker
//! threads, every 100 steps of a chain) and [`Observer::interrupted`]
//! (polled every 100 steps: a `true` ends the run early with
//! [`Stop::Interrupted`], as Ctrl-C does in a front end). Observers combine
//! as tuples: `(RunFiles, MyProgress)`. The loop itself knows nothing about
//! files or terminals.
//!
//! ```no_run
//! # use langevin::run::*;
//! # use langevin::sgmcmc::{Sghmc, SghmcConfig};
//! # use langevin::{FnDensity, ParamLayout, Params};
//! # fn main() -> langevin::Result<()> {
//! let density = FnDensity::new(|x: &[f64], _: &(), g: &mut [f64]| {
//!     g[0] = -x[0];
//!     -0.5 * x[0] * x[0]
//! });
//! let sghmc = Sghmc::new(density, SghmcConfig::default())?;
//! let layout = ParamLayout::new([("x", vec![])])?;
//! let config = RunConfig { steps: 10_000, ..Default::default() };
//! let start = Checkpoint::start(&sghmc, &FullBatch(()), 42, 4, |_, _| Ok(Params::zeros(layout.clone())))?;
//! let out = run(&sghmc, &FullBatch(()), &config, start, None, &mut ())?;
//! println!("{:?}", out.samples.summary()?);
//! # Ok(()) }
//! ```

mod converge;
mod files;
#[cfg(feature = "mpi")]
mod mpi;
mod observer;
mod team;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

pub use crate::samples::{Samples, Thinning, Trace};
pub use converge::{Until, Verdict};
pub use files::{read_checkpoint_user, write_json_atomic, RunFiles, CHECKPOINT_FILE, SAMPLES_FILE};
pub use langevin_core::{BatchRef, BatchSource, FnBatches, FullBatch, ShuffledIndices};
#[cfg(feature = "mpi")]
pub use mpi::{MpiAllreduce, MpiTeam};
pub use observer::{Draw, Observer, RunInfo};
pub use team::{chains_of, run_team, Solo, Team};

use crate::adapt::{AdaptConfig, Adaptive, Warmup, WarmupState, Windows};

use langevin_core::{chain_rng, ChainRng, Error, Params, Result, Transform, TransformState};

/// Steps between two calls of [`Observer::on_progress`] (and two polls of
/// [`Observer::interrupted`]) in a chain.
pub const PROGRESS_TICK: u64 = 100;

/// How long a run is and how it is carried out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Updates per chain.
    pub steps: u64,
    /// Which updates are kept as draws.
    pub thinning: Thinning,
    /// Steps per round (`None`: `max(steps / 20, 1000)`). Draws reach the
    /// observer, and checkpoints are taken, at the end of each round.
    pub round: Option<u64>,
    /// A chain stops after more than this many divergent (skipped) steps, or
    /// more than a tenth of `steps`, whichever is fewer
    /// ([`RunConfig::divergence_limit`]).
    pub max_divergences: u64,
    /// Worker threads (`None`: one per core); at most one per chain. The
    /// draws do not depend on it.
    pub threads: Option<usize>,
    /// `Some`: stop as soon as the draws have converged, `steps` being the
    /// maximum ([`Until`]); `None`: run all `steps`.
    #[serde(default)]
    pub until: Option<Until>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            thinning: Thinning::default(),
            round: None,
            max_divergences: 100,
            threads: None,
            until: None,
        }
    }
}

impl RunConfig {
    /// Check the settings (a run that keeps no draw is refused).
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::config("steps", "must be >= 1"));
        }
        self.thinning.check_steps(self.steps)?;
        if self.round == Some(0) {
            return Err(Error::config("round", "must be >= 1"));
        }
        if self.threads == Some(0) {
            return Err(Error::config("threads", "must be >= 1"));
        }
        if let Some(u) = &self.until {
            u.validate()?;
        }
        Ok(())
    }

    /// The divergences a chain may have before it stops:
    /// `min(max_divergences, max(1, steps / 10))`, so that the rule is
    /// relative to the run (a 50-step run stops after 6 divergences, not 101).
    pub fn divergence_limit(&self) -> u64 {
        self.max_divergences.min((self.steps / 10).max(1))
    }

    /// Steps per round: `round`, or `max(steps / 20, 1000)` for a run of
    /// fixed length and [`RunConfig::check_every`] for a run until converged.
    pub fn round_len(&self) -> u64 {
        self.round
            .unwrap_or_else(|| self.check_every().unwrap_or((self.steps / 20).max(1000)))
    }

    /// A run until converged checks its verdict (and bounds its draws) at
    /// every multiple of `max(burn_in / 2, 1000)` steps after the warm-up
    /// and at the end, whatever the round length: rounds are cut at these
    /// steps, so checkpointing (which sets the round length) does not change
    /// where the run stops or which draws it keeps. `None` for a run of
    /// fixed length.
    pub fn check_every(&self) -> Option<u64> {
        self.until
            .as_ref()
            .map(|_| (self.thinning.burn_in / 2).max(1000))
    }

    /// Worker threads for `chains` chains.
    pub fn workers(&self, chains: usize) -> usize {
        self.threads
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|p| p.get())
                    .unwrap_or(1)
            })
            .clamp(1, chains.max(1))
    }
}

/// One chain of a run: everything it needs to continue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(
    serialize = "S: Serialize, C: Serialize",
    deserialize = "S: serde::de::DeserializeOwned, C: serde::de::DeserializeOwned"
))]
pub struct Chain<S, C> {
    /// The transform state.
    pub state: S,
    /// The chain's generator (every random number of the chain).
    pub rng: ChainRng,
    /// Position in the batch stream.
    pub cursor: C,
    /// Updates completed (skipped divergent steps included).
    pub step: u64,
    /// Draws kept so far.
    pub draws: usize,
    /// Divergent (skipped) steps so far.
    pub divergences: u64,
    /// Stopped on divergences.
    pub stopped: bool,
    /// The warm-up's accumulators ([`run_adaptive`]; `None` outside the warm-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<WarmupState>,
}

/// Everything needed to continue a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(
    serialize = "S: Serialize, C: Serialize",
    deserialize = "S: serde::de::DeserializeOwned, C: serde::de::DeserializeOwned"
))]
pub struct Checkpoint<S, C> {
    /// Steps every (running) chain has completed.
    pub steps_done: u64,
    pub chains: Vec<Chain<S, C>>,
    /// The thinning interval, once a run until converged has doubled it
    /// (`None`: the configured one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thin: Option<u64>,
    /// The index of the first chain held here: `chains[i]` is chain
    /// `first_chain + i` of the run (its generator, batch stream and the
    /// `chain` column of the draws). Nonzero for a part of a run
    /// ([`Checkpoint::start_range`], [`Checkpoint::slice`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub first_chain: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl<S: TransformState, C> Checkpoint<S, C> {
    /// The start of a run of `n_chains` chains: chain `k` gets
    /// `rng = chain_rng(seed, k)`, its parameters from `init(k, &mut rng)`,
    /// then `transform.init(params, &mut rng)`, and the source's first cursor.
    pub fn start<T, B>(
        transform: &T,
        batches: &B,
        seed: u64,
        n_chains: usize,
        init: impl FnMut(usize, &mut ChainRng) -> Result<Params>,
    ) -> Result<Self>
    where
        T: Transform<State = S>,
        B: BatchSource<Cursor = C>,
    {
        Self::start_range(transform, batches, seed, 0..n_chains, init)
    }

    /// The start of chains `range` of a run (as [`Checkpoint::start`] makes
    /// them: chain `k` draws from `chain_rng(seed, k)`), so that each chain
    /// of a run split over processes computes exactly what it computes in
    /// one process.
    pub fn start_range<T, B>(
        transform: &T,
        batches: &B,
        seed: u64,
        range: std::ops::Range<usize>,
        mut init: impl FnMut(usize, &mut ChainRng) -> Result<Params>,
    ) -> Result<Self>
    where
        T: Transform<State = S>,
        B: BatchSource<Cursor = C>,
    {
        if range.is_empty() {
            return Err(Error::config("chains", "at least one chain is needed"));
        }
        let first_chain = range.start;
        let mut chains = Vec::with_capacity(range.len());
        for k in range {
            let mut rng = chain_rng(seed, k as u64);
            let p0 = init(k, &mut rng)?;
            let state = transform.init(p0, &mut rng)?;
            chains.push(Chain {
                state,
                rng,
                cursor: batches.cursor(k),
                step: 0,
                draws: 0,
                divergences: 0,
                stopped: false,
                warmup: None,
            });
        }
        Ok(Self {
            steps_done: 0,
            chains,
            thin: None,
            first_chain,
        })
    }

    /// The chain indices held here.
    pub fn chain_range(&self) -> std::ops::Range<usize> {
        self.first_chain..self.first_chain + self.chains.len()
    }

    /// Chains `range` (run indices, within [`Checkpoint::chain_range`]) as
    /// a checkpoint of their own.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Result<Self>
    where
        S: Clone,
        C: Clone,
    {
        let held = self.chain_range();
        if range.start < held.start || range.end > held.end || range.start > range.end {
            return Err(Error::config(
                "chains",
                format!(
                    "chains {}..{} are not within the checkpoint's {}..{}",
                    range.start, range.end, held.start, held.end
                ),
            ));
        }
        let (a, b) = (range.start - held.start, range.end - held.start);
        Ok(Self {
            steps_done: self.steps_done,
            chains: self.chains[a..b].to_vec(),
            thin: self.thin,
            first_chain: range.start,
        })
    }

    /// The thinning in force: the configured one, with the interval doubled
    /// as a run until converged recorded in [`Checkpoint::thin`].
    pub fn thinning(&self, config: &RunConfig) -> Thinning {
        Thinning {
            burn_in: config.thinning.burn_in,
            thin: self.thin.unwrap_or(config.thinning.thin),
        }
    }

    /// Check that this checkpoint is a consistent point of a run with
    /// `config` over `dim` scalars: every chain's step, draw count and
    /// divergence count agree with the thinning and the limit, and its
    /// parameters have the right length. `what` names the file in errors.
    pub fn validate(&self, config: &RunConfig, dim: usize, what: &str) -> Result<()> {
        let bad = |field: String, reason: String| Err(Error::checkpoint(what, field, reason));
        if self.chains.is_empty() {
            return bad("chains".into(), "no chains saved".into());
        }
        if let Some(t) = self.thin {
            let base = config.thinning.thin.max(1);
            let doubled = t >= base && t % base == 0 && (t / base).is_power_of_two();
            if config.until.is_none() || !doubled {
                return bad(
                    "thin".into(),
                    format!(
                        "{t} is not the configured thinning {base} doubled by a run until converged"
                    ),
                );
            }
        }
        let thinning = self.thinning(config);
        if self.steps_done > config.steps {
            return bad(
                "steps_done".into(),
                format!(
                    "{} is past the run's {} steps",
                    self.steps_done, config.steps
                ),
            );
        }
        for (k, ch) in self.chains.iter().enumerate() {
            let field = |f: &str| format!("chains[{k}].{f}");
            if let Err(why) = ch.state.check() {
                return bad(field("state"), why);
            }
            let p = ch.state.params();
            if p.len() != dim {
                return bad(
                    field("state"),
                    format!("{} parameters, the model has {dim}", p.len()),
                );
            }
            if ch.stopped {
                if ch.step > self.steps_done || ch.divergences <= config.divergence_limit() {
                    return bad(
                        field("stopped"),
                        "a stopped chain must have exceeded the divergence limit".into(),
                    );
                }
            } else if ch.step != self.steps_done {
                return bad(
                    field("step"),
                    format!("{}, but steps_done is {}", ch.step, self.steps_done),
                );
            } else if ch.divergences > config.divergence_limit() || ch.divergences > ch.step {
                return bad(
                    field("divergences"),
                    format!("{} is inconsistent with step {}", ch.divergences, ch.step),
                );
            }
            let expected = thinning.n_draws(ch.step) as usize;
            if ch.draws != expected {
                return bad(
                    field("draws"),
                    format!(
                        "{}, but {expected} draws are kept by step {}",
                        ch.draws, ch.step
                    ),
                );
            }
            if p.values().iter().any(|v| !v.is_finite()) {
                return bad(field("state"), "non-finite parameters".into());
            }
        }
        Ok(())
    }
}

/// Why a run ended before its last step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stop {
    /// These chains exceeded [`RunConfig::max_divergences`].
    Divergences { chains: Vec<usize>, limit: u64 },
    /// [`Observer::interrupted`] said so.
    Interrupted,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutput<S> {
    /// Every kept draw of every chain (those before a resumed checkpoint included).
    pub samples: Samples,
    /// The final state of every chain.
    pub states: Vec<S>,
    /// Divergent (skipped) steps per chain.
    pub divergences: Vec<u64>,
    /// Steps every running chain completed.
    pub steps_done: u64,
    /// Why the run ended early (`None`: it ran all its steps, or converged).
    pub stop: Option<Stop>,
    /// The convergence verdict on the draws (`None` with fewer than
    /// [`crate::diagnostics::MIN_DRAWS`] draws per chain); under
    /// [`RunConfig::until`] its rule, otherwise R-hat ≤ 1.01 and ESS ≥ 400.
    pub verdict: Option<Verdict>,
    /// The thinning the draws were kept with (doubled under [`RunConfig::until`]).
    pub thinning: Thinning,
}

/// Run the chains of `start` to `config.steps` (see the module docs).
///
/// `previous` holds the draws collected before `start` (from
/// [`RunFiles::resume`]); `None` for a fresh start. The observer sees every
/// event; pass `&mut ()` for none.
pub fn run<T, B, O>(
    transform: &T,
    batches: &B,
    config: &RunConfig,
    start: Checkpoint<T::State, B::Cursor>,
    previous: Option<Samples>,
    observer: &mut O,
) -> Result<RunOutput<T::State>>
where
    T: Transform<Batch = B::Batch>,
    B: BatchSource,
    O: Observer<T::State, B::Cursor> + ?Sized,
{
    drive(
        transform, batches, config, start, previous, observer, &NoHook,
    )
}

/// [`run`] with warm-up adaptation ([`crate::adapt`]): during the burn-in
/// (`config.thinning.burn_in` steps) each chain sets its step size and
/// estimates its preconditioner as `adapt` says; the draws after it are
/// made with the tuning the warm-up ended with.
pub fn run_adaptive<T, B, O>(
    transform: &T,
    batches: &B,
    config: &RunConfig,
    adapt: &AdaptConfig,
    start: Checkpoint<T::State, B::Cursor>,
    previous: Option<Samples>,
    observer: &mut O,
) -> Result<RunOutput<T::State>>
where
    T: Adaptive<Batch = B::Batch>,
    B: BatchSource,
    O: Observer<T::State, B::Cursor> + ?Sized,
{
    adapt.validate()?;
    if let Some(first) = start.chains.first() {
        if first.state.tuning().is_none() {
            return Err(Error::config(
                "adapt",
                "this transform's state carries no tuning to adapt",
            ));
        }
    }
    let warmup = config.thinning.burn_in;
    let hook = WarmupHook(Warmup {
        config: adapt,
        windows: Windows::new(warmup),
        warmup,
    });
    drive(transform, batches, config, start, previous, observer, &hook)
}

/// Work the run loop does around each step of a chain (the warm-up).
trait StepHook<T: Transform, B: BatchSource>: Sync {
    /// Before the step that follows `ch.step` completed steps.
    fn before(
        &self,
        _t: &T,
        _b: &B,
        _k: usize,
        _ch: &mut Chain<T::State, B::Cursor>,
    ) -> Result<()> {
        Ok(())
    }
    /// After a step on `batch`.
    fn after(&self, _t: &T, _batch: &T::Batch, _ch: &mut Chain<T::State, B::Cursor>) -> Result<()> {
        Ok(())
    }
}

struct NoHook;
impl<T: Transform, B: BatchSource> StepHook<T, B> for NoHook {}

struct WarmupHook<'a>(Warmup<'a>);
impl<T, B> StepHook<T, B> for WarmupHook<'_>
where
    T: Adaptive<Batch = B::Batch>,
    B: BatchSource,
{
    fn before(&self, t: &T, b: &B, k: usize, ch: &mut Chain<T::State, B::Cursor>) -> Result<()> {
        if ch.step >= self.0.warmup {
            ch.warmup = None;
            return Ok(());
        }
        let warm = ch.warmup.get_or_insert_with(WarmupState::default);
        self.0.before_step(
            t,
            b,
            k,
            ch.step,
            &mut ch.state,
            warm,
            &mut ch.cursor,
            &mut ch.rng,
        )
    }
    fn after(&self, t: &T, batch: &T::Batch, ch: &mut Chain<T::State, B::Cursor>) -> Result<()> {
        if let Some(warm) = ch.warmup.as_mut() {
            self.0.after_step(t, batch, ch.step, &ch.state, warm)?;
        }
        if ch.step >= self.0.warmup {
            ch.warmup = None;
        }
        Ok(())
    }
}

fn drive<T, B, O, H>(
    transform: &T,
    batches: &B,
    config: &RunConfig,
    start: Checkpoint<T::State, B::Cursor>,
    previous: Option<Samples>,
    observer: &mut O,
    hook: &H,
) -> Result<RunOutput<T::State>>
where
    T: Transform<Batch = B::Batch>,
    B: BatchSource,
    O: Observer<T::State, B::Cursor> + ?Sized,
    H: StepHook<T, B>,
{
    config.validate()?;
    let Some(first) = start.chains.first() else {
        return Err(Error::config("chains", "at least one chain is needed"));
    };
    let names = first.state.params().layout().scalar_names();
    let dim = names.len();
    start.validate(config, dim, "checkpoint")?;
    let n = start.chains.len();
    let mut samples = previous.unwrap_or_else(|| Samples::new(names.clone(), n));
    if samples.chains.len() != n || samples.dim() != dim {
        return Err(Error::DimensionMismatch {
            what: "chains of the previous draws",
            expected: n,
            got: samples.chains.len(),
        });
    }
    // The output's names are the layout's, however the previous draws were read.
    samples.names = names.clone();
    for (k, (tr, ch)) in samples.chains.iter().zip(&start.chains).enumerate() {
        if tr.n_draws() != ch.draws {
            return Err(Error::checkpoint(
                "draws",
                format!("chain {k}"),
                format!(
                    "{} draws given, the checkpoint says {}",
                    tr.n_draws(),
                    ch.draws
                ),
            ));
        }
    }
    let mut ck = start;
    let first = ck.first_chain;
    observer.on_start(
        &RunInfo {
            names: &names,
            config,
            chains: n,
        },
        &ck,
    )?;
    let round = config.round_len();
    let mut stop = None;
    let mut verdict: Option<Verdict> = None;
    let mut converged = false;
    let check_every = config.check_every();
    while ck.steps_done < config.steps && stop.is_none() && !converged {
        let mut end = (ck.steps_done + round).min(config.steps);
        if let Some(c) = check_every {
            end = end.min((ck.steps_done / c + 1) * c);
        }
        let thinning = ck.thinning(config);
        let mut new: Vec<Vec<Draw>> = (0..n).map(|_| Vec::new()).collect();
        let interrupted = AtomicBool::new(false);
        let r = advance_all(
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
        );
        // Deliver what was collected, in draw-major order, even when stopping.
        let longest = new.iter().map(Vec::len).max().unwrap_or(0);
        let mut round_draws = Vec::with_capacity(new.iter().map(Vec::len).sum());
        let mut iters: Vec<_> = new.into_iter().map(Vec::into_iter).collect();
        for _ in 0..longest {
            for it in iters.iter_mut() {
                if let Some(d) = it.next() {
                    round_draws.push(d);
                }
            }
        }
        for d in &round_draws {
            let i = d.chain - first;
            ck.chains[i].draws += 1;
            samples.chains[i].push_with(&d.values, d.log_density, d.diverged)?;
        }
        observer.on_draws(&round_draws)?;
        r?;
        if interrupted.load(Ordering::Relaxed) {
            stop = Some(Stop::Interrupted);
            break;
        }
        ck.steps_done = end;
        let stopped: Vec<usize> = (0..n)
            .filter(|&k| ck.chains[k].stopped)
            .map(|k| first + k)
            .collect();
        if !stopped.is_empty() {
            stop = Some(Stop::Divergences {
                chains: stopped,
                limit: config.divergence_limit(),
            });
            break;
        }
        if let Some(until) = &config.until {
            let at_check = check_every.is_some_and(|c| ck.steps_done % c == 0)
                || ck.steps_done == config.steps;
            if at_check && ck.steps_done >= config.thinning.burn_in {
                // Keep at most `max_draws` per chain by doubling the interval.
                while samples.min_draws() > until.max_draws {
                    for tr in samples.chains.iter_mut() {
                        tr.keep_every_second();
                    }
                    for ch in ck.chains.iter_mut() {
                        ch.draws /= 2;
                    }
                    ck.thin = Some(ck.thinning(config).thin * 2);
                    observer.on_thinned(&samples)?;
                }
                if samples.min_draws() >= crate::diagnostics::MIN_DRAWS {
                    let v =
                        Verdict::of(&samples, until.target_ess, until.max_rhat, until.min_draws)?;
                    observer.on_check(&v);
                    converged = v.converged;
                    verdict = Some(v);
                }
            }
        }
        observer.on_round(&ck)?;
    }
    if stop.is_none() {
        // A chain none of whose steps was finite produced no result.
        let dead: Vec<usize> = (0..n)
            .filter(|&k| {
                let ch = &ck.chains[k];
                ch.step > 0 && ch.divergences == ch.step
            })
            .map(|k| first + k)
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
    let thinning = ck.thinning(config);
    let out = RunOutput {
        samples,
        divergences: ck.chains.iter().map(|c| c.divergences).collect(),
        states: ck.chains.into_iter().map(|c| c.state).collect(),
        steps_done: ck.steps_done,
        stop,
        verdict,
        thinning,
    };
    observer.on_finish(&out)?;
    Ok(out)
}

/// Advance every chain to step `end` on `config.workers(K)` threads that take
/// chains in order; `chains[i]` is chain `first + i` of the run.
#[allow(clippy::too_many_arguments)]
fn advance_all<T, B, O, H>(
    transform: &T,
    batches: &B,
    config: &RunConfig,
    thinning: Thinning,
    first: usize,
    chains: &mut [Chain<T::State, B::Cursor>],
    new: &mut [Vec<Draw>],
    end: u64,
    observer: &O,
    interrupted: &AtomicBool,
    hook: &H,
) -> Result<()>
where
    T: Transform<Batch = B::Batch>,
    B: BatchSource,
    O: Observer<T::State, B::Cursor> + ?Sized,
    H: StepHook<T, B>,
{
    let workers = config.workers(chains.len());
    let abort = AtomicBool::new(false);
    let queue = Mutex::new(chains.iter_mut().zip(new.iter_mut()).enumerate());
    let first_err: Mutex<Option<Error>> = Mutex::new(None);
    let work = || loop {
        let next = match queue.lock() {
            Ok(mut q) => q.next(),
            Err(_) => None,
        };
        let Some((i, (ch, out))) = next else { break };
        let k = first + i;
        let r = advance(
            transform,
            batches,
            config,
            thinning,
            k,
            ch,
            out,
            end,
            observer,
            &abort,
            interrupted,
            hook,
        );
        if let Err(e) = r {
            abort.store(true, Ordering::Relaxed);
            if let Ok(mut slot) = first_err.lock() {
                slot.get_or_insert(Error::InChain {
                    chain: k,
                    error: Box::new(e),
                });
            }
        }
    };
    if workers == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(work);
            }
        });
    }
    match first_err.into_inner() {
        Ok(None) => Ok(()),
        Ok(Some(e)) => Err(e),
        Err(_) => Err(Error::Density("a chain thread panicked".into())),
    }
}

/// Advance one chain up to step `end` (or until it stops on divergences).
#[allow(clippy::too_many_arguments)]
fn advance<T, B, O, H>(
    transform: &T,
    batches: &B,
    config: &RunConfig,
    thinning: Thinning,
    k: usize,
    ch: &mut Chain<T::State, B::Cursor>,
    out: &mut Vec<Draw>,
    end: u64,
    observer: &O,
    abort: &AtomicBool,
    interrupted: &AtomicBool,
    hook: &H,
) -> Result<()>
where
    T: Transform<Batch = B::Batch>,
    B: BatchSource,
    O: Observer<T::State, B::Cursor> + ?Sized,
    H: StepHook<T, B>,
{
    while ch.step < end && !ch.stopped {
        if abort.load(Ordering::Relaxed) || interrupted.load(Ordering::Relaxed) {
            break;
        }
        if ch.step.is_multiple_of(PROGRESS_TICK) && observer.interrupted() {
            interrupted.store(true, Ordering::Relaxed);
            break;
        }
        hook.before(transform, batches, k, ch)?;
        let batch = batches.next(k, ch.step, &mut ch.cursor, &mut ch.rng)?;
        let diverged = match transform.step(&mut ch.state, &batch, &mut ch.rng) {
            Ok(_) => false,
            Err(e) if e.is_recoverable() => {
                ch.divergences += 1;
                if ch.divergences > config.divergence_limit() {
                    ch.stopped = true;
                    break;
                }
                true
            }
            Err(e) => return Err(e),
        };
        ch.step += 1;
        hook.after(transform, &batch, ch)?;
        if thinning.keeps(ch.step) {
            out.push(Draw {
                chain: k,
                index: ch.draws + out.len(),
                values: ch.state.params().values().to_vec(),
                log_density: ch.state.log_density(),
                diverged,
            });
        }
        if ch.step.is_multiple_of(PROGRESS_TICK) {
            observer.on_progress(PROGRESS_TICK);
        }
    }
    Ok(())
}
