//! Diagonal extended Kalman filter with an empirical-Fisher update.
//!
//! With `s` the per-parameter standard deviations, transition sd `q` and
//! step size ε, per batch:
//!
//! ```text
//! s² ← s² + q²
//! s_new = (s⁻² + ε mean_i gᵢ²)^{−1/2}
//! μ ← μ + ε s_new² ⊙ mean_i gᵢ
//! ```
//!
//! Defaults (posteriors' `ekf.diag_fisher`): ε = 1e-3, q = 0, s₀ = 1.
#![allow(clippy::needless_range_loop)]

use langevin_core::rng::fill_standard_normal;
use langevin_core::{Params, Result, Transform};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{EkfConfig, EkfInfo};
use crate::curvature::PerExampleLogLik;

/// State: mean (as `params`), standard deviations, step, last log likelihood.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagEkfState {
    pub params: Params,
    pub sd_diag: Vec<f64>,
    pub step: u64,
    #[serde(deserialize_with = "langevin_core::serde_nan::f64_or_nan")]
    pub log_likelihood: f64,
}

langevin_core::impl_transform_state!(DiagEkfState {
    params: params,
    step: step,
    log_density: log_likelihood,
});

impl DiagEkfState {
    /// `n` draws from `N(μ, diag(s²))`.
    pub fn sample<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Vec<Params> {
        let mut xi = vec![0.0; self.sd_diag.len()];
        (0..n)
            .map(|_| {
                fill_standard_normal(rng, &mut xi);
                let mut p = self.params.clone();
                for ((t, s), z) in p.values_mut().iter_mut().zip(&self.sd_diag).zip(&xi) {
                    *t += s * z;
                }
                p
            })
            .collect()
    }
}

/// The diagonal EKF over per-example log likelihoods `M`.
pub struct DiagEkf<M> {
    config: EkfConfig,
    model: M,
}

impl<M: PerExampleLogLik> DiagEkf<M> {
    pub fn new(model: M, config: EkfConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, model })
    }

    pub fn config(&self) -> &EkfConfig {
        &self.config
    }
}

impl<M: PerExampleLogLik> Transform for DiagEkf<M> {
    type State = DiagEkfState;
    type Info = EkfInfo;
    type Batch = M::Batch;

    fn init<R: Rng + ?Sized>(&self, params: Params, _rng: &mut R) -> Result<DiagEkfState> {
        let d = params.len();
        Ok(DiagEkfState {
            params,
            sd_diag: vec![self.config.init_sd; d],
            step: 0,
            log_likelihood: f64::NAN,
        })
    }

    fn step<R: Rng + ?Sized>(
        &self,
        state: &mut DiagEkfState,
        batch: &M::Batch,
        _rng: &mut R,
    ) -> Result<EkfInfo> {
        let eps = self
            .config
            .step_size
            .at_checked("step_size", state.step, true)?;
        let pe = self.model.per_example(&state.params, batch)?;
        pe.check_finite(state.step)?;
        if pe.n == 0 {
            return Err(langevin_core::Error::Data(
                "EKF update on an empty batch".into(),
            ));
        }
        let inv_n = 1.0 / pe.n as f64;
        let q2 = self.config.transition_sd * self.config.transition_sd;
        let d = state.params.len();
        let mut gbar = vec![0.0; d];
        let mut fbar = vec![0.0; d];
        for i in 0..pe.n {
            for ((a, b), g) in gbar.iter_mut().zip(fbar.iter_mut()).zip(pe.grad(i)) {
                *a += g;
                *b += g * g;
            }
        }
        // The predicted mean is the current mean (random-walk transition), so
        // the gradients above are taken at the predicted state.
        for ((mu, s), (g, f)) in state
            .params
            .values_mut()
            .iter_mut()
            .zip(state.sd_diag.iter_mut())
            .zip(gbar.iter().zip(&fbar))
        {
            let var_pred = *s * *s + q2;
            let var_new = 1.0 / (1.0 / var_pred + eps * f * inv_n);
            *s = var_new.sqrt();
            *mu += eps * var_new * g * inv_n;
        }
        state.step += 1;
        state.log_likelihood = pe.mean_value();
        Ok(EkfInfo {
            log_likelihood: state.log_likelihood,
            n_examples: pe.n,
            step_size: eps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curvature::FnPerExample;
    use langevin_core::chain_rng;

    /// ℓ(θ) = −|θ − target|²/2 (one example, as posteriors' test).
    pub(crate) fn static_gaussian(target: Vec<f64>) -> impl PerExampleLogLik<Batch = ()> {
        FnPerExample::new(move |t: &[f64], _: &()| {
            let g: Vec<f64> = target.iter().zip(t).map(|(a, b)| a - b).collect();
            let v = -0.5 * g.iter().map(|x| x * x).sum::<f64>();
            (vec![v], g)
        })
    }

    /// Without transition noise the Fisher term keeps growing the precision
    /// (to `exp((e₀² − e²)/2)` for an initial error e₀ on one coordinate),
    /// so a distant target is approached slowly; the first case uses a
    /// target within one prior sd, the second a distant target with q > 0.
    #[test]
    fn diag_filter_reaches_the_target_mean() {
        for (target, q) in [(vec![0.5, -1.0, 0.8], 0.0), (vec![1.0, -2.0, 3.0], 0.1)] {
            run(target, q);
        }
    }

    fn run(target: Vec<f64>, q: f64) {
        let cfg = EkfConfig {
            step_size: 0.1.into(),
            transition_sd: q,
            ..EkfConfig::default()
        };
        let ekf = DiagEkf::new(static_gaussian(target.clone()), cfg).unwrap();
        let mut rng = chain_rng(0, 0);
        let mut s = ekf.init(Params::from_vec(vec![0.0; 3]), &mut rng).unwrap();
        let first = ekf.step(&mut s, &(), &mut rng).unwrap().log_likelihood;
        let mut last = first;
        for _ in 1..1000 {
            last = ekf.step(&mut s, &(), &mut rng).unwrap().log_likelihood;
        }
        for j in 0..3 {
            assert!(
                (s.params.values()[j] - target[j]).abs() < 1e-3,
                "{:?}",
                s.params
            );
            // Random walk: the variance can grow by at most q² per step.
            assert!(s.sd_diag[j] > 0.0 && s.sd_diag[j].powi(2) <= 1.0 + 1000.0 * q * q + 1e-9);
        }
        assert!(last > first);
    }

    #[test]
    fn rejects_bad_config() {
        let target = vec![0.0];
        assert!(DiagEkf::new(
            static_gaussian(target),
            EkfConfig {
                init_sd: 0.0,
                ..EkfConfig::default()
            }
        )
        .is_err());
    }
}
