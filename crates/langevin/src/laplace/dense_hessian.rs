//! Dense Hessian Laplace approximation.
//!
//! ```text
//! P ← P + rescale · (−∇² log_posterior(θ*, batch)) + jitter · I
//! ```
//!
//! per batch, with the Hessian one Hessian-vector product per column
//! ([`crate::curvature::hessian_subset`]): exact where the density has an
//! exact product ([`LogDensity::hvp_exact`]: candle densities with double
//! backward enabled, the hand-written MLP density's R-operator), central
//! differences of gradients otherwise (about 1e-8 relative for smooth f64
//! models, 1e-3 to 1e-2 for f32 models, and wrong near ReLU kinks; see
//! [`crate::curvature`] and BENCHMARKS.md). With posteriors' batch-averaged
//! log posterior (`mean_i log p(yᵢ | θ) + log p(θ) / N`) and batches of size
//! B, `rescale = B` makes `P` after one pass the full posterior precision
//! `−Σᵢ ∇² log p(yᵢ | θ) − ∇² log p(θ)`. `jitter` (posteriors' `epsilon`)
//! is added at every update to keep `P` positive definite; the Hessian need
//! not be negative definite away from a mode.
//!
//! Defaults (posteriors' `laplace.dense_hessian`): `init_prec_diag = 0`,
//! `rescale = 1`, `jitter = 0`, every parameter.

use langevin_core::{Error, LogDensity, Params, Result, Transform};
use rand::Rng;

use super::{DenseLaplaceState, LaplaceConfig, LaplaceInfo};
use crate::curvature::hessian_subset;

/// Hyper-parameters of the dense Hessian Laplace.
#[derive(Debug, Clone)]
pub struct DenseHessianConfig {
    pub init_prec_diag: f64,
    pub subset: Option<Vec<String>>,
    /// Multiplies the negative Hessian of each batch.
    pub rescale: f64,
    /// Added to the precision's diagonal at each update.
    pub jitter: f64,
}

impl Default for DenseHessianConfig {
    fn default() -> Self {
        Self {
            init_prec_diag: 0.0,
            subset: None,
            rescale: 1.0,
            jitter: 0.0,
        }
    }
}

impl DenseHessianConfig {
    pub fn validate(&self) -> Result<()> {
        self.base().validate()?;
        if !(self.rescale.is_finite() && self.rescale > 0.0) {
            return Err(Error::config("rescale", "must be finite and > 0"));
        }
        if !(self.jitter.is_finite() && self.jitter >= 0.0) {
            return Err(Error::config("jitter", "must be finite and >= 0"));
        }
        Ok(())
    }

    fn base(&self) -> LaplaceConfig {
        LaplaceConfig {
            init_prec_diag: self.init_prec_diag,
            subset: self.subset.clone(),
        }
    }
}

/// Dense Hessian Laplace over a log density `D`.
pub struct DenseHessianLaplace<D> {
    config: DenseHessianConfig,
    density: D,
}

impl<D: LogDensity> DenseHessianLaplace<D> {
    pub fn new(density: D, config: DenseHessianConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, density })
    }

    pub fn config(&self) -> &DenseHessianConfig {
        &self.config
    }
}

impl<D: LogDensity> Transform for DenseHessianLaplace<D> {
    type State = DenseLaplaceState;
    type Info = LaplaceInfo;
    type Batch = D::Batch;

    fn init<R: Rng + ?Sized>(&self, params: Params, _rng: &mut R) -> Result<DenseLaplaceState> {
        let subset = self.config.base().resolve(&params)?;
        Ok(DenseLaplaceState::new(
            params,
            subset,
            self.config.init_prec_diag,
        ))
    }

    fn step<R: Rng + ?Sized>(
        &self,
        state: &mut DenseLaplaceState,
        batch: &D::Batch,
        _rng: &mut R,
    ) -> Result<LaplaceInfo> {
        let (value, _) = self.density.value(&state.params, batch)?;
        if !value.is_finite() {
            return Err(Error::NonFiniteLogDensity {
                step: state.step,
                value,
                bad_grad: 0,
            });
        }
        let h = hessian_subset(&self.density, &state.params, batch, &state.subset)?;
        let m = state.subset.len();
        let (r, j) = (self.config.rescale, self.config.jitter);
        for (p, hv) in state.prec.iter_mut().zip(&h) {
            *p -= r * hv;
        }
        for a in 0..m {
            state.prec[a * m + a] += j;
        }
        state.step += 1;
        state.log_posterior = value;
        Ok(LaplaceInfo {
            n_examples: 1,
            log_posterior: value,
        })
    }
}
