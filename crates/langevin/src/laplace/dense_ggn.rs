//! Dense generalised Gauss-Newton Laplace approximation.
//!
//! ```text
//! P ← P + Σᵢ Jᵢᵀ Hᵢ Jᵢ,   Jᵢ = ∂f(θ*, xᵢ)/∂θ,   Hᵢ = ∇²_f [−log p(yᵢ | f)] at f(θ*, xᵢ)
//! ```
//!
//! over the examples of each batch (an [`OutputModel`]). The prior's
//! precision goes in `init_prec_diag`. `q = N(θ*, T P⁻¹)`.
//!
//! Defaults (posteriors' `laplace.dense_ggn`): `init_prec_diag = 0`, every parameter.

use langevin_core::{Params, Result, Transform};
use rand::Rng;

use super::{DenseLaplaceState, LaplaceConfig, LaplaceInfo};
use crate::curvature::{accumulate_ggn, OutputModel};

/// Dense GGN Laplace over a model `M`.
pub struct DenseGgnLaplace<M> {
    config: LaplaceConfig,
    model: M,
}

impl<M: OutputModel> DenseGgnLaplace<M> {
    pub fn new(model: M, config: LaplaceConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, model })
    }

    pub fn config(&self) -> &LaplaceConfig {
        &self.config
    }
}

impl<M: OutputModel> Transform for DenseGgnLaplace<M> {
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
        let (jac, h) = crate::curvature::jacobian_and_hessians(&self.model, &state.params, batch)?;
        accumulate_ggn(&jac, &h, &state.subset, &mut state.prec);
        state.step += 1;
        Ok(LaplaceInfo {
            n_examples: jac.n,
            log_posterior: f64::NAN,
        })
    }
}
