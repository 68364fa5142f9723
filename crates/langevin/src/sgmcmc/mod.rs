//! Stochastic-gradient MCMC, in the tempered framing of posteriors.
//!
//! The log posterior is batch-averaged (`mean log lik + log prior / N`);
//! temperature `T` scales only the injected noise. `T = 1/N` targets the
//! posterior, `T = 0` is exactly optimisation (no random number is drawn), and
//! `T = 1` samples `exp(log_posterior)` itself (the right setting for a plain
//! log density such as a test target).
//!
//! * [`sgld`]: stochastic gradient Langevin dynamics.
//! * [`sghmc`]: stochastic gradient Hamiltonian Monte Carlo.
//! * [`sgnht`]: stochastic gradient Nosé-Hoover thermostat.
//! * [`baoa`]: the BAOA splitting of underdamped Langevin (Leimkuhler–Matthews).
//! * [`cv`]: control-variate gradients ([`ControlVariates`]), a density
//!   wrapper that makes any of the above its `-CV` variant (SGLD-CV, SGHMC-CV).
//! * [`batched`]: many SGHMC chains with one batched density call per step
//!   ([`ParallelSghmc`], [`BatchLogDensity`]); [`batched_logistic`] is a
//!   matrix-product example of such a density.
//!
//! Every update is one fused loop over the flat `f64` buffers: the gradient is
//! the only allocation of a step.

use langevin_core::{check_finite, Error, LogDensity, Params, Result, Schedule, Tuning};
use rand::Rng;
use serde::{Deserialize, Serialize};

pub mod baoa;
pub mod batched;
pub mod batched_logistic;
pub mod cv;
pub mod sghmc;
pub mod sgld;
pub mod sgnht;

pub use baoa::{Baoa, BaoaConfig, BaoaState};
pub use batched::{
    BatchLogDensity, NoiseSampler, ParallelSghmc, ParallelSghmcConfig, ParallelSghmcInfo,
    ParallelSghmcState, PerChain,
};
pub use batched_logistic::{BatchedLogistic, LogisticBatch};
pub use cv::{CentreSearch, ControlVariates};
pub use sghmc::{Sghmc, SghmcConfig, SghmcState};
pub use sgld::{Sgld, SgldConfig, SgldState};
pub use sgnht::{Sgnht, SgnhtConfig, SgnhtState};

/// Per-step information of an SGMCMC update.
#[derive(Debug, Clone)]
pub struct SgmcmcInfo<A> {
    /// Log posterior at the parameters the gradient was taken at (before the update).
    pub log_posterior: f64,
    /// Step size used.
    pub step_size: f64,
    /// Temperature used.
    pub temperature: f64,
    /// The user's auxiliary output.
    pub aux: A,
}

/// How momenta are initialised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub enum MomentaInit {
    /// Independent `N(0, 1)` draws from the caller's RNG (posteriors' default).
    #[default]
    Normal,
    /// Every momentum set to this constant (0.0 in the reference tests).
    Constant(f64),
    /// Given explicitly, in ravel order.
    Given(Vec<f64>),
}

impl MomentaInit {
    pub(crate) fn build<R: Rng + ?Sized>(&self, dim: usize, rng: &mut R) -> Result<Vec<f64>> {
        match self {
            MomentaInit::Normal => {
                let mut m = vec![0.0; dim];
                langevin_core::rng::fill_standard_normal(rng, &mut m);
                Ok(m)
            }
            MomentaInit::Constant(c) => {
                if !c.is_finite() {
                    return Err(Error::config("momenta", "constant momentum must be finite"));
                }
                Ok(vec![*c; dim])
            }
            MomentaInit::Given(v) => {
                if v.len() != dim {
                    return Err(Error::DimensionMismatch {
                        what: "initial momenta",
                        expected: dim,
                        got: v.len(),
                    });
                }
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(Error::config("momenta", "given momenta must be finite"));
                }
                Ok(v.clone())
            }
        }
    }
}

/// Step size and temperature for `step`, validated.
pub(crate) fn schedules_at(
    step_size: &Schedule,
    temperature: &Schedule,
    step: u64,
) -> Result<(f64, f64)> {
    Ok((
        step_size.at_checked("step_size", step, true)?,
        temperature.at_checked("temperature", step, false)?,
    ))
}

/// Evaluate the density and its gradient, rejecting NaN/Inf. The returned
/// buffer comes from the per-thread pool ([`crate::scratch`]: a fresh
/// multi-megabyte buffer every step costs page faults that showed up in
/// profiles of the MLP step); hand it back with `scratch::give`.
pub(crate) fn grad_at<D: LogDensity>(
    density: &D,
    params: &Params,
    batch: &D::Batch,
    step: u64,
) -> Result<(f64, Vec<f64>, D::Aux)> {
    let mut grad = crate::scratch::take(params.len());
    let (value, aux) = density.value_and_grad(params, batch, &mut grad)?;
    check_finite(value, &grad, step)?;
    Ok((value, grad, aux))
}

/// Validate a strictly positive finite scalar hyper-parameter.
pub(crate) fn positive(field: &'static str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(Error::config(
            field,
            format!("must be finite and > 0, got {v}"),
        ));
    }
    Ok(())
}

/// Validate a non-negative finite scalar hyper-parameter.
pub(crate) fn non_negative(field: &'static str, v: f64) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(Error::config(
            field,
            format!("must be finite and >= 0, got {v}"),
        ));
    }
    Ok(())
}

/// `sqrt(var)` of an injected-noise variance, which must be non-negative.
pub(crate) fn noise_scale(var: f64, step: u64) -> Result<f64> {
    if !(var.is_finite() && var >= 0.0) {
        return Err(Error::config(
            "beta",
            format!(
                "noise variance is {var} at step {step}: the gradient-noise estimate beta is too large for this step size and temperature"
            ),
        ));
    }
    Ok(var.sqrt())
}

/// Run `f(start, z)` on `d` standard normals, block by block
/// ([`langevin_core::rng::for_each_normal_block`]): the update loops read
/// their noise from an L1-resident block instead of a `d`-long buffer. The
/// stream is the same as [`batched::ParallelSghmc`]'s default noise, so one
/// chain of the batched sampler reproduces the single-chain sampler.
#[inline]
pub(crate) fn with_normals<R: Rng + ?Sized>(rng: &mut R, d: usize, f: impl FnMut(usize, &[f64])) {
    langevin_core::rng::for_each_normal_block(rng, d, f)
}

/// The preconditioning of one step ([`langevin_core::metric`]): turn `grad`
/// into the whitened gradient `Lᵀ g` in place, and return the zeroed buffer
/// the update writes its moves of the whitened coordinates into (`None` for
/// the identity metric: the update then moves θ itself, bit-for-bit the
/// plain sampler). [`apply_moves`] applies the buffer.
pub(crate) fn whiten(tuning: &Tuning, grad: &mut [f64]) -> Option<Vec<f64>> {
    if tuning.metric.is_identity() {
        return None;
    }
    let mut buf = crate::scratch::take(grad.len());
    tuning.metric.whiten_gradient(grad, &mut buf);
    buf.fill(0.0);
    Some(buf)
}

/// `θ ← θ + L Δz` for the buffer of [`whiten`].
pub(crate) fn apply_moves(tuning: &Tuning, theta: &mut [f64], dz: Option<Vec<f64>>) {
    if let Some(dz) = dz {
        tuning.metric.add_move(theta, &dz);
        crate::scratch::give(dz);
    }
}
