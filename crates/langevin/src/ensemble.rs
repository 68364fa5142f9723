//! Parallel chains and (unbiased) deep ensembles.
//!
//! [`run_chains`] runs one transform on K states in parallel (the run loop
//! of [`crate::run`], with as many worker threads as the current rayon pool). Chain `k` draws all its randomness from
//! [`chain_rng(seed, k)`](langevin_core::chain_rng), so the result does not
//! depend on the number of threads or on scheduling: same seed, same draws.
//!
//! A *deep ensemble* keeps only the final state of each chain. Run with SGHMC
//! at temperature `T = 1/N` (batch-averaged log posterior) the members are
//! asymptotically samples of the posterior — an unbiased deep ensemble; at
//! `T = 0` the same code is the classical deep ensemble of K independently
//! optimised models.
//!
//! [`run_parallel_sghmc`] runs many SGHMC chains on the same minibatches with
//! [`ParallelSghmc`]: one batched density call per block of chains and one
//! fused update over the `K × d` state (the fast path for many small chains;
//! see [`crate::sgmcmc::batched`]).

use langevin_core::{Error, Params, Result, Transform, TransformState};

use crate::run::{run, Checkpoint, FnBatches, RunConfig, Stop};
use crate::samples::{Samples, Thinning, Trace};
use crate::sgmcmc::batched::{BatchLogDensity, ParallelSghmc, ParallelSghmcState};

/// What a chain run produced.
#[derive(Debug, Clone)]
pub struct ChainsOutput<S> {
    /// Kept draws of every chain.
    pub samples: Samples,
    /// Final state of every chain.
    pub states: Vec<S>,
}

/// Run `inits.len()` chains of `steps` updates of `transform` in parallel,
/// through the run loop ([`crate::run`]) with every chain in memory.
///
/// `batch(chain, step)` gives the batch for that chain's `step`-th update
/// (0-based). Draws are kept according to `thinning`. Chain `k` draws its
/// randomness from `chain_rng(seed, k)`. A non-finite log density stops the
/// run (the run loop's policy with `max_divergences = 0`) and is returned as
/// the error, with the chain index; so is any other error. For skipping and
/// counting divergences, checkpoints or observers, call [`crate::run::run`].
pub fn run_chains<T, B>(
    transform: &T,
    inits: Vec<Params>,
    seed: u64,
    steps: u64,
    thinning: Thinning,
    batch: B,
) -> Result<ChainsOutput<T::State>>
where
    T: Transform,
    T::Batch: Sized,
    B: Fn(usize, u64) -> T::Batch + Sync,
{
    if inits.is_empty() {
        return Err(Error::config("chains", "at least one chain is needed"));
    }
    let dim = inits[0].len();
    if let Some(p) = inits.iter().find(|p| p.len() != dim) {
        return Err(Error::DimensionMismatch {
            what: "initial parameters of a chain",
            expected: dim,
            got: p.len(),
        });
    }
    let config = RunConfig {
        steps,
        thinning,
        round: Some(steps.max(1)),
        max_divergences: 0,
        // As many workers as the calling rayon pool has threads.
        threads: Some(rayon::current_num_threads()),
        until: None,
    };
    config.validate()?;
    let batches = FnBatches(batch);
    let start = Checkpoint::start(transform, &batches, seed, inits.len(), |k, _| {
        Ok(inits[k].clone())
    })?;
    let out = run(transform, &batches, &config, start, None, &mut ())?;
    if let Some(Stop::Divergences { chains, .. }) = &out.stop {
        let k = chains[0];
        let step = out.states[k].step();
        return Err(Error::InChain {
            chain: k,
            error: Box::new(Error::NonFiniteLogDensity {
                step,
                value: f64::NAN,
                bad_grad: 0,
            }),
        });
    }
    Ok(ChainsOutput {
        samples: out.samples,
        states: out.states,
    })
}

/// A deep ensemble: K chains of `steps` updates, keeping only the final
/// states. With SGHMC at `T = 1/N` the members are asymptotically posterior
/// samples; at `T = 0` this is a classical deep ensemble.
pub fn deep_ensemble<T, B>(
    transform: &T,
    inits: Vec<Params>,
    seed: u64,
    steps: u64,
    batch: B,
) -> Result<Vec<T::State>>
where
    T: Transform,
    T::Batch: Sized,
    B: Fn(usize, u64) -> T::Batch + Sync,
{
    if steps == 0 {
        return Err(Error::config("steps", "must be >= 1"));
    }
    Ok(run_chains(
        transform,
        inits,
        seed,
        steps,
        Thinning::last_of(steps),
        batch,
    )?
    .states)
}

/// What [`run_parallel_sghmc`] produced.
#[derive(Debug, Clone)]
pub struct ParallelChainsOutput {
    /// Kept draws of every chain (a divergent step keeps the chain where it was).
    pub samples: Samples,
    /// Final state of all chains (per-chain divergence counts included).
    pub state: ParallelSghmcState,
}

/// Run `inits.len()` SGHMC chains of `steps` updates with [`ParallelSghmc`]:
/// one batched density call per block of chains per step, all chains on
/// `batch(step)`. Chain `c` uses `chain_rng(seed, c)`; the draws do not
/// depend on the number of threads. A non-finite evaluation of one chain
/// skips that chain's step (counted in `state.divergences`); an `Err` of the
/// whole density call stops the run.
pub fn run_parallel_sghmc<D, B, F>(
    sampler: &ParallelSghmc<D>,
    inits: &[Params],
    seed: u64,
    steps: u64,
    thinning: Thinning,
    batch: F,
) -> Result<ParallelChainsOutput>
where
    D: BatchLogDensity<Batch = B>,
    B: Sync,
    F: Fn(u64) -> B,
{
    thinning.check_steps(steps)?;
    let mut state = sampler.init(inits, seed)?;
    let d = state.dim();
    let mut traces: Vec<Trace> = (0..state.n_chains()).map(|_| Trace::new(d)).collect();
    for s in 0..steps {
        sampler.step(&mut state, &batch(s))?;
        if thinning.keeps(s + 1) {
            for (c, tr) in traces.iter_mut().enumerate() {
                tr.push(state.chain(c), state.log_posterior[c])?;
            }
        }
    }
    let mut samples = Samples::new(state.layout.scalar_names(), 0);
    samples.chains = traces;
    Ok(ParallelChainsOutput { samples, state })
}
