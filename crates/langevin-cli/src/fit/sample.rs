//! The samplers of `langevin fit` (sgld, sghmc, sgnht, baoa, map) on the
//! library's run loop ([`langevin::run`]): the CLI only builds the
//! transform and the batch source, and attaches two observers, the run
//! files (`samples.csv`, `checkpoint.json`) and the progress bar.

use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Device};
use indicatif::{ProgressBar, ProgressStyle};
use langevin::adapt::Adaptive;
use langevin::run::{
    BatchRef, BatchSource, Checkpoint, Observer, RunFiles, RunInfo, Samples, ShuffledIndices, Stop,
    Team, Thinning, Verdict,
};
use langevin::sgmcmc::{
    Baoa, BaoaConfig, MomentaInit, Sghmc, SghmcConfig, Sgld, SgldConfig, Sgnht, SgnhtConfig,
};
use langevin::shard::{Allreduce, Shard};
use langevin_core::{LogDensity, Params, TransformState, Tuning};
use langevin_models::{Batch, Minibatches, ShardMinibatches};

use super::args::MethodArg;
use super::data::Prepared;
use super::plan::FitConfig;
use crate::exit::{bad_input, Diverged};

/// How a sampler run is carried out.
pub struct SampleRun<'a> {
    pub cfg: &'a FitConfig,
    pub prep: &'a Prepared,
    pub out_dir: &'a Path,
    pub quiet: bool,
    /// Worker threads (`None`: one per core).
    pub threads: Option<usize>,
    /// `Some((every, data))`: checkpoint every `every` steps, saving `data`.
    pub checkpoint: Option<(u64, serde_json::Value)>,
    /// Continue the checkpointed run in `out_dir`.
    pub resume: bool,
    /// The chains to run (`0..cfg.chains`, or a part of the run).
    pub chains: std::ops::Range<usize>,
    /// Under mpirun: the ranks that share the chains (rank 0 writes).
    pub team: Option<&'a dyn Team>,
    /// `--data-parallel`: the ranks that share the rows (every rank runs
    /// every chain; rank 0 writes).
    pub shards: Option<Shards<'a>>,
}

/// The ranks of a data-parallel run.
pub struct Shards<'a> {
    /// For the start of the run (rank 0 sends a checkpoint to resume).
    pub team: &'a dyn Team,
    /// For the gradients.
    pub reduce: &'a dyn Allreduce,
}

/// The draws of a finished sampler run and its divergences per chain.
pub struct Sampled {
    pub samples: Samples,
    pub divergences: Vec<u64>,
    /// Steps every chain completed (fewer than the maximum when a run until
    /// converged stopped early).
    pub steps_done: u64,
    /// The thinning the draws were kept with.
    pub thinning: Thinning,
    /// Each chain's final tuning (step-size factor and preconditioner).
    pub tuning: Vec<Tuning>,
}

impl SampleRun<'_> {
    /// Build the method's transform and run it.
    pub fn run(&self) -> Result<Sampled> {
        let cfg = self.cfg;
        let (model, prep) = (&self.prep.model, self.prep);
        let full = model.batch(&prep.train_x, &prep.train_y, DType::F32, &Device::Cpu)?;
        match (&self.shards, prep.shard) {
            (Some(sh), Some(rows)) => {
                let density = super::cv::sharded_density(cfg, prep, self.quiet, sh.reduce)?;
                let batches = FailingShards {
                    inner: ShardMinibatches::new(full, rows.lo, rows.n_train, cfg.batch_size)?,
                    from: failing_from(Some(sh.team)),
                };
                self.methods(&density, density.centre(), &batches)
            }
            (None, None) => {
                let density = super::cv::density(cfg, prep, self.quiet)?;
                let batches = Failing {
                    inner: Minibatches::new(full, cfg.batch_size)?,
                    from: failing_from(self.team),
                };
                self.methods(&density, density.centre(), &batches)
            }
            _ => anyhow::bail!("internal error: a data-parallel run without its shard"),
        }
    }

    /// The method's transform on `density`, run over `batches`.
    fn methods<D, B>(&self, density: &D, centre: Option<Params>, batches: &B) -> Result<Sampled>
    where
        D: LogDensity<Aux = ()>,
        B: BatchSource<Batch = D::Batch, Cursor = ShuffledIndices>,
    {
        let cfg = self.cfg;
        let (eps, temp) = (super::cv::step_schedule(cfg)?, cfg.temperature.into());
        let centre = centre.as_ref();
        match cfg.method {
            MethodArg::Sgld => self.drive(
                centre,
                &Sgld::new(
                    density,
                    SgldConfig {
                        step_size: eps,
                        temperature: temp,
                        beta: 0.0,
                    },
                )
                .map_err(bad_input)?,
                batches,
            ),
            MethodArg::Sghmc | MethodArg::Map => self.drive(
                centre,
                &Sghmc::new(
                    density,
                    SghmcConfig {
                        step_size: eps,
                        temperature: temp,
                        friction: cfg.friction,
                        beta: 0.0,
                        sigma: 1.0,
                        momenta: if cfg.method == MethodArg::Map {
                            MomentaInit::Constant(0.0)
                        } else {
                            MomentaInit::Normal
                        },
                    },
                )
                .map_err(bad_input)?,
                batches,
            ),
            MethodArg::Sgnht => self.drive(
                centre,
                &Sgnht::new(
                    density,
                    SgnhtConfig {
                        step_size: eps,
                        temperature: temp,
                        friction: cfg.friction,
                        beta: 0.0,
                        sigma: 1.0,
                        momenta: MomentaInit::Normal,
                        thermostat: None,
                    },
                )
                .map_err(bad_input)?,
                batches,
            ),
            MethodArg::Baoa => self.drive(
                centre,
                &Baoa::new(
                    density,
                    BaoaConfig {
                        step_size: eps,
                        temperature: temp,
                        friction: cfg.friction,
                        sigma: 1.0,
                        momenta: MomentaInit::Normal,
                    },
                )
                .map_err(bad_input)?,
                batches,
            ),
            m => anyhow::bail!("internal error: --method {m:?} is not a sampler"),
        }
    }

    fn drive<T, B>(&self, centre: Option<&Params>, t: &T, batches: &B) -> Result<Sampled>
    where
        T: Adaptive,
        B: BatchSource<Batch = T::Batch, Cursor = ShuffledIndices>,
    {
        let (cfg, model) = (self.cfg, &self.prep.model);
        let mut config = cfg.run_config(self.checkpoint.as_ref().map(|c| c.0), self.threads);
        if self.shards.is_some() {
            // Every evaluation is a collective: the chains take turns on one
            // thread, in the same order on every rank.
            config.threads = Some(1);
        }
        let names = model.param_names().to_vec();
        let n_train = cfg.n_train;
        if let Some(team) = self.team.filter(|t| t.rank() > 0) {
            // Another rank: its block of the chains, nothing written.
            let out = langevin::run::run_team(
                t,
                batches,
                &config,
                cfg.adapt_config().as_ref(),
                None,
                None,
                &mut (),
                team,
            );
            super::ranks::team_done();
            return self.finish(out?);
        }
        let fresh = || {
            // With control variates every chain starts at their centre (the
            // MAP), where their gradient noise is smallest (Baker et al.).
            Checkpoint::start_range(t, batches, cfg.seed, self.chains.clone(), |_, rng| {
                Ok(centre.cloned().unwrap_or_else(|| model.init(rng)))
            })
        };
        if let Some(sh) = self.shards.as_ref().filter(|s| s.team.rank() > 0) {
            // Another rank of a data-parallel run: every chain, with its
            // shard of the rows, nothing written; rank 0 sends the start.
            let (start, previous) = if self.resume {
                let bytes = sh.team.broadcast(Vec::new())?;
                let (start, previous): (Checkpoint<T::State, ShuffledIndices>, Samples) =
                    serde_json::from_slice(&bytes)?;
                (start, Some(previous))
            } else {
                (fresh()?, None)
            };
            let out = match cfg.adapt_config() {
                Some(adapt) => langevin::run::run_adaptive(
                    t,
                    batches,
                    &config,
                    &adapt,
                    start,
                    previous,
                    &mut (),
                ),
                None => langevin::run::run(t, batches, &config, start, previous, &mut ()),
            };
            // Every rank ends the run the same way (the density's sums make
            // the chains identical); rank 0 reports it.
            super::ranks::team_done();
            return self.finish(out?);
        }
        let (files, start, previous) = if self.resume {
            let (files, start, previous) = RunFiles::resume::<T::State, ShuffledIndices>(
                self.out_dir,
                &config,
                &names,
                |c| c.is_valid_for(n_train),
            )?;
            if let Some(sh) = &self.shards {
                sh.team
                    .broadcast(serde_json::to_vec(&(&start, &previous)).map_err(|e| {
                        anyhow::anyhow!("cannot send the checkpoint to the other ranks: {e}")
                    })?)?;
            }
            (files, start, Some(previous))
        } else {
            let files = RunFiles::create(
                self.out_dir,
                &names,
                self.checkpoint.as_ref().map(|c| c.1.clone()),
            )?;
            (files, fresh()?, None)
        };
        if start.chain_range() != self.chains {
            anyhow::bail!(
                "{}: the checkpoint holds chains {:?}, this run is of chains {:?}",
                self.out_dir.display(),
                start.chain_range(),
                self.chains
            );
        }
        // Rank 0's progress bar counts the steps of its own chains.
        let shown = match self.team {
            Some(t) => langevin::run::chains_of(0, t.size(), self.chains.len()).len(),
            None => self.chains.len(),
        };
        let mut observers = (files, Progress::new(self.quiet, cfg, shown));
        let out = match (cfg.adapt_config(), self.team) {
            (adapt, Some(team)) => {
                let out = langevin::run::run_team(
                    t,
                    batches,
                    &config,
                    adapt.as_ref(),
                    Some(start),
                    previous,
                    &mut observers,
                    team,
                );
                super::ranks::team_done();
                out
            }
            (Some(adapt), None) => langevin::run::run_adaptive(
                t,
                batches,
                &config,
                &adapt,
                start,
                previous,
                &mut observers,
            ),
            (None, None) => {
                langevin::run::run(t, batches, &config, start, previous, &mut observers)
            }
        };
        if self.shards.is_some() && matches!(&out, Ok(_) | Err(langevin::Error::InChain { .. })) {
            // The other ranks ended the same way: no need to end the job
            // (an error of rank 0's own files ends it with MPI_Abort).
            super::ranks::team_done();
        }
        observers.1.bar.finish_and_clear();
        self.finish(out?)
    }

    /// The run's end: a divergence stop is an error (exit code 3).
    fn finish<S: TransformState>(&self, out: langevin::run::RunOutput<S>) -> Result<Sampled> {
        let names = self.prep.model.param_names().to_vec();
        if let Some(Stop::Divergences { limit, .. }) = &out.stop {
            let all_diverged = out
                .divergences
                .iter()
                .zip(&out.states)
                .any(|(&d, s)| d > 0 && d == langevin_core::TransformState::step(s));
            let why = if all_diverged {
                "every step of a chain was divergent (non-finite log posterior): no result"
                    .to_string()
            } else {
                format!(
                    "more than {limit} divergent steps (non-finite log posterior) in a chain \
                     (--max-divergences, at most a tenth of --steps)"
                )
            };
            return Err(anyhow::Error::new(Diverged(format!(
                "stopped: {why} (per chain: {:?}); the draws collected so far are in {}. \
                 Try a smaller --step-size.",
                out.divergences,
                self.out_dir.join(langevin::run::SAMPLES_FILE).display()
            ))));
        }
        let mut samples = out.samples;
        // The model's display names (feature names) rather than the layout's.
        samples.names = names;
        Ok(Sampled {
            samples,
            divergences: out.divergences,
            steps_done: out.steps_done,
            thinning: out.thinning,
            tuning: out
                .states
                .iter()
                .map(|s| s.tuning().cloned().unwrap_or_default())
                .collect(),
        })
    }
}

/// Set by an in-process front end (the Python package, on Ctrl-C) to stop
/// every sampler run in progress at its next poll ([`Observer::interrupted`],
/// every 100 steps), as [`langevin::run::Stop::Interrupted`].
pub static INTERRUPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// An "interrupted" error once [`INTERRUPT`] is set, checked every 100th
/// `step`: the polls of the loops outside the run loop (the Gaussian
/// methods' optimisers, curvature passes and filters).
pub fn check_interrupt(step: u64) -> anyhow::Result<()> {
    if step.is_multiple_of(100) && INTERRUPT.load(std::sync::atomic::Ordering::Relaxed) {
        anyhow::bail!("interrupted");
    }
    Ok(())
}

/// The step from which the batches of this rank fail: a fault injected by
/// the tests of runs under mpirun (`LANGEVIN_TEST_FAIL_RANK=R`: rank R's
/// chains fail after 1000 steps), `None` otherwise.
fn failing_from(team: Option<&dyn Team>) -> Option<u64> {
    let rank: usize = std::env::var("LANGEVIN_TEST_FAIL_RANK")
        .ok()?
        .parse()
        .ok()?;
    (team?.rank() == rank).then_some(1000)
}

/// The batch source, which fails from step `from` on (see [`failing_from`]).
struct Failing<B> {
    inner: B,
    from: Option<u64>,
}

impl<B: BatchSource> BatchSource for Failing<B> {
    type Batch = B::Batch;
    type Cursor = B::Cursor;
    fn cursor(&self, chain: usize) -> B::Cursor {
        self.inner.cursor(chain)
    }
    fn next<'a>(
        &'a self,
        chain: usize,
        step: u64,
        cursor: &mut B::Cursor,
        rng: &mut langevin_core::ChainRng,
    ) -> langevin::Result<BatchRef<'a, B::Batch>> {
        if self.from.is_some_and(|f| step >= f) {
            return Err(langevin_core::Error::Data(format!(
                "injected failure of chain {chain} at step {step} (LANGEVIN_TEST_FAIL_RANK)"
            )));
        }
        self.inner.next(chain, step, cursor, rng)
    }
}

/// [`Failing`] for a data-parallel run: the failing rank's batches carry
/// the failure, so that every rank's evaluation fails at the same step
/// (a rank that left the evaluation would leave the others waiting).
struct FailingShards {
    inner: ShardMinibatches,
    from: Option<u64>,
}

impl BatchSource for FailingShards {
    type Batch = Shard<Batch>;
    type Cursor = ShuffledIndices;
    fn cursor(&self, chain: usize) -> ShuffledIndices {
        self.inner.cursor(chain)
    }
    fn next<'a>(
        &'a self,
        chain: usize,
        step: u64,
        cursor: &mut ShuffledIndices,
        rng: &mut langevin_core::ChainRng,
    ) -> langevin::Result<BatchRef<'a, Shard<Batch>>> {
        let b = self.inner.next(chain, step, cursor, rng)?;
        if self.from.is_some_and(|f| step >= f) {
            return Ok(BatchRef::Owned(Shard::failed(
                b.global,
                format!(
                    "injected failure of chain {chain} at step {step} (LANGEVIN_TEST_FAIL_RANK)"
                ),
            )));
        }
        Ok(b)
    }
}

/// The progress bar as an observer (hidden with `--quiet`).
struct Progress {
    bar: ProgressBar,
    /// Steps per chain.
    steps: u64,
}

impl Progress {
    fn new(quiet: bool, cfg: &FitConfig, chains: usize) -> Self {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            let pb = ProgressBar::new(cfg.steps / 100 * 100 * chains as u64);
            pb.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} steps ({eta} left) {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            pb
        };
        Self {
            bar,
            steps: cfg.steps,
        }
    }
}

impl<S, C> Observer<S, C> for Progress {
    fn on_start(&mut self, _info: &RunInfo<'_>, start: &Checkpoint<S, C>) -> langevin::Result<()> {
        let shown = self.bar.length().unwrap_or(0) / (self.steps / 100 * 100).max(1);
        self.bar.inc(start.steps_done / 100 * 100 * shown);
        Ok(())
    }

    fn on_progress(&self, steps: u64) {
        self.bar.inc(steps);
    }

    fn interrupted(&self) -> bool {
        INTERRUPT.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn on_check(&mut self, v: &Verdict) {
        self.bar.set_message(format!(
            "R-hat {:.3} (<= {}), ESS {:.0} (>= {})",
            v.worst_rhat,
            v.max_rhat,
            v.min_ess_bulk.min(v.min_ess_tail),
            v.target_ess
        ));
    }
}
