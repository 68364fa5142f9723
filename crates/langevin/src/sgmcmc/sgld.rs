//! Stochastic gradient Langevin dynamics (Welling and Teh, 2011), in
//! posteriors' parameterisation.
//!
//! With step size ε (posteriors' `lr`), temperature T and gradient-noise
//! estimate β:
//!
//! ```text
//! θ' = θ + ε ∇ log_posterior(θ, batch) + sqrt(T ε (2 − T ε β)) ξ,   ξ ~ N(0, I)
//! ```
//!
//! This is Euler–Maruyama for dθ = ∇ log p dt + sqrt(2T) dW with time step ε.
//! Its known discretisation bias: on a Gaussian target N(0, s²) (T = 1,
//! β = 0) the chain is AR(1) with stationary variance `s² / (1 − ε / (2 s²))`
//! rather than s². At T = 0 it is plain gradient ascent (no random numbers).
//!
//! Defaults: β = 0, T = 1.
//!
//! # With a preconditioner
//!
//! A state's [`Tuning`] (set by the warm-up of
//! [`crate::adapt`], the identity otherwise) holds a step scale `s` and a
//! factor `L` of the inverse mass matrix, `M⁻¹ = L Lᵀ` (diagonal or dense).
//! The update runs in the whitened coordinates `z = L⁻¹ θ`, where the
//! gradient is `Lᵀ g`:
//!
//! ```text
//! ε  ← s ε,   g_z = Lᵀ ∇ log_posterior(θ, batch)
//! θ' = θ + L (ε g_z + sqrt(T ε (2 − T ε β)) ξ)
//! ```
//!
//! that is, preconditioned Langevin dynamics
//! `dθ = M⁻¹ ∇ log p dt + sqrt(2T) L dW` with `M⁻¹ = L Lᵀ`, whose stationary
//! distribution in θ is unchanged (`exp(log_posterior / T)`). With the identity metric and `s = 1`
//! the update is the one above bit for bit; at T = 0 it is the same
//! optimiser preconditioned by `M⁻¹` and still draws no random numbers.

use langevin_core::{LogDensity, Params, Result, Schedule, Transform, Tuning};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{
    apply_moves, grad_at, noise_scale, non_negative, schedules_at, whiten, with_normals, SgmcmcInfo,
};

/// Hyper-parameters of SGLD.
#[derive(Debug, Clone)]
pub struct SgldConfig {
    /// ε: posteriors' `lr`.
    pub step_size: Schedule,
    /// T: scales the injected noise only.
    pub temperature: Schedule,
    /// β: estimate of the gradient noise variance (0 = none).
    pub beta: f64,
}

impl Default for SgldConfig {
    fn default() -> Self {
        Self {
            step_size: 1e-3.into(),
            temperature: 1.0.into(),
            beta: 0.0,
        }
    }
}

impl SgldConfig {
    pub fn validate(&self) -> Result<()> {
        self.step_size.validate_positive("step_size")?;
        self.temperature.validate_non_negative("temperature")?;
        non_negative("beta", self.beta)
    }
}

/// SGLD state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SgldState {
    pub params: Params,
    pub step: u64,
    #[serde(deserialize_with = "langevin_core::serde_nan::f64_or_nan")]
    pub log_posterior: f64,
    /// Step-size factor and preconditioner ([`langevin_core::metric`]);
    /// the default is the plain sampler.
    #[serde(default, skip_serializing_if = "Tuning::is_default")]
    pub tuning: Tuning,
}

langevin_core::impl_transform_state!(SgldState {
    params: params,
    step: step,
    log_density: log_posterior,
    tuning: tuning,
});

/// The SGLD transform.
pub struct Sgld<D> {
    config: SgldConfig,
    density: D,
}

impl<D: LogDensity> Sgld<D> {
    pub fn new(density: D, config: SgldConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, density })
    }

    pub fn config(&self) -> &SgldConfig {
        &self.config
    }

    pub fn density(&self) -> &D {
        &self.density
    }
}

impl<D: LogDensity> Transform for Sgld<D> {
    type State = SgldState;
    type Info = SgmcmcInfo<D::Aux>;
    type Batch = D::Batch;

    fn init<R: Rng + ?Sized>(&self, params: Params, _rng: &mut R) -> Result<SgldState> {
        Ok(SgldState {
            params,
            step: 0,
            log_posterior: f64::NAN,
            tuning: Tuning::default(),
        })
    }

    fn step<R: Rng + ?Sized>(
        &self,
        state: &mut SgldState,
        batch: &D::Batch,
        rng: &mut R,
    ) -> Result<Self::Info> {
        let c = &self.config;
        let (eps, temp) = schedules_at(&c.step_size, &c.temperature, state.step)?;
        let eps = eps * state.tuning.step_scale;
        let (lp, mut grad, aux) = grad_at(&self.density, &state.params, batch, state.step)?;
        let noise = noise_scale(temp * eps * (2.0 - temp * eps * c.beta), state.step)?;
        let mut dz = whiten(&state.tuning, &mut grad);
        let theta = match dz.as_mut() {
            Some(dz) => dz.as_mut_slice(),
            None => state.params.values_mut(),
        };
        if noise == 0.0 {
            for (t, g) in theta.iter_mut().zip(&grad) {
                *t += eps * g;
            }
        } else {
            with_normals(rng, theta.len(), |s, xi| {
                let e = s + xi.len();
                for ((t, g), x) in theta[s..e].iter_mut().zip(&grad[s..e]).zip(xi) {
                    *t += eps * g + noise * x;
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
