//! Stochastic gradient Nosé–Hoover thermostat (Ding et al., 2014), in
//! posteriors' parameterisation.
//!
//! SGHMC whose friction is a dynamic thermostat ξ_t that adapts until the
//! kinetic temperature matches T:
//!
//! ```text
//! g   = ∇ log_posterior(θ, batch)
//! θ'  = θ + ε σ⁻² m
//! m'  = m + ε g − ε σ⁻² ξ_t m + sqrt(T ε (2α − T ε β)) ζ,   ζ ~ N(0, I)
//! ξ'  = ξ_t + ε (σ⁻² mean(m²) − T)
//! ```
//!
//! (θ and ξ use the old momenta). α sets the injected-noise level and is the
//! thermostat's initial value unless one is given; an explicit initial
//! thermostat of 0.0 is honoured (posteriors treats 0.0 as "not given").
//!
//! Defaults: α = 0.01, β = 0, σ = 1, T = 1, momenta ~ N(0, 1).
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
//! ε   ← s ε,   g_z = Lᵀ ∇ log_posterior(θ, batch)
//! θ'  = θ + L (ε σ⁻² m)
//! m'  = m + ε g_z − ε σ⁻² ξ_t m + sqrt(T ε (2α − T ε β)) ζ
//! ξ'  = ξ_t + ε (σ⁻² mean(m²) − T)
//! ```
//!
//! that is, SGNHT with mass matrix `M = (L Lᵀ)⁻¹`, the thermostat acting on the whitened momenta.
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

/// Hyper-parameters of SGNHT.
#[derive(Debug, Clone)]
pub struct SgnhtConfig {
    /// ε: posteriors' `lr`.
    pub step_size: Schedule,
    /// T: scales the injected noise and the thermostat's target.
    pub temperature: Schedule,
    /// α: injected-noise friction, and the thermostat's default start.
    pub friction: f64,
    /// β: estimate of the gradient noise variance (0 = none).
    pub beta: f64,
    /// σ: momentum scale (mass σ²).
    pub sigma: f64,
    /// How momenta start.
    pub momenta: MomentaInit,
    /// Initial thermostat value; `None` means α.
    pub thermostat: Option<f64>,
}

impl Default for SgnhtConfig {
    fn default() -> Self {
        Self {
            step_size: 1e-3.into(),
            temperature: 1.0.into(),
            friction: 0.01,
            beta: 0.0,
            sigma: 1.0,
            momenta: MomentaInit::Normal,
            thermostat: None,
        }
    }
}

impl SgnhtConfig {
    pub fn validate(&self) -> Result<()> {
        self.step_size.validate_positive("step_size")?;
        self.temperature.validate_non_negative("temperature")?;
        non_negative("friction", self.friction)?;
        non_negative("beta", self.beta)?;
        positive("sigma", self.sigma)?;
        if let Some(x) = self.thermostat {
            if !x.is_finite() {
                return Err(langevin_core::Error::config("thermostat", "must be finite"));
            }
        }
        Ok(())
    }
}

/// SGNHT state: parameters, momenta, thermostat, step, last log posterior.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SgnhtState {
    pub params: Params,
    pub momenta: Vec<f64>,
    pub thermostat: f64,
    pub step: u64,
    #[serde(deserialize_with = "langevin_core::serde_nan::f64_or_nan")]
    pub log_posterior: f64,
    /// Step-size factor and preconditioner ([`langevin_core::metric`]);
    /// the default is the plain sampler.
    #[serde(default, skip_serializing_if = "Tuning::is_default")]
    pub tuning: Tuning,
}

langevin_core::impl_transform_state!(SgnhtState {
    params: params,
    step: step,
    log_density: log_posterior,
    same_len: [momenta],
    tuning: tuning,
});

/// The SGNHT transform.
pub struct Sgnht<D> {
    config: SgnhtConfig,
    density: D,
}

impl<D: LogDensity> Sgnht<D> {
    pub fn new(density: D, config: SgnhtConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, density })
    }

    pub fn config(&self) -> &SgnhtConfig {
        &self.config
    }

    pub fn density(&self) -> &D {
        &self.density
    }
}

impl<D: LogDensity> Transform for Sgnht<D> {
    type State = SgnhtState;
    type Info = SgmcmcInfo<D::Aux>;
    type Batch = D::Batch;

    fn init<R: Rng + ?Sized>(&self, params: Params, rng: &mut R) -> Result<SgnhtState> {
        let momenta = self.config.momenta.build(params.len(), rng)?;
        Ok(SgnhtState {
            params,
            momenta,
            thermostat: self.config.thermostat.unwrap_or(self.config.friction),
            step: 0,
            log_posterior: f64::NAN,
            tuning: Tuning::default(),
        })
    }

    fn step<R: Rng + ?Sized>(
        &self,
        state: &mut SgnhtState,
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
        let decay = 1.0 - eps * inv_mass * state.thermostat;
        let theta = match dz.as_mut() {
            Some(dz) => dz.as_mut_slice(),
            None => state.params.values_mut(),
        };
        let mom = &mut state.momenta;
        let mut sum_sq = 0.0;
        let d = theta.len();
        // `z` is the block of normals for positions `s..e` (empty when noise = 0).
        let mut update = |s: usize, e: usize, z: &[f64]| {
            let (theta, mom, grad) = (&mut theta[s..e], &mut mom[s..e], &grad[s..e]);
            for (i, ((t, m), g)) in theta.iter_mut().zip(mom.iter_mut()).zip(grad).enumerate() {
                let m0 = *m;
                sum_sq += m0 * m0;
                *t += move_scale * m0;
                let kick = if noise == 0.0 { 0.0 } else { noise * z[i] };
                *m = decay * m0 + eps * g + kick;
            }
        };
        if noise == 0.0 {
            update(0, d, &[]);
        } else {
            with_normals(rng, d, |s, z| update(s, s + z.len(), z));
        }
        let dim = mom.len().max(1) as f64;
        state.thermostat += eps * (inv_mass * sum_sq / dim - temp);
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
