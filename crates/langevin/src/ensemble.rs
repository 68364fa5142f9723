//! Parallel chains and (unbiased) deep ensembles.
//!
//! [`run_chains`] runs one transform on K states in parallel over rayon's
//! thread pool. Chain `k` draws all its randomness from
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

use rayon::prelude::*;

use langevin_core::{chain_rng, Error, Params, Result, Transform, TransformState};

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

/// Run `inits.len()` chains of `steps` updates of `transform` in parallel.
///
/// `batch(chain, step)` gives the batch for that chain's `step`-th update
/// (0-based). Draws are kept according to `thinning`. Any error (including a
/// non-finite log density) stops the run and is returned with the chain index
/// in its message context.
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
    thinning.check_steps(steps)?;
    let names = inits[0].layout().scalar_names();
    let dim = names.len();
    if let Some(p) = inits.iter().find(|p| p.len() != dim) {
        return Err(Error::DimensionMismatch {
            what: "initial parameters of a chain",
            expected: dim,
            got: p.len(),
        });
    }
    let results: Vec<Result<(Trace, T::State)>> = inits
        .into_par_iter()
        .enumerate()
        .map(|(k, init)| {
            let mut rng = chain_rng(seed, k as u64);
            let mut state = transform.init(init, &mut rng)?;
            let mut trace = Trace::new(dim);
            for s in 0..steps {
                let b = batch(k, s);
                transform.step(&mut state, &b, &mut rng)?;
                if thinning.keeps(s + 1) {
                    trace.push(state.params().values(), state.log_density())?;
                }
            }
            Ok((trace, state))
        })
        .collect();
    let mut samples = Samples::new(names, 0);
    let mut states = Vec::with_capacity(results.len());
    for r in results {
        let (trace, state) = r?;
        samples.chains.push(trace);
        states.push(state);
    }
    Ok(ChainsOutput { samples, states })
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
    let thinning = Thinning {
        burn_in: steps - 1,
        thin: 1,
    };
    Ok(run_chains(transform, inits, seed, steps, thinning, batch)?.states)
}

/// What [`run_parallel_sghmc`] produced.
#[derive(Debug, Clone)]
pub struct ParallelChainsOutput {
    /// Kept draws of every chain (a rejected step keeps the chain where it was).
    pub samples: Samples,
    /// Final state of all chains (per-chain rejected-step counts included).
    pub state: ParallelSghmcState,
}

/// Run `inits.len()` SGHMC chains of `steps` updates with [`ParallelSghmc`]:
/// one batched density call per block of chains per step, all chains on
/// `batch(step)`. Chain `c` uses `chain_rng(seed, c)`; the draws do not
/// depend on the number of threads. A non-finite evaluation of one chain
/// skips that chain's step (counted in `state.rejected`); an `Err` of the
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
