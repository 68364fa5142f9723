//! NUTS, the exact reference sampler: any [`LogDensity`] on one fixed batch,
//! sampled with the No-U-Turn Sampler of [`nuts_rs`] (the sampler of nutpie).
//!
//! # Target
//!
//! In the tempered framing of [`crate::sgmcmc`], the chains target
//!
//! ```text
//! p(θ) ∝ exp(log_density(θ, batch) / T)
//! ```
//!
//! For a batch-averaged log posterior (`mean log lik + log prior / N`) on
//! the *full* data set, `T = 1/N` is the posterior itself (the SGMCMC
//! samplers' `temperature = 1/N` targets the same distribution); `T = 1`
//! samples a plain log density such as a test target. Gradients are exact
//! (one fixed batch), so there is no minibatch noise and no discretisation
//! bias: the Metropolis step inside NUTS corrects the integrator.
//!
//! # Algorithm
//!
//! Each chain runs `warmup` tuning draws (nuts-rs's windowed adaptation of a
//! diagonal, or low-rank plus diagonal, mass matrix and dual-averaging
//! adaptation of the step size to `target_accept`), then `draws` draws, of
//! which every `thin`-th is kept (the same [`Thinning`] rule as the run
//! loop, with `burn_in = warmup`). A trajectory has at most `2^max_depth - 1`
//! leapfrog steps.
//!
//! # Divergences and errors
//!
//! A non-finite log density or gradient is a *recoverable* error of
//! nuts-rs: the trajectory is ended and the draw is flagged as divergent
//! ([`Trace::diverged`]), as is a trajectory whose energy error exceeds
//! nuts-rs's limit (1000). Divergences are counted per chain, during warm-up
//! and after it; a chain with more than `max_divergences` divergent draws
//! after warm-up stops and the call returns [`Stop::Divergences`] with the
//! draws so far. Any other error of the density (a failing model) is the
//! error of the call, wrapped in [`Error::InChain`]. nuts-rs needs a
//! starting point with a finite log density and a finite, *non-zero*
//! gradient in every coordinate (its mass matrix starts from the gradient):
//! another starting point is an [`Error::InvalidConfig`] of `init` (so the
//! exact mode of a density, or a coordinate the density does not depend on,
//! cannot be a starting point).
//!
//! # Reproducibility and threads
//!
//! Chain `k` draws its starting point from `chain_rng(seed, k)` (through the
//! caller's `init`), then takes the 32-byte seed of its nuts-rs generator
//! from the same stream. Chains run on `min(threads, K)` threads and do not
//! interact, so the draws do not depend on the number of threads.
//!
//! # Reference
//!
//! Hoffman and Gelman, *The No-U-Turn Sampler*, JMLR 15 (2014);
//! Betancourt, *A Conceptual Introduction to Hamiltonian Monte Carlo* (2017);
//! nuts-rs <https://github.com/pymc-devs/nuts-rs>.
//!
//! ```no_run
//! # use langevin::nuts::{sample, NutsConfig};
//! # use langevin::{FnDensity, ParamLayout, Params};
//! # fn main() -> langevin::Result<()> {
//! let density = FnDensity::new(|x: &[f64], _: &(), g: &mut [f64]| {
//!     g[0] = -x[0];
//!     -0.5 * x[0] * x[0]
//! });
//! let layout = ParamLayout::new([("x", vec![])])?;
//! let config = NutsConfig { temperature: 1.0, ..Default::default() };
//! let out = sample(&density, &(), &config, 42, 4, |_, _| Ok(Params::zeros(layout.clone())), None, &())?;
//! println!("{:?}", out.samples.summary()?);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use nuts_rs::rand::SeedableRng as _;
use nuts_rs::{
    Chain, CpuLogpFunc, CpuMath, DiagNutsSettings, HasDims, LogpError, LowRankNutsSettings, Math,
    SamplerStats, Settings,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};

pub use crate::run::Stop;
use crate::samples::{Samples, Thinning, Trace};
use langevin_core::{chain_rng, ChainRng, Error, LogDensity, Params, Result};

/// The mass matrix (metric) NUTS adapts during warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MassMatrix {
    /// Diagonal, from the draws' variances and the gradients' (nutpie's default).
    #[default]
    Diag,
    /// Diagonal plus a low-rank correction from the draws' and gradients'
    /// leading eigenvectors (strongly correlated posteriors; costs `O(d r)`
    /// per leapfrog step and an eigen-decomposition per update).
    LowRank,
}

/// The settings of a NUTS run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NutsConfig {
    /// Tuning draws per chain (discarded). Default 1000.
    pub warmup: u64,
    /// Draws per chain after warm-up (before thinning). Default 1000; >= 1.
    pub draws: u64,
    /// Keep every `thin`-th draw after warm-up (>= 1, at most `draws`). Default 1.
    pub thin: u64,
    /// The target is `exp(log_density / temperature)` (> 0, finite). Default
    /// 1; `1/N` for a batch-averaged log posterior over `N` rows.
    pub temperature: f64,
    /// Largest tree depth: at most `2^max_depth - 1` leapfrog steps per draw
    /// (1 to 30). Default 10.
    pub max_depth: u64,
    /// Mean acceptance probability the step size is adapted to (in (0, 1)).
    /// Default 0.8.
    pub target_accept: f64,
    /// The adapted mass matrix. Default diagonal.
    pub mass: MassMatrix,
    /// A chain stops after more than this many divergent draws after warm-up
    /// (`None`: never).
    pub max_divergences: Option<u64>,
}

impl Default for NutsConfig {
    fn default() -> Self {
        Self {
            warmup: 1000,
            draws: 1000,
            thin: 1,
            temperature: 1.0,
            max_depth: 10,
            target_accept: 0.8,
            mass: MassMatrix::Diag,
            max_divergences: None,
        }
    }
}

impl NutsConfig {
    /// Check every setting ([`Error::InvalidConfig`] naming the field).
    pub fn validate(&self) -> Result<()> {
        if self.draws == 0 {
            return Err(Error::config("draws", "must be >= 1"));
        }
        if self.warmup.checked_add(self.draws).is_none() {
            return Err(Error::config("warmup", "warmup + draws overflows"));
        }
        if self.thin == 0 {
            return Err(Error::config("thin", "must be >= 1"));
        }
        if self.thin > self.draws {
            return Err(Error::config(
                "thin",
                format!(
                    "thinning ({}) is larger than the {} draws: no draw would be kept",
                    self.thin, self.draws
                ),
            ));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::config(
                "temperature",
                format!(
                    "must be finite and > 0 (NUTS samples exp(log_density / T)), got {}",
                    self.temperature
                ),
            ));
        }
        if !(1..=30).contains(&self.max_depth) {
            return Err(Error::config(
                "max_depth",
                format!("must be between 1 and 30, got {}", self.max_depth),
            ));
        }
        if !(self.target_accept > 0.0 && self.target_accept < 1.0) {
            return Err(Error::config(
                "target_accept",
                format!("must be in (0, 1), got {}", self.target_accept),
            ));
        }
        Ok(())
    }

    /// Which draws are kept: after `warmup`, every `thin`-th.
    pub fn thinning(&self) -> Thinning {
        Thinning {
            burn_in: self.warmup,
            thin: self.thin,
        }
    }

    fn apply<A>(&self, s: &mut nuts_rs::NutsSettings<nuts_rs::EuclideanAdaptOptions<A>>)
    where
        A: std::fmt::Debug + Copy + Default + Serialize,
    {
        s.num_tune = self.warmup;
        s.num_draws = self.draws;
        s.maxdepth = self.max_depth;
        s.num_chains = 1;
        s.adapt_options.step_size_settings.target_accept = self.target_accept;
    }
}

/// Sees a NUTS run as it goes; called from the chains' threads.
pub trait NutsMonitor: Sync {
    /// Chain `chain` finished draw `draw` (0-based, warm-up included).
    fn on_draw(&self, _chain: usize, _draw: u64, _warmup: bool) {}

    /// Polled before every draw of every chain: `true` ends the run (each
    /// chain stops before its next draw) with [`Stop::Interrupted`].
    fn interrupted(&self) -> bool {
        false
    }
}

/// No monitor.
impl NutsMonitor for () {}

/// What a NUTS run produced.
#[derive(Debug, Clone)]
pub struct NutsOutput {
    /// The kept draws (names from the parameter layout; per-draw log density
    /// is the density's own value, not divided by the temperature; the
    /// divergence flag of each draw).
    pub samples: Samples,
    /// Adapted step size per chain (at its last draw).
    pub step_size: Vec<f64>,
    /// Divergent draws after warm-up, per chain (kept or thinned out).
    pub divergences: Vec<u64>,
    /// Divergent draws during warm-up, per chain.
    pub warmup_divergences: Vec<u64>,
    /// Mean tree depth of the draws after warm-up, per chain.
    pub mean_tree_depth: Vec<f64>,
    /// Draws after warm-up that hit `max_depth`, per chain.
    pub max_depth_hits: Vec<u64>,
    /// Gradient evaluations per chain, warm-up and starting point included.
    pub gradient_evaluations: Vec<u64>,
    /// Gradient evaluations after warm-up, per chain.
    pub sampling_gradient_evaluations: Vec<u64>,
    /// Draws done after warm-up per chain (all of them, before thinning).
    pub sampling_draws: Vec<u64>,
    /// Wall time of the warm-up (starting point included), per chain, in seconds.
    pub warmup_seconds: Vec<f64>,
    /// Wall time after warm-up, per chain, in seconds.
    pub sampling_seconds: Vec<f64>,
    /// Why the run ended early (`None`: every draw was made).
    pub stop: Option<Stop>,
}

impl NutsOutput {
    /// Gradient evaluations per draw after warm-up, over all chains.
    pub fn gradients_per_draw(&self) -> f64 {
        let g: u64 = self.sampling_gradient_evaluations.iter().sum();
        let n: u64 = self.sampling_draws.iter().sum();
        g as f64 / n.max(1) as f64
    }
}

/// Sample `exp(density(θ, batch) / config.temperature)` with NUTS (see the
/// module docs): `n_chains` chains, chain `k` starting from
/// `init(k, &mut chain_rng(seed, k))`, on `threads` threads (`None`: one per
/// core, at most one per chain).
#[allow(clippy::too_many_arguments)]
pub fn sample<D>(
    density: &D,
    batch: &D::Batch,
    config: &NutsConfig,
    seed: u64,
    n_chains: usize,
    mut init: impl FnMut(usize, &mut ChainRng) -> Result<Params>,
    threads: Option<usize>,
    monitor: &dyn NutsMonitor,
) -> Result<NutsOutput>
where
    D: LogDensity,
    D::Batch: Sync,
{
    config.validate()?;
    if n_chains == 0 {
        return Err(Error::config("chains", "at least one chain is needed"));
    }
    if threads == Some(0) {
        return Err(Error::config("threads", "must be >= 1"));
    }
    let mut starts = Vec::with_capacity(n_chains);
    for k in 0..n_chains {
        let mut rng = chain_rng(seed, k as u64);
        let p0 = init(k, &mut rng)?;
        let mut nuts_seed = [0u8; 32];
        rng.fill_bytes(&mut nuts_seed);
        starts.push((p0, nuts_seed));
    }
    let layout = starts[0].0.layout().clone();
    if let Some((p, _)) = starts.iter().find(|(p, _)| p.layout() != &layout) {
        return Err(Error::DimensionMismatch {
            what: "starting points of the chains (layouts differ)",
            expected: layout.len(),
            got: p.len(),
        });
    }
    if layout.is_empty() {
        return Err(Error::config("init", "the parameters are empty"));
    }
    let names = layout.scalar_names();
    let workers = threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|p| p.get())
                .unwrap_or(1)
        })
        .clamp(1, n_chains);
    let stop_all = AtomicBool::new(false);
    let interrupted = AtomicBool::new(false);
    let results: Vec<Mutex<Option<Result<ChainOut>>>> =
        (0..n_chains).map(|_| Mutex::new(None)).collect();
    let queue = Mutex::new(starts.into_iter().enumerate());
    let work = || loop {
        let next = match queue.lock() {
            Ok(mut q) => q.next(),
            Err(_) => None,
        };
        let Some((k, (p0, nuts_seed))) = next else {
            break;
        };
        let ctx = ChainCtx {
            k,
            config,
            monitor,
            stop_all: &stop_all,
            interrupted: &interrupted,
        };
        let r = run_chain(density, batch, &ctx, p0, nuts_seed);
        if r.is_err() {
            stop_all.store(true, Ordering::Relaxed);
        }
        if let Ok(mut slot) = results[k].lock() {
            *slot = Some(r.map_err(|e| Error::InChain {
                chain: k,
                error: Box::new(e),
            }));
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
    let mut outs = Vec::with_capacity(n_chains);
    for slot in results {
        match slot.into_inner() {
            Ok(Some(r)) => outs.push(r?),
            _ => return Err(Error::Density("a NUTS chain thread panicked".into())),
        }
    }
    let limit = config.max_divergences;
    let stopped: Vec<usize> = (0..n_chains).filter(|&k| outs[k].stopped).collect();
    let stop = if interrupted.load(Ordering::Relaxed) {
        Some(Stop::Interrupted)
    } else if !stopped.is_empty() {
        Some(Stop::Divergences {
            chains: stopped,
            limit: limit.unwrap_or(u64::MAX),
        })
    } else {
        None
    };
    let mut samples = Samples::new(names, 0);
    let mut out = NutsOutput {
        samples: Samples::new(Vec::new(), 0),
        step_size: Vec::with_capacity(n_chains),
        divergences: Vec::with_capacity(n_chains),
        warmup_divergences: Vec::with_capacity(n_chains),
        mean_tree_depth: Vec::with_capacity(n_chains),
        max_depth_hits: Vec::with_capacity(n_chains),
        gradient_evaluations: Vec::with_capacity(n_chains),
        sampling_gradient_evaluations: Vec::with_capacity(n_chains),
        sampling_draws: Vec::with_capacity(n_chains),
        warmup_seconds: Vec::with_capacity(n_chains),
        sampling_seconds: Vec::with_capacity(n_chains),
        stop,
    };
    for c in outs {
        samples.chains.push(c.trace);
        out.step_size.push(c.step_size);
        out.divergences.push(c.divergences);
        out.warmup_divergences.push(c.warmup_divergences);
        out.mean_tree_depth.push(if c.sampling_draws > 0 {
            c.depth_sum as f64 / c.sampling_draws as f64
        } else {
            f64::NAN
        });
        out.max_depth_hits.push(c.max_depth_hits);
        out.gradient_evaluations.push(c.gradients);
        out.sampling_gradient_evaluations
            .push(c.gradients - c.warmup_gradients);
        out.sampling_draws.push(c.sampling_draws);
        out.warmup_seconds.push(c.warmup_seconds);
        out.sampling_seconds.push(c.sampling_seconds);
    }
    out.samples = samples;
    Ok(out)
}

/// What one chain needs besides the density.
struct ChainCtx<'a> {
    k: usize,
    config: &'a NutsConfig,
    monitor: &'a dyn NutsMonitor,
    /// Another chain failed: stop.
    stop_all: &'a AtomicBool,
    /// The monitor asked to stop.
    interrupted: &'a AtomicBool,
}

/// One chain's result.
struct ChainOut {
    trace: Trace,
    step_size: f64,
    divergences: u64,
    warmup_divergences: u64,
    depth_sum: u64,
    max_depth_hits: u64,
    gradients: u64,
    warmup_gradients: u64,
    sampling_draws: u64,
    warmup_seconds: f64,
    sampling_seconds: f64,
    stopped: bool,
}

/// Build the chain for the configured mass matrix and run it.
fn run_chain<D>(
    density: &D,
    batch: &D::Batch,
    ctx: &ChainCtx<'_>,
    p0: Params,
    nuts_seed: [u8; 32],
) -> Result<ChainOut>
where
    D: LogDensity,
{
    let failure = Mutex::new(None);
    let evals = AtomicU64::new(0);
    let target = Target {
        density,
        batch,
        params: p0.clone(),
        inv_t: 1.0 / ctx.config.temperature,
        evals: &evals,
        failure: &failure,
    };
    let math = CpuMath::new(target);
    let mut rng = nuts_rs::rand::rngs::ChaCha8Rng::from_seed(nuts_seed);
    let chain_id = ctx.k as u64;
    match ctx.config.mass {
        MassMatrix::Diag => {
            let mut s = DiagNutsSettings::default();
            ctx.config.apply(&mut s);
            let chain = s
                .new_chain(chain_id, math, &mut rng)
                .map_err(|e| Error::config("nuts", format!("{e:#}")))?;
            drive::<CpuMath<Target<'_, D>>, _>(chain, ctx, &p0, &failure, &evals, |st| {
                (st.depth, st.point.logp)
            })
        }
        MassMatrix::LowRank => {
            let mut s = LowRankNutsSettings::default();
            ctx.config.apply(&mut s);
            let chain = s
                .new_chain(chain_id, math, &mut rng)
                .map_err(|e| Error::config("nuts", format!("{e:#}")))?;
            drive::<CpuMath<Target<'_, D>>, _>(chain, ctx, &p0, &failure, &evals, |st| {
                (st.depth, st.point.logp)
            })
        }
    }
}

/// Run one built chain: starting point, warm-up, draws.
fn drive<M, C>(
    mut chain: C,
    ctx: &ChainCtx<'_>,
    p0: &Params,
    failure: &Mutex<Option<Error>>,
    evals: &AtomicU64,
    stats: impl Fn(&<C as SamplerStats<M>>::Stats) -> (u64, f64),
) -> Result<ChainOut>
where
    M: Math,
    C: Chain<M>,
{
    let cfg = ctx.config;
    let t0 = Instant::now();
    // The density's own error if it caused the failure.
    let density_failure = || failure.lock().ok().and_then(|mut f| f.take());
    // nuts-rs formats inner errors with `{:?}`: drop their backtraces.
    let clean = |e: &dyn std::fmt::Display| {
        let msg = format!("{e:#}");
        let msg = msg.split("\n\nStack backtrace").next().unwrap_or("");
        msg.trim().to_string()
    };
    if let Err(e) = chain.set_position(p0.values()) {
        return Err(density_failure().unwrap_or_else(|| {
            Error::config(
                "init",
                format!(
                    "NUTS needs a starting point with a finite log density and a finite, \
                     non-zero gradient in every coordinate ({})",
                    clean(&e)
                ),
            )
        }));
    }
    let thinning = cfg.thinning();
    let dim = p0.len();
    let mut out = ChainOut {
        trace: Trace::new(dim),
        step_size: f64::NAN,
        divergences: 0,
        warmup_divergences: 0,
        depth_sum: 0,
        max_depth_hits: 0,
        gradients: 0,
        warmup_gradients: 0,
        sampling_draws: 0,
        warmup_seconds: 0.0,
        sampling_seconds: 0.0,
        stopped: false,
    };
    let total = cfg.warmup + cfg.draws;
    let mut t_warm = if cfg.warmup == 0 {
        out.warmup_seconds = t0.elapsed().as_secs_f64();
        out.warmup_gradients = evals.load(Ordering::Relaxed);
        Some(Instant::now())
    } else {
        None
    };
    for i in 0..total {
        if ctx.stop_all.load(Ordering::Relaxed) || ctx.interrupted.load(Ordering::Relaxed) {
            break;
        }
        if ctx.monitor.interrupted() {
            ctx.interrupted.store(true, Ordering::Relaxed);
            break;
        }
        let (position, _, st, progress) = chain.expanded_draw().map_err(|e| {
            density_failure().unwrap_or_else(|| Error::Density(format!("nuts: {}", clean(&e))))
        })?;
        let warmup = i < cfg.warmup;
        let (depth, logp) = stats(&st);
        out.step_size = progress.step_size;
        if warmup {
            out.warmup_divergences += u64::from(progress.diverging);
        } else {
            out.divergences += u64::from(progress.diverging);
            out.depth_sum += depth;
            out.max_depth_hits += u64::from(depth >= cfg.max_depth);
            out.sampling_draws += 1;
            if thinning.keeps(i + 1) {
                out.trace
                    .push_with(&position, logp * cfg.temperature, progress.diverging)?;
            }
        }
        if i + 1 == cfg.warmup {
            out.warmup_seconds = t0.elapsed().as_secs_f64();
            out.warmup_gradients = evals.load(Ordering::Relaxed);
            t_warm = Some(Instant::now());
        }
        ctx.monitor.on_draw(ctx.k, i, warmup);
        if let Some(limit) = cfg.max_divergences {
            if out.divergences > limit {
                out.stopped = true;
                break;
            }
        }
    }
    match t_warm {
        Some(t) => out.sampling_seconds = t.elapsed().as_secs_f64(),
        None => out.warmup_seconds = t0.elapsed().as_secs_f64(),
    }
    out.gradients = evals.load(Ordering::Relaxed);
    if t_warm.is_none() {
        out.warmup_gradients = out.gradients;
    }
    Ok(out)
}

/// The tempered density as nuts-rs sees it: `log_density / T` and its gradient.
struct Target<'a, D: LogDensity> {
    density: &'a D,
    batch: &'a D::Batch,
    /// Reused buffer for the position (the density takes `Params`).
    params: Params,
    inv_t: f64,
    /// Evaluations so far.
    evals: &'a AtomicU64,
    /// The density's error that ended the chain (not a non-finite value).
    failure: &'a Mutex<Option<Error>>,
}

/// An evaluation nuts-rs must handle: recoverable (non-finite, a divergence)
/// or not (the density failed; the error itself is in `Target::failure`).
#[derive(Debug)]
struct TargetError {
    recoverable: bool,
    message: String,
}

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TargetError {}

impl LogpError for TargetError {
    fn is_recoverable(&self) -> bool {
        self.recoverable
    }
}

impl<D: LogDensity> HasDims for Target<'_, D> {
    fn dim_sizes(&self) -> HashMap<String, u64> {
        let d = self.params.len() as u64;
        HashMap::from([
            ("unconstrained_parameter".to_string(), d),
            ("dim".to_string(), d),
        ])
    }
}

impl<D: LogDensity> CpuLogpFunc for Target<'_, D> {
    type LogpError = TargetError;
    type FlowParameters = ();
    type ExpandedVector = ();

    fn dim(&self) -> usize {
        self.params.len()
    }

    fn logp(
        &mut self,
        position: &[f64],
        grad: &mut [f64],
    ) -> std::result::Result<f64, TargetError> {
        self.evals.fetch_add(1, Ordering::Relaxed);
        self.params.values_mut().copy_from_slice(position);
        match self.density.value_and_grad(&self.params, self.batch, grad) {
            Ok((v, _)) => {
                if !v.is_finite() || grad.iter().any(|g| !g.is_finite()) {
                    return Err(TargetError {
                        recoverable: true,
                        message: format!("non-finite log density ({v}) or gradient"),
                    });
                }
                for g in grad.iter_mut() {
                    *g *= self.inv_t;
                }
                Ok(v * self.inv_t)
            }
            Err(e) if e.is_recoverable() => Err(TargetError {
                recoverable: true,
                message: e.to_string(),
            }),
            Err(e) => {
                let message = e.to_string();
                if let Ok(mut f) = self.failure.lock() {
                    f.get_or_insert(e);
                }
                Err(TargetError {
                    recoverable: false,
                    message,
                })
            }
        }
    }

    fn expand_vector<R>(
        &mut self,
        _rng: &mut R,
        _array: &[f64],
    ) -> std::result::Result<(), nuts_rs::CpuMathError>
    where
        R: nuts_rs::rand::Rng + ?Sized,
    {
        Ok(())
    }
}
