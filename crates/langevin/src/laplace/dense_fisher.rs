//! Dense empirical-Fisher Laplace approximation.
//!
//! ```text
//! P ← P + Σᵢ gᵢ gᵢᵀ   ,    gᵢ = ∇ℓᵢ(θ*)  over the examples of each batch
//! ```
//!
//! where `ℓᵢ` is the user's per-example log posterior (or log likelihood,
//! with the prior's precision in `init_prec_diag`). After a pass over the
//! data, `P = Σ_all gᵢ gᵢᵀ`; `q = N(θ*, T P⁻¹)`.
//!
//! Defaults (posteriors' `laplace.dense_fisher`): `init_prec_diag = 0`, every
//! parameter.

use langevin_core::{Params, Result, Transform};
use rand::Rng;

use super::{DenseLaplaceState, LaplaceConfig, LaplaceInfo};
use crate::curvature::{accumulate_fisher, PerExampleLogLik};

/// Dense empirical-Fisher Laplace over per-example terms `M`.
pub struct DenseFisherLaplace<M> {
    config: LaplaceConfig,
    model: M,
}

impl<M: PerExampleLogLik> DenseFisherLaplace<M> {
    pub fn new(model: M, config: LaplaceConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, model })
    }

    pub fn config(&self) -> &LaplaceConfig {
        &self.config
    }
}

impl<M: PerExampleLogLik> Transform for DenseFisherLaplace<M> {
    type State = DenseLaplaceState;
    type Info = LaplaceInfo;
    type Batch = M::Batch;

    fn init<R: Rng + ?Sized>(&self, params: Params, _rng: &mut R) -> Result<DenseLaplaceState> {
        let subset = self.config.resolve(&params)?;
        Ok(DenseLaplaceState::new(
            params,
            subset,
            self.config.init_prec_diag,
        ))
    }

    fn step<R: Rng + ?Sized>(
        &self,
        state: &mut DenseLaplaceState,
        batch: &M::Batch,
        _rng: &mut R,
    ) -> Result<LaplaceInfo> {
        state.subset.check_dim(state.params.len())?;
        let pe = self.model.per_example(&state.params, batch)?;
        pe.check_finite(state.step)?;
        accumulate_fisher(&pe, &state.subset, &mut state.prec);
        state.step += 1;
        state.log_posterior = pe.mean_value();
        Ok(LaplaceInfo {
            n_examples: pe.n,
            log_posterior: state.log_posterior,
        })
    }
}
