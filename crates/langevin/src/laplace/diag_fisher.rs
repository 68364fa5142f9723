//! Diagonal empirical-Fisher Laplace approximation.
//!
//! ```text
//! P ← P + Σᵢ gᵢ ⊙ gᵢ,    gᵢ = ∇ℓᵢ(θ*)  over the examples of each batch
//! ```
//!
//! where `ℓᵢ` is the user's per-example log posterior (or log likelihood,
//! with the prior's precision in `init_prec_diag`). The batch sums come from
//! [`PerExampleLogLik::diag_fisher`], which a model can compute without
//! forming the per-example gradients. After a pass over the
//! data, `P = Σ_all gᵢ²`; `q = N(θ*, T diag(P)⁻¹)`.
//!
//! Defaults (posteriors' `laplace.diag_fisher`): `init_prec_diag = 0`, every
//! parameter.

use langevin_core::{Error, Params, Result, Transform};
use rand::Rng;

use super::{DiagLaplaceState, LaplaceConfig, LaplaceInfo};
use crate::curvature::PerExampleLogLik;

/// Diagonal empirical-Fisher Laplace over per-example terms `M`.
pub struct DiagFisherLaplace<M> {
    config: LaplaceConfig,
    model: M,
}

impl<M: PerExampleLogLik> DiagFisherLaplace<M> {
    pub fn new(model: M, config: LaplaceConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, model })
    }

    pub fn config(&self) -> &LaplaceConfig {
        &self.config
    }
}

impl<M: PerExampleLogLik> Transform for DiagFisherLaplace<M> {
    type State = DiagLaplaceState;
    type Info = LaplaceInfo;
    type Batch = M::Batch;

    fn init<R: Rng + ?Sized>(&self, params: Params, _rng: &mut R) -> Result<DiagLaplaceState> {
        let subset = self.config.resolve(&params)?;
        Ok(DiagLaplaceState::new(
            params,
            subset,
            self.config.init_prec_diag,
        ))
    }

    fn step<R: Rng + ?Sized>(
        &self,
        state: &mut DiagLaplaceState,
        batch: &M::Batch,
        _rng: &mut R,
    ) -> Result<LaplaceInfo> {
        state.subset.check_dim(state.params.len())?;
        let f = self.model.diag_fisher(&state.params, batch)?;
        if f.sum_sq.len() != state.params.len() {
            return Err(Error::DimensionMismatch {
                what: "diagonal Fisher of a batch",
                expected: state.params.len(),
                got: f.sum_sq.len(),
            });
        }
        f.check_finite(state.step)?;
        for (a, &j) in state.prec_diag.iter_mut().zip(state.subset.indices()) {
            *a += f.sum_sq[j];
        }
        state.step += 1;
        state.log_posterior = f.mean_value;
        Ok(LaplaceInfo {
            n_examples: f.n,
            log_posterior: state.log_posterior,
        })
    }
}
