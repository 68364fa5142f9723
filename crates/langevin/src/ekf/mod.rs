//! Extended Kalman filtering of the parameters (Ollivier, 2018, *Online
//! natural gradient as a Kalman filter*), in posteriors' form: the
//! parameters follow a random walk `θₜ = θₜ₋₁ + N(0, q² I)` and each batch's
//! per-example log likelihoods `ℓᵢ` are absorbed with a Fisher (outer
//! product of gradients) approximation of their curvature:
//!
//! ```text
//! predict:  Σ ← Σ + q² I
//! update:   ḡ = (1/n) Σᵢ gᵢ,   F̄ = (1/n) Σᵢ gᵢ gᵢᵀ,   gᵢ = ∇ℓᵢ(μ)
//!           Σ_new⁻¹ = Σ⁻¹ + ε F̄                 (the precision increases)
//!           μ ← μ + ε Σ_new ḡ
//! ```
//!
//! with ε the `step_size` (posteriors' `lr`).
//!
//! * [`diag_fisher`]: diagonal `Σ = diag(s²)`, `F̄` replaced by its diagonal.
//! * [`dense_fisher`]: dense `Σ` (ravel order). posteriors' dense filter
//!   *subtracts* `ε F̄` from the precision (a sign bug that makes the
//!   covariance grow with data); here it is added, and the test
//!   `dense_filter_converges_and_precision_increases` checks both.

pub mod dense_fisher;
pub mod diag_fisher;

pub use dense_fisher::{DenseEkf, DenseEkfState};
pub use diag_fisher::{DiagEkf, DiagEkfState};

use langevin_core::{Error, Result, Schedule};

/// Hyper-parameters shared by both filters.
#[derive(Debug, Clone)]
pub struct EkfConfig {
    /// ε: weight of each batch's Fisher and gradient (posteriors' `lr`).
    pub step_size: Schedule,
    /// q: standard deviation of the per-step random walk of the parameters.
    pub transition_sd: f64,
    /// Initial standard deviation of every parameter (`Σ₀ = init_sd² I`).
    pub init_sd: f64,
}

impl Default for EkfConfig {
    fn default() -> Self {
        Self {
            step_size: 1e-3.into(),
            transition_sd: 0.0,
            init_sd: 1.0,
        }
    }
}

impl EkfConfig {
    pub fn validate(&self) -> Result<()> {
        self.step_size.validate_positive("step_size")?;
        if !(self.transition_sd.is_finite() && self.transition_sd >= 0.0) {
            return Err(Error::config("transition_sd", "must be finite and >= 0"));
        }
        if !(self.init_sd.is_finite() && self.init_sd > 0.0) {
            return Err(Error::config("init_sd", "must be finite and > 0"));
        }
        Ok(())
    }
}

/// Per-step information of an EKF update.
#[derive(Debug, Clone)]
pub struct EkfInfo {
    /// Mean per-example log likelihood at the predicted mean, before the update.
    pub log_likelihood: f64,
    pub n_examples: usize,
    pub step_size: f64,
}
