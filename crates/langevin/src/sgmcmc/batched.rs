//! Many SGHMC chains advanced together: one batched density call per step
//! and one fused update over a `K × d` buffer.
//!
//! [`ParallelSghmc`] runs K independent SGHMC chains (Chen, Fox and Guestrin,
//! 2014; the same parameterisation as [`Sghmc`](super::Sghmc)) on the same
//! minibatch. Chain `c` holds θ_c, m_c ∈ ℝ^d; with step size ε (posteriors'
//! `lr`), temperature T, friction α, gradient-noise estimate β and momentum
//! scale σ, one step is, for every chain,
//!
//! ```text
//! g_c  = ∇ log_posterior(θ_c, batch)          (all K at once: BatchLogDensity)
//! θ_c' = θ_c + ε σ⁻² m_c
//! m_c' = m_c + ε g_c − ε σ⁻² α m_c + sqrt(T ε (2α − T ε β)) ξ_c,   ξ_c ~ N(0, I_d)
//! ```
//!
//! which is exactly [`Sghmc`](super::Sghmc)'s update. The stationary
//! distribution of each chain (small ε) is `exp(log_posterior / T)` in θ.
//!
//! **Layout.** Parameters and momenta are stored as one row-major `K × d`
//! buffer: chain `c` occupies `[c d, (c + 1) d)`, in the ravel order of its
//! [`ParamLayout`]. The density sees blocks of at most
//! [`ParallelSghmcConfig::chains_per_call`] consecutive rows.
//!
//! **Randomness.** Chain `c` draws from its own generator
//! [`chain_rng(seed, c)`](langevin_core::chain_rng), kept in the state: the
//! initial momenta (as [`Sghmc::init`](super::Sghmc)) and then d standard
//! normals per step, in ravel order, by [`NoiseSampler`]: `BoxMuller`
//! (default, vectorised bulk draws, the same stream as the single-chain
//! samplers) or `Ziggurat`. With `BoxMuller` and a density that computes
//! each row with the same arithmetic as a [`LogDensity`] (for example
//! [`PerChain`]), chain `c` is *bit-identical* to a separate `Sghmc` chain
//! run with `chain_rng(seed, c)`. A faster batched density (a matrix
//! product, such as
//! [`BatchedLogistic`](super::batched_logistic::BatchedLogistic)) rounds
//! differently and agrees to ~1e-15 per evaluation; `Ziggurat` draws other
//! (equally distributed) normals: both agree with `Sghmc` in distribution.
//! Blocks are fixed by `chains_per_call`, not by the number of threads, so
//! the result does not depend on the thread count.
//!
//! **Non-finite values.** If chain `c`'s value or any of its gradient entries
//! is NaN/Inf, that chain's step is not applied (θ_c, m_c and its generator
//! are left as they were, as the [`Transform`](langevin_core::Transform)
//! contract does for one chain), its index is reported in
//! [`ParallelSghmcInfo::non_finite`] and counted in
//! [`ParallelSghmcState::divergences`] (skipped and counted: the
//! divergence rule of [`crate::run`]); the other chains move on. The step
//! counter (which indexes the schedules) is shared by all chains.
//!
//! Defaults: those of [`SghmcConfig`]; `chains_per_call = 256`,
//! `noise = BoxMuller`.

use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use langevin_core::{chain_rng, ChainRng, Error, LogDensity, ParamLayout, Params, Result};
use rand_distr::{Distribution, StandardNormal};

use super::{noise_scale, schedules_at, SghmcConfig};
use langevin_core::vecmath::box_muller;

/// Value and gradient of a log density at K parameter vectors at once.
///
/// Same convention as [`LogDensity`] (batch-averaged log posterior). The K
/// parameter vectors are the rows of a row-major `K × d` buffer.
///
/// Implementations must not panic on non-finite inputs or results: write
/// NaN/Inf into the affected row's value or gradient and the sampler skips
/// that chain. Return `Err` only for a failure of the whole call (a
/// dimension mismatch, an error of an underlying library).
///
/// Implementing it: see
/// [`BatchedLogistic`](super::batched_logistic::BatchedLogistic) (two matrix
/// products and one vectorised element-wise pass), or wrap any
/// [`LogDensity`] with [`PerChain`].
pub trait BatchLogDensity: Send + Sync {
    /// What one evaluation reads (shared by all K chains).
    type Batch: ?Sized + Sync;

    /// Evaluate at the `K = values.len()` rows of `thetas` (`K × dim`,
    /// row-major), writing row `c`'s gradient into
    /// `grads[c * dim..(c + 1) * dim]` and its value into `values[c]`.
    /// `grads.len() == thetas.len() == K * dim`; `grads` holds garbage on
    /// entry (overwrite it, do not accumulate).
    fn values_and_grads(
        &self,
        thetas: &[f64],
        dim: usize,
        batch: &Self::Batch,
        values: &mut [f64],
        grads: &mut [f64],
    ) -> Result<()>;
}

impl<D: BatchLogDensity + ?Sized> BatchLogDensity for &D {
    type Batch = D::Batch;
    fn values_and_grads(
        &self,
        thetas: &[f64],
        dim: usize,
        batch: &Self::Batch,
        values: &mut [f64],
        grads: &mut [f64],
    ) -> Result<()> {
        (**self).values_and_grads(thetas, dim, batch, values, grads)
    }
}

/// Check the buffer sizes a [`BatchLogDensity`] receives; returns K.
pub fn check_batch_shapes(
    thetas: &[f64],
    dim: usize,
    values: &[f64],
    grads: &[f64],
) -> Result<usize> {
    let k = values.len();
    if thetas.len() != k * dim {
        return Err(Error::DimensionMismatch {
            what: "batched parameters (K × d)",
            expected: k * dim,
            got: thetas.len(),
        });
    }
    if grads.len() != k * dim {
        return Err(Error::DimensionMismatch {
            what: "batched gradient buffer (K × d)",
            expected: k * dim,
            got: grads.len(),
        });
    }
    Ok(k)
}

/// Any [`LogDensity`] as a [`BatchLogDensity`]: one call of the wrapped
/// density per row (no speed-up; the reference the fast densities are tested
/// against, and bit-identical to separate [`Sghmc`](super::Sghmc) chains with
/// the default noise).
///
/// The wrapped density sees each row as a [`Params`] with `layout`; its
/// `Aux` is dropped. An `Err` of the wrapped density for one row (for
/// example a non-finite check of its own) fails the whole call.
pub struct PerChain<D> {
    density: D,
    layout: ParamLayout,
}

impl<D: LogDensity> PerChain<D> {
    /// Wrap `density`, whose parameters have `layout`.
    pub fn new(density: D, layout: ParamLayout) -> Self {
        Self { density, layout }
    }

    /// The wrapped density.
    pub fn inner(&self) -> &D {
        &self.density
    }
}

impl<D> BatchLogDensity for PerChain<D>
where
    D: LogDensity,
    D::Batch: Sync,
{
    type Batch = D::Batch;

    fn values_and_grads(
        &self,
        thetas: &[f64],
        dim: usize,
        batch: &D::Batch,
        values: &mut [f64],
        grads: &mut [f64],
    ) -> Result<()> {
        check_batch_shapes(thetas, dim, values, grads)?;
        if dim != self.layout.len() {
            return Err(Error::DimensionMismatch {
                what: "PerChain parameter dimension",
                expected: self.layout.len(),
                got: dim,
            });
        }
        if dim == 0 {
            return Err(Error::config("dim", "must be >= 1"));
        }
        let mut p = Params::zeros(self.layout.clone());
        for ((theta, g), v) in thetas
            .chunks_exact(dim)
            .zip(grads.chunks_exact_mut(dim))
            .zip(values.iter_mut())
        {
            p.values_mut().copy_from_slice(theta);
            g.fill(0.0);
            *v = self.density.value_and_grad(&p, batch, g)?.0;
        }
        Ok(())
    }
}

/// Hyper-parameters of [`ParallelSghmc`].
#[derive(Debug, Clone)]
pub struct ParallelSghmcConfig {
    /// The SGHMC hyper-parameters shared by every chain.
    pub sghmc: SghmcConfig,
    /// Rows per density call (a block; blocks run in parallel over rayon's
    /// pool). Fixed blocks make the result independent of the thread count.
    pub chains_per_call: usize,
    /// How the injected normals are drawn.
    pub noise: NoiseSampler,
}

impl Default for ParallelSghmcConfig {
    fn default() -> Self {
        Self {
            sghmc: SghmcConfig::default(),
            chains_per_call: 256,
            noise: NoiseSampler::default(),
        }
    }
}

/// How [`ParallelSghmc`] draws the standard normals ξ of a step. Both read
/// only chain `c`'s own generator, so either is reproducible per seed and
/// independent of the thread count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoiseSampler {
    /// Box–Muller on bulk 64-bit draws: chain `c` takes `⌈d/2⌉` `u64`s
    /// from its generator in one `fill`, each turned into two normals by a
    /// vectorised branch-free f32 transform
    /// ([`langevin_core::vecmath::box_muller`]: 32-bit uniforms, so
    /// |ξ| ≤ 6.66; the cut-off tail has probability 2.7e−11). The same draws as
    /// [`Sghmc`](super::Sghmc): chain `c` is bit-identical to a separate
    /// `Sghmc` chain (given a density with the same per-row arithmetic).
    #[default]
    BoxMuller,
    /// rand_distr's ziggurat `StandardNormal`, one draw at a time (what the
    /// single-chain samplers drew before they switched to bulk Box–Muller;
    /// slower, kept for comparison): other, equally distributed, normals.
    Ziggurat,
}

impl ParallelSghmcConfig {
    /// Check every hyper-parameter.
    pub fn validate(&self) -> Result<()> {
        self.sghmc.validate()?;
        if self.chains_per_call == 0 {
            return Err(Error::config("chains_per_call", "must be >= 1"));
        }
        Ok(())
    }
}

/// State of K SGHMC chains: plain serde data (a checkpoint resumes
/// bit-identically, generators included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParallelSghmcState {
    /// Layout of one chain's parameters.
    pub layout: ParamLayout,
    /// Parameters, `K × d` row-major (chain `c` at `[c d, (c + 1) d)`).
    pub params: Vec<f64>,
    /// Momenta, same layout as `params`.
    pub momenta: Vec<f64>,
    /// Steps taken (shared; indexes the schedules).
    pub step: u64,
    /// Per chain: log posterior at the parameters of its last applied
    /// evaluation (`NaN` before the first step, or the non-finite value of a
    /// rejected evaluation).
    #[serde(deserialize_with = "langevin_core::serde_nan::vec_f64_or_nan")]
    pub log_posterior: Vec<f64>,
    /// Per chain: divergences, the steps not applied because of a non-finite
    /// evaluation (skipped and counted, the rule of [`crate::run`]).
    #[serde(alias = "rejected")]
    pub divergences: Vec<u64>,
    /// Per chain generator, `chain_rng(seed, c)` at init.
    pub rngs: Vec<ChainRng>,
}

impl ParallelSghmcState {
    /// Number of chains K.
    pub fn n_chains(&self) -> usize {
        self.rngs.len()
    }

    /// Dimension d of one chain.
    pub fn dim(&self) -> usize {
        self.layout.len()
    }

    /// Chain `c`'s parameters as a slice (ravel order).
    pub fn chain(&self, c: usize) -> &[f64] {
        let d = self.dim();
        &self.params[c * d..(c + 1) * d]
    }

    /// Chain `c`'s parameters as [`Params`].
    pub fn chain_params(&self, c: usize) -> Params {
        Params::new(self.layout.clone(), self.chain(c).to_vec()).expect("state holds K × d values")
    }
}

/// Per-step information of [`ParallelSghmc::step`].
#[derive(Debug, Clone, PartialEq)]
pub struct ParallelSghmcInfo {
    /// Step size used.
    pub step_size: f64,
    /// Temperature used.
    pub temperature: f64,
    /// Chains whose evaluation was non-finite (their step was not applied).
    pub non_finite: Vec<usize>,
}

/// K SGHMC chains over a [`BatchLogDensity`]; see the module docs.
pub struct ParallelSghmc<D> {
    config: ParallelSghmcConfig,
    density: D,
}

thread_local! {
    /// Per-thread value/gradient/noise scratch of one block, reused across
    /// steps (a fresh block-sized buffer per step showed up as malloc/page
    /// faults in profiles of the single-chain samplers).
    static SCRATCH: std::cell::RefCell<Scratch> = const {
        std::cell::RefCell::new(Scratch {
            values: Vec::new(),
            grads: Vec::new(),
            normals: Vec::new(),
            bits: Vec::new(),
        })
    };
}

impl<D: BatchLogDensity> ParallelSghmc<D> {
    /// Build with validated hyper-parameters.
    pub fn new(density: D, config: ParallelSghmcConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, density })
    }

    pub fn config(&self) -> &ParallelSghmcConfig {
        &self.config
    }

    pub fn density(&self) -> &D {
        &self.density
    }

    /// Initial state of `inits.len()` chains; chain `c` gets
    /// `chain_rng(seed, c)` and its momenta from it (as `Sghmc::init`).
    pub fn init(&self, inits: &[Params], seed: u64) -> Result<ParallelSghmcState> {
        let first = inits
            .first()
            .ok_or_else(|| Error::config("chains", "at least one chain is needed"))?;
        let layout = first.layout().clone();
        let d = layout.len();
        if d == 0 {
            return Err(Error::config(
                "params",
                "a chain needs at least one parameter",
            ));
        }
        let k = inits.len();
        let mut params = Vec::with_capacity(k * d);
        let mut momenta = Vec::with_capacity(k * d);
        let mut rngs = Vec::with_capacity(k);
        for (c, p) in inits.iter().enumerate() {
            if p.len() != d {
                return Err(Error::DimensionMismatch {
                    what: "initial parameters of a chain",
                    expected: d,
                    got: p.len(),
                });
            }
            let mut rng = chain_rng(seed, c as u64);
            momenta.extend(self.config.sghmc.momenta.build(d, &mut rng)?);
            params.extend_from_slice(p.values());
            rngs.push(rng);
        }
        Ok(ParallelSghmcState {
            layout,
            params,
            momenta,
            step: 0,
            log_posterior: vec![f64::NAN; k],
            divergences: vec![0; k],
            rngs,
        })
    }

    /// Advance every chain by one step in place.
    ///
    /// `Err` (state untouched) for an invalid schedule value or a failure of
    /// the whole density call; a non-finite evaluation of one chain is not an
    /// error (see the module docs).
    pub fn step(
        &self,
        state: &mut ParallelSghmcState,
        batch: &D::Batch,
    ) -> Result<ParallelSghmcInfo> {
        let c = &self.config.sghmc;
        let d = state.dim();
        let k = state.n_chains();
        if d == 0 || k == 0 {
            return Err(Error::config(
                "state",
                "needs at least one chain and one parameter",
            ));
        }
        if state.params.len() != k * d || state.momenta.len() != k * d {
            return Err(Error::DimensionMismatch {
                what: "parallel SGHMC state (K × d)",
                expected: k * d,
                got: state.params.len().min(state.momenta.len()),
            });
        }
        if state.log_posterior.len() != k || state.divergences.len() != k {
            return Err(Error::DimensionMismatch {
                what: "parallel SGHMC per-chain vectors",
                expected: k,
                got: state.log_posterior.len().min(state.divergences.len()),
            });
        }
        let (eps, temp) = schedules_at(&c.step_size, &c.temperature, state.step)?;
        let inv_mass = c.sigma.powi(-2);
        let noise = noise_scale(
            temp * eps * (2.0 * c.friction - temp * eps * c.beta),
            state.step,
        )?;
        let coef = Coef {
            eps,
            noise,
            move_scale: eps * inv_mass,
            decay: 1.0 - eps * c.friction * inv_mass,
        };
        let rows = self.config.chains_per_call;
        let span = rows * d;
        // Pass 1 evaluates every block (parallel) into scratch; pass 2
        // applies. An `Err` of any block therefore leaves the state untouched.
        // On a one-thread pool the blocks run on the calling thread (no
        // hand-off to a worker); the blocks, hence the result, are the same.
        let serial = rayon::current_num_threads() == 1;
        let eval = |theta: &[f64]| eval_block(&self.density, theta, d, batch);
        let evals: Vec<Result<BlockEval>> = if serial {
            state.params.chunks(span).map(eval).collect()
        } else {
            state.params.par_chunks(span).map(eval).collect()
        };
        let mut results = Vec::with_capacity(evals.len());
        for e in evals {
            results.push(e?);
        }
        let noise_kind = self.config.noise;
        let apply = |(b, (((((theta, mom), lp), rej), rngs), ev)): BlockArgs<'_>| -> Vec<usize> {
            apply_block(&coef, noise_kind, d, theta, mom, lp, rej, rngs, ev)
                .into_iter()
                .map(|i| b * rows + i)
                .collect()
        };
        let applied: Vec<Vec<usize>> = if serial {
            state
                .params
                .chunks_mut(span)
                .zip(state.momenta.chunks_mut(span))
                .zip(state.log_posterior.chunks_mut(rows))
                .zip(state.divergences.chunks_mut(rows))
                .zip(state.rngs.chunks_mut(rows))
                .zip(results)
                .enumerate()
                .map(apply)
                .collect()
        } else {
            state
                .params
                .par_chunks_mut(span)
                .zip(state.momenta.par_chunks_mut(span))
                .zip(state.log_posterior.par_chunks_mut(rows))
                .zip(state.divergences.par_chunks_mut(rows))
                .zip(state.rngs.par_chunks_mut(rows))
                .zip(results.into_par_iter())
                .enumerate()
                .map(apply)
                .collect()
        };
        let mut non_finite = Vec::new();
        for a in applied {
            non_finite.extend(a);
        }
        state.step += 1;
        Ok(ParallelSghmcInfo {
            step_size: eps,
            temperature: temp,
            non_finite,
        })
    }
}

/// One block's slices of the state and its evaluation, with the block index.
type BlockArgs<'a> = (
    usize,
    (
        (
            (
                ((&'a mut [f64], &'a mut [f64]), &'a mut [f64]),
                &'a mut [u64],
            ),
            &'a mut [ChainRng],
        ),
        BlockEval,
    ),
);

/// Reusable per-thread buffers of one block.
struct Scratch {
    values: Vec<f64>,
    grads: Vec<f64>,
    normals: Vec<f64>,
    bits: Vec<u64>,
}

/// Coefficients of one step.
struct Coef {
    eps: f64,
    noise: f64,
    move_scale: f64,
    decay: f64,
}

/// Values and gradients of one block.
struct BlockEval {
    values: Vec<f64>,
    grads: Vec<f64>,
}

fn eval_block<D: BatchLogDensity>(
    density: &D,
    theta: &[f64],
    d: usize,
    batch: &D::Batch,
) -> Result<BlockEval> {
    let kb = theta.len() / d;
    let (mut values, mut grads) = SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        (std::mem::take(&mut s.values), std::mem::take(&mut s.grads))
    });
    // Sized, not cleared: the density overwrites every entry.
    values.truncate(kb);
    values.resize(kb, 0.0);
    grads.truncate(kb * d);
    grads.resize(kb * d, 0.0);
    density.values_and_grads(theta, d, batch, &mut values, &mut grads)?;
    Ok(BlockEval { values, grads })
}

/// Apply the update to one block; returns the block-local indices of
/// chains whose evaluation was non-finite.
#[allow(clippy::too_many_arguments)]
fn apply_block(
    coef: &Coef,
    sampler: NoiseSampler,
    d: usize,
    theta: &mut [f64],
    mom: &mut [f64],
    lp: &mut [f64],
    rej: &mut [u64],
    rngs: &mut [ChainRng],
    ev: BlockEval,
) -> Vec<usize> {
    let kb = lp.len();
    let mut bad = Vec::new();
    let mut ok = vec![true; kb];
    for (i, ((v, g), (l, r))) in ev
        .values
        .iter()
        .zip(ev.grads.chunks_exact(d))
        .zip(lp.iter_mut().zip(rej.iter_mut()))
        .enumerate()
    {
        *l = *v;
        if !v.is_finite() || g.iter().any(|x| !x.is_finite()) {
            *r += 1;
            bad.push(i);
            ok[i] = false;
        }
    }
    let (mut normals, mut bits) = SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        (std::mem::take(&mut s.normals), std::mem::take(&mut s.bits))
    });
    // Row stride of the normals buffer: d, rounded up to even for Box–Muller.
    let w = d + (d & 1);
    if coef.noise != 0.0 {
        // Sized, not cleared: the rows of applied chains are overwritten.
        normals.truncate(kb * w);
        normals.resize(kb * w, 0.0);
        match sampler {
            NoiseSampler::Ziggurat => {
                for (i, rng) in rngs.iter_mut().enumerate().filter(|(i, _)| ok[*i]) {
                    for x in &mut normals[i * w..i * w + d] {
                        *x = StandardNormal.sample(rng);
                    }
                }
            }
            NoiseSampler::BoxMuller => {
                // One word per pair of normals: w / 2 words per chain.
                let h = w / 2;
                bits.truncate(kb * h);
                bits.resize(kb * h, 0);
                for (i, rng) in rngs.iter_mut().enumerate().filter(|(i, _)| ok[*i]) {
                    rng.fill(&mut bits[i * h..(i + 1) * h]);
                }
                box_muller(&bits, &mut normals);
            }
        }
    }
    for i in (0..kb).filter(|&i| ok[i]) {
        let xi = if coef.noise != 0.0 {
            &normals[i * w..i * w + d]
        } else {
            &[][..]
        };
        update_chain(
            coef,
            &mut theta[i * d..(i + 1) * d],
            &mut mom[i * d..(i + 1) * d],
            &ev.grads[i * d..(i + 1) * d],
            xi,
        );
    }
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        s.values = ev.values;
        s.grads = ev.grads;
        s.normals = normals;
        s.bits = bits;
    });
    bad
}

/// One chain's SGHMC update: the same floating-point operations, in the same
/// order, as `Sghmc::step` (so the chains are bit-identical to it given the
/// same normals `xi`; `xi` is unused when the noise scale is 0).
#[inline]
fn update_chain(c: &Coef, theta: &mut [f64], mom: &mut [f64], grad: &[f64], xi: &[f64]) {
    if c.noise == 0.0 {
        for ((t, m), g) in theta.iter_mut().zip(mom.iter_mut()).zip(grad) {
            let m0 = *m;
            *t += c.move_scale * m0;
            *m = c.decay * m0 + c.eps * g;
        }
    } else {
        for (((t, m), g), x) in theta.iter_mut().zip(mom.iter_mut()).zip(grad).zip(xi) {
            let m0 = *m;
            *t += c.move_scale * m0;
            *m = c.decay * m0 + c.eps * g + c.noise * x;
        }
    }
}
