//! Stochastic gradient Hamiltonian Monte Carlo (Chen, Fox and Guestrin, 2014),
//! in posteriors' parameterisation.
//!
//! With step size ε (posteriors' `lr`), temperature T, friction α, gradient
//! noise estimate β and momentum scale σ (mass σ²), one step at θ, m is
//!
//! ```text
//! g  = ∇ log_posterior(θ, batch)
//! θ' = θ + ε σ⁻² m
//! m' = m + ε g − ε σ⁻² α m + sqrt(T ε (2α − T ε β)) ξ,   ξ ~ N(0, I)
//! ```
//!
//! (θ moves with the old momentum). Its stationary distribution for small ε
//! is `exp(log_posterior / T)` in θ and `N(0, σ² T)` in m. At T = 0 it is
//! exactly heavy-ball SGD with learning rate ε²σ⁻² and momentum 1 − εσ⁻²α, and
//! draws no random numbers.
//!
//! Defaults (posteriors): α = 0.01, β = 0, σ = 1, T = 1, momenta ~ N(0, 1).
//!
//! # With a preconditioner
//!
//! A state's [`Tuning`] (set by the warm-up of
//! [`crate::adapt`], the identity otherwise) holds a step scale `s` and a
//! factor `L` of the inverse mass matrix, `M⁻¹ = L Lᵀ` (diagonal or dense).
//! The update runs in the whitened coordinates `z = L⁻¹ θ`, where the
//! gradient is `Lᵀ g` and the momenta live:
//!
//! ```text
//! ε  ← s ε,   g_z = Lᵀ ∇ log_posterior(θ, batch)
//! θ' = θ + L (ε σ⁻² m)
//! m' = m + ε g_z − ε σ⁻² α m + sqrt(T ε (2α − T ε β)) ξ
//! ```
//!
//! that is, SGHMC with mass matrix `M = (L Lᵀ)⁻¹`: `θ' = θ + ε M⁻¹ p` for the momenta `p = L⁻ᵀ m`.
//! The stationary distribution in θ is unchanged
//! (`exp(log_posterior / T)`); the momenta are N(0, σ² T) in `z`, so a change
//! of metric needs no rescaling of them. With the identity metric and `s = 1`
//! the update is the one above bit for bit; at T = 0 it is the same
//! optimiser preconditioned by `M⁻¹` and still draws no random numbers.

use langevin_core::{LogDensity, Params, Result, Schedule, Transform, Tuning};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{
    apply_moves, grad_at, noise_scale, non_negative, positive, schedules_at, whiten, with_normals,
    MomentaInit, SgmcmcInfo,
};

/// Hyper-parameters of SGHMC.
#[derive(Debug, Clone)]
pub struct SghmcConfig {
    /// ε: posteriors' `lr`.
    pub step_size: Schedule,
    /// T: scales the injected noise only.
    pub temperature: Schedule,
    /// α: friction.
    pub friction: f64,
    /// β: estimate of the gradient noise variance (0 = none).
    pub beta: f64,
    /// σ: momentum scale (mass σ²).
    pub sigma: f64,
    /// How momenta start.
    pub momenta: MomentaInit,
}

impl Default for SghmcConfig {
    fn default() -> Self {
        Self {
            step_size: 1e-3.into(),
            temperature: 1.0.into(),
            friction: 0.01,
            beta: 0.0,
            sigma: 1.0,
            momenta: MomentaInit::Normal,
        }
    }
}

impl SghmcConfig {
    /// Check every hyper-parameter.
    pub fn validate(&self) -> Result<()> {
        self.step_size.validate_positive("step_size")?;
        self.temperature.validate_non_negative("temperature")?;
        non_negative("friction", self.friction)?;
        non_negative("beta", self.beta)?;
        positive("sigma", self.sigma)?;
        Ok(())
    }
}

/// SGHMC state: parameters, momenta, step count, last log posterior.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SghmcState {
    pub params: Params,
    pub momenta: Vec<f64>,
    pub step: u64,
    #[serde(deserialize_with = "langevin_core::serde_nan::f64_or_nan")]
    pub log_posterior: f64,
    /// Step-size factor and preconditioner ([`langevin_core::metric`]);
    /// the default is the plain sampler.
    #[serde(default, skip_serializing_if = "Tuning::is_default")]
    pub tuning: Tuning,
}

langevin_core::impl_transform_state!(SghmcState {
    params: params,
    step: step,
    log_density: log_posterior,
    same_len: [momenta],
    tuning: tuning,
});

/// The SGHMC transform over a log density `D`.
pub struct Sghmc<D> {
    config: SghmcConfig,
    density: D,
}

impl<D: LogDensity> Sghmc<D> {
    /// Build with validated hyper-parameters.
    pub fn new(density: D, config: SghmcConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, density })
    }

    pub fn config(&self) -> &SghmcConfig {
        &self.config
    }

    pub fn density(&self) -> &D {
        &self.density
    }
}

impl<D: LogDensity> Transform for Sghmc<D> {
    type State = SghmcState;
    type Info = SgmcmcInfo<D::Aux>;
    type Batch = D::Batch;

    fn init<R: Rng + ?Sized>(&self, params: Params, rng: &mut R) -> Result<SghmcState> {
        let momenta = self.config.momenta.build(params.len(), rng)?;
        Ok(SghmcState {
            params,
            momenta,
            step: 0,
            log_posterior: f64::NAN,
            tuning: Tuning::default(),
        })
    }

    fn step<R: Rng + ?Sized>(
        &self,
        state: &mut SghmcState,
        batch: &D::Batch,
        rng: &mut R,
    ) -> Result<Self::Info> {
        let c = &self.config;
        let (eps, temp) = schedules_at(&c.step_size, &c.temperature, state.step)?;
        let eps = eps * state.tuning.step_scale;
        let (lp, mut grad, aux) = grad_at(&self.density, &state.params, batch, state.step)?;
        let mut dz = whiten(&state.tuning, &mut grad);
        let inv_mass = c.sigma.powi(-2);
        let noise = noise_scale(
            temp * eps * (2.0 * c.friction - temp * eps * c.beta),
            state.step,
        )?;
        let move_scale = eps * inv_mass;
        let decay = 1.0 - eps * c.friction * inv_mass;
        let theta = match dz.as_mut() {
            Some(dz) => dz.as_mut_slice(),
            None => state.params.values_mut(),
        };
        let mom = &mut state.momenta;
        if noise == 0.0 {
            for ((t, m), g) in theta.iter_mut().zip(mom.iter_mut()).zip(&grad) {
                let m0 = *m;
                *t += move_scale * m0;
                *m = decay * m0 + eps * g;
            }
        } else {
            with_normals(rng, theta.len(), |s, xi| {
                let e = s + xi.len();
                let (theta, mom, grad) = (&mut theta[s..e], &mut mom[s..e], &grad[s..e]);
                for (((t, m), g), x) in theta.iter_mut().zip(mom.iter_mut()).zip(grad).zip(xi) {
                    let m0 = *m;
                    *t += move_scale * m0;
                    *m = decay * m0 + eps * g + noise * x;
                }
            });
        }
        apply_moves(&state.tuning, state.params.values_mut(), dz);
        crate::scratch::give(grad);
        state.step += 1;
        state.log_posterior = lp;
        Ok(SgmcmcInfo {
            log_posterior: lp,
            step_size: eps,
            temperature: temp,
            aux,
        })
    }
}
