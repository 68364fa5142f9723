//! Dense extended Kalman filter with an empirical-Fisher update.
//!
//! With covariance Σ (ravel order), transition sd `q` and step size ε, per batch:
//!
//! ```text
//! Σ ← Σ + q² I
//! F̄ = (1/n) Σᵢ gᵢ gᵢᵀ,   ḡ = (1/n) Σᵢ gᵢ
//! Σ_new = (Σ⁻¹ + ε F̄)⁻¹          (precision increases by ε F̄)
//! μ ← μ + ε Σ_new ḡ
//! ```
//!
//! posteriors' `ekf.dense_fisher` computes `Σ⁻¹ − ε F̄`: a sign bug under which
//! the covariance grows with every batch (and may stop being positive
//! definite). Both inverses go through a Cholesky factorisation (faer); a
//! non positive definite Σ is reported as `NotPositiveDefinite` and the
//! state is left untouched.
//!
//! Defaults: ε = 1e-3, q = 0, Σ₀ = I.
#![allow(clippy::needless_range_loop)]

use langevin_core::rng::fill_standard_normal;
use langevin_core::{Params, Result, Transform};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{EkfConfig, EkfInfo};
use crate::curvature::{cholesky, dot, lower_matvec, spd_inverse, PerExampleLogLik};

/// State: mean (as `params`), covariance (row-major `d × d`), step, last log likelihood.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenseEkfState {
    pub params: Params,
    pub cov: Vec<f64>,
    pub step: u64,
    #[serde(deserialize_with = "langevin_core::serde_nan::f64_or_nan")]
    pub log_likelihood: f64,
}

langevin_core::impl_transform_state!(DenseEkfState {
    params: params,
    step: step,
    log_density: log_likelihood,
});

impl DenseEkfState {
    /// `n` draws from `N(μ, Σ)`.
    pub fn sample<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Result<Vec<Params>> {
        let d = self.params.len();
        let l = cholesky(&self.cov, d, "dense EKF covariance")?;
        let mut xi = vec![0.0; d];
        let mut lx = vec![0.0; d];
        Ok((0..n)
            .map(|_| {
                fill_standard_normal(rng, &mut xi);
                lower_matvec(&l, d, &xi, &mut lx);
                let mut p = self.params.clone();
                for (t, v) in p.values_mut().iter_mut().zip(&lx) {
                    *t += v;
                }
                p
            })
            .collect())
    }
}

/// The dense EKF over per-example log likelihoods `M`.
pub struct DenseEkf<M> {
    config: EkfConfig,
    model: M,
}

impl<M: PerExampleLogLik> DenseEkf<M> {
    pub fn new(model: M, config: EkfConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, model })
    }

    pub fn config(&self) -> &EkfConfig {
        &self.config
    }
}

impl<M: PerExampleLogLik> Transform for DenseEkf<M> {
    type State = DenseEkfState;
    type Info = EkfInfo;
    type Batch = M::Batch;

    fn init<R: Rng + ?Sized>(&self, params: Params, _rng: &mut R) -> Result<DenseEkfState> {
        let d = params.len();
        let mut cov = vec![0.0; d * d];
        for j in 0..d {
            cov[j * d + j] = self.config.init_sd * self.config.init_sd;
        }
        Ok(DenseEkfState {
            params,
            cov,
            step: 0,
            log_likelihood: f64::NAN,
        })
    }

    fn step<R: Rng + ?Sized>(
        &self,
        state: &mut DenseEkfState,
        batch: &M::Batch,
        _rng: &mut R,
    ) -> Result<EkfInfo> {
        let eps = self
            .config
            .step_size
            .at_checked("step_size", state.step, true)?;
        let d = state.params.len();
        crate::curvature::check_len("dense EKF covariance", d * d, state.cov.len())?;
        let pe = self.model.per_example(&state.params, batch)?;
        pe.check_finite(state.step)?;
        if pe.n == 0 {
            return Err(langevin_core::Error::Data(
                "EKF update on an empty batch".into(),
            ));
        }
        let inv_n = 1.0 / pe.n as f64;
        let q2 = self.config.transition_sd * self.config.transition_sd;
        let mut pred = state.cov.clone();
        for j in 0..d {
            pred[j * d + j] += q2;
        }
        let mut prec = spd_inverse(&pred, d, "dense EKF predicted covariance")?;
        let all = crate::curvature::Subset::all(d);
        let mut fisher = vec![0.0; d * d];
        crate::curvature::accumulate_fisher(&pe, &all, &mut fisher);
        for (p, f) in prec.iter_mut().zip(&fisher) {
            *p += eps * inv_n * f;
        }
        let cov_new = spd_inverse(&prec, d, "dense EKF updated precision")?;
        let gbar = pe.mean_grad();
        let mu = state.params.values_mut();
        for i in 0..d {
            mu[i] += eps * dot(&cov_new[i * d..(i + 1) * d], &gbar);
        }
        state.cov = cov_new;
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
    use rand::Rng;

    /// Observations yᵢ ~ N(θ*, A) with a correlated A; ℓᵢ = log N(yᵢ; θ, I).
    #[test]
    fn dense_filter_converges_and_precision_increases() {
        let target = [1.0, -2.0, 0.5];
        let mut rng = chain_rng(4, 0);
        let ys: Vec<[f64; 3]> = (0..20)
            .map(|_| {
                let z: [f64; 3] = [
                    rng.random::<f64>() - 0.5,
                    rng.random::<f64>() - 0.5,
                    rng.random::<f64>() - 0.5,
                ];
                [
                    target[0] + z[0],
                    target[1] + z[0] + z[1],
                    target[2] + z[2] - z[1],
                ]
            })
            .collect();
        let ybar: Vec<f64> = (0..3)
            .map(|j| ys.iter().map(|y| y[j]).sum::<f64>() / 20.0)
            .collect();
        let model = FnPerExample::new(move |t: &[f64], _: &()| {
            let mut vals = Vec::new();
            let mut grads = Vec::new();
            for y in &ys {
                let r: Vec<f64> = (0..3).map(|j| y[j] - t[j]).collect();
                vals.push(-0.5 * r.iter().map(|x| x * x).sum::<f64>());
                grads.extend(r);
            }
            (vals, grads)
        });
        // q > 0: with spread-out data the Fisher term grows the precision
        // linearly, and a random walk keeps the filter responsive.
        let cfg = EkfConfig {
            step_size: 0.1.into(),
            transition_sd: 0.1,
            ..EkfConfig::default()
        };
        let ekf = DenseEkf::new(model, cfg).unwrap();
        let mut s = ekf.init(Params::from_vec(vec![0.0; 3]), &mut rng).unwrap();
        let first = ekf.step(&mut s, &(), &mut rng).unwrap().log_likelihood;
        let mut last = first;
        for _ in 1..1000 {
            let mut pred = s.cov.clone();
            for j in 0..3 {
                pred[j * 4] += 0.01;
            }
            let prec_pred = spd_inverse(&pred, 3, "t").unwrap();
            last = ekf.step(&mut s, &(), &mut rng).unwrap().log_likelihood;
            let prec_after = spd_inverse(&s.cov, 3, "t").unwrap();
            // The update adds ε F̄ (positive semi-definite) to the predicted
            // precision: every diagonal entry grows.
            for j in 0..3 {
                assert!(prec_after[j * 4] >= prec_pred[j * 4] - 1e-9);
            }
        }
        for j in 0..3 {
            assert!(
                (s.params.values()[j] - ybar[j]).abs() < 1e-3,
                "{:?} vs {ybar:?}",
                s.params
            );
            // Steady state: Σ⁻¹ + εF̄ = (Σ + q²I)⁻¹ keeps Σ of order q/sqrt(εF̄) ≈ 1.
            assert!(s.cov[j * 4] > 0.0 && s.cov[j * 4] < 3.0, "{:?}", s.cov);
        }
        assert!(last > first);
        let draws = s.sample(10, &mut rng).unwrap();
        assert_eq!(draws.len(), 10);
    }

    #[test]
    fn one_update_adds_eps_fisher_to_the_precision() {
        let model = FnPerExample::new(|t: &[f64], _: &()| {
            let g1 = vec![1.0 - t[0], 2.0 - t[1]];
            let g2 = vec![-0.5 - t[0], 1.0 + t[1]];
            (vec![0.0, 0.0], [g1, g2].concat())
        });
        let cfg = EkfConfig {
            step_size: 0.3.into(),
            transition_sd: 0.2,
            init_sd: 1.5,
        };
        let ekf = DenseEkf::new(model, cfg).unwrap();
        let mut rng = chain_rng(0, 0);
        let mut s = ekf
            .init(Params::from_vec(vec![0.1, -0.2]), &mut rng)
            .unwrap();
        ekf.step(&mut s, &(), &mut rng).unwrap();
        let g1 = [0.9, 2.2];
        let g2 = [-0.6, 0.8];
        let var_pred = 1.5f64 * 1.5 + 0.04;
        let prec = spd_inverse(&s.cov, 2, "t").unwrap();
        for a in 0..2 {
            for b in 0..2 {
                let f = 0.5 * (g1[a] * g1[b] + g2[a] * g2[b]);
                let expected = if a == b { 1.0 / var_pred } else { 0.0 } + 0.3 * f;
                assert!((prec[a * 2 + b] - expected).abs() < 1e-12);
            }
        }
    }
}
