//! Variational inference with a dense Gaussian `q = N(m, L Lᵀ)`.
//!
//! `L` is an unconstrained lower-triangular `d × d` matrix (its diagonal may
//! take either sign; `log |det L| = Σⱼ log |Lⱼⱼ|`), optimised through its
//! `d(d+1)/2` lower entries in row-major order. The mean and `L` use the
//! parameters' ravel order. One step draws `ξₛ ~ N(0, I)`, `θₛ = m + L ξₛ`,
//! evaluates `gₛ = ∇ℓ(θₛ)` and, with `uₛ = L⁻ᵀ ξₛ` (so `∂ log q/∂θ = −uₛ`),
//!
//! ```text
//! log q(θₛ)   = −|ξₛ|²/2 − Σⱼ log |Lⱼⱼ| − (d/2) log 2π
//! NELBO       = −(1/S) Σₛ [ ℓ(θₛ) − T log q(θₛ) ]
//! ∂NELBO/∂m   = −(1/S) Σₛ [ gₛ + T uₛ ]                   (stick the landing)
//!             = −(1/S) Σₛ gₛ                               (full gradient)
//! ∂NELBO/∂Lⱼₖ = −(1/S) Σₛ [ gₛⱼ ξₛₖ + T uₛⱼ ξₛₖ ]          (stick the landing)
//!             = −(1/S) Σₛ [ gₛⱼ ξₛₖ + T δⱼₖ / Lⱼⱼ ]        (full gradient)
//! ```
//!
//! Stick the landing detaches *both* `m` and `L` inside `log q`. posteriors'
//! `vi.dense` detaches only `L`, which leaves the mean's score term
//! (`∂m = −Σ gₛ` instead of `−Σ (gₛ + T uₛ)`), so its estimator does not have
//! zero variance at the optimum; the test
//! `nelbo_is_zero_and_stl_gradient_vanishes_at_the_optimum` checks that ours does.
//!
//! Defaults: Adam with learning rate 1e-2, T = 1, S = 1, stick the landing on,
//! `L = I` initially.
#![allow(clippy::needless_range_loop)]

use langevin_core::rng::fill_standard_normal;
use langevin_core::{check_finite, Error, LogDensity, Params, Result, Schedule, Transform};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{ViInfo, HALF_LOG_2PI};
use crate::curvature::{lower_matvec, solve_lower_t};
use crate::optim::{Optimizer, OptimizerState};

/// Hyper-parameters of dense VI.
#[derive(Debug, Clone)]
pub struct DenseViConfig {
    pub optimizer: Optimizer,
    pub temperature: Schedule,
    pub n_samples: usize,
    pub stick_the_landing: bool,
    /// Initial `L = init_scale · I`.
    pub init_scale: f64,
}

impl Default for DenseViConfig {
    fn default() -> Self {
        Self {
            optimizer: Optimizer::adam(1e-2),
            temperature: 1.0.into(),
            n_samples: 1,
            stick_the_landing: true,
            init_scale: 1.0,
        }
    }
}

impl DenseViConfig {
    pub fn validate(&self) -> Result<()> {
        self.optimizer.validate()?;
        self.temperature.validate_non_negative("temperature")?;
        if self.n_samples == 0 {
            return Err(Error::config("n_samples", "must be at least 1"));
        }
        if !(self.init_scale.is_finite() && self.init_scale > 0.0) {
            return Err(Error::config("init_scale", "must be finite and > 0"));
        }
        Ok(())
    }
}

/// State of dense VI: mean (as `params`), `L` (row-major `d × d`, zero above
/// the diagonal), optimiser buffers over `[m; packed L]`, last NELBO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenseViState {
    pub params: Params,
    pub chol: Vec<f64>,
    pub opt: OptimizerState,
    #[serde(deserialize_with = "langevin_core::serde_nan::f64_or_nan")]
    pub nelbo: f64,
    #[serde(deserialize_with = "langevin_core::serde_nan::f64_or_nan")]
    pub log_posterior: f64,
    pub step: u64,
}

langevin_core::impl_transform_state!(DenseViState {
    params: params,
    step: step,
    log_density: log_posterior,
});

impl DenseViState {
    /// `Σ = L Lᵀ`, row-major.
    pub fn covariance(&self) -> Vec<f64> {
        let d = self.params.len();
        let l = &self.chol;
        let mut c = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..=i {
                let s: f64 = (0..=j).map(|k| l[i * d + k] * l[j * d + k]).sum();
                c[i * d + j] = s;
                c[j * d + i] = s;
            }
        }
        c
    }

    /// `n` independent draws `m + L ξ`.
    pub fn sample<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Vec<Params> {
        let d = self.params.len();
        let mut xi = vec![0.0; d];
        let mut lx = vec![0.0; d];
        (0..n)
            .map(|_| {
                fill_standard_normal(rng, &mut xi);
                lower_matvec(&self.chol, d, &xi, &mut lx);
                let mut p = self.params.clone();
                for (t, v) in p.values_mut().iter_mut().zip(&lx) {
                    *t += v;
                }
                p
            })
            .collect()
    }
}

/// Dense-Gaussian VI over a log density `D`.
pub struct DenseVi<D> {
    config: DenseViConfig,
    density: D,
}

struct Estimate<A> {
    nelbo: f64,
    mean_lp: f64,
    grad: Vec<f64>,
    aux: A,
}

fn packed_len(d: usize) -> usize {
    d * (d + 1) / 2
}

impl<D: LogDensity> DenseVi<D> {
    pub fn new(density: D, config: DenseViConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, density })
    }

    pub fn config(&self) -> &DenseViConfig {
        &self.config
    }

    pub fn density(&self) -> &D {
        &self.density
    }

    /// A state with given mean and lower-triangular `L` (row-major `d × d`;
    /// entries above the diagonal must be zero, the diagonal non-zero).
    pub fn init_with(&self, params: Params, chol: Vec<f64>) -> Result<DenseViState> {
        let d = params.len();
        if chol.len() != d * d {
            return Err(Error::DimensionMismatch {
                what: "L (d × d)",
                expected: d * d,
                got: chol.len(),
            });
        }
        for i in 0..d {
            if chol[i * d + i] == 0.0 {
                return Err(Error::config("chol", format!("diagonal entry {i} is zero")));
            }
            if ((i + 1)..d).any(|j| chol[i * d + j] != 0.0) {
                return Err(Error::config("chol", "must be lower triangular"));
            }
        }
        if chol.iter().chain(params.values()).any(|x| !x.is_finite()) {
            return Err(Error::config("init", "mean and L must be finite"));
        }
        let opt = self.config.optimizer.init_state(d + packed_len(d));
        Ok(DenseViState {
            params,
            chol,
            opt,
            nelbo: f64::NAN,
            log_posterior: f64::NAN,
            step: 0,
        })
    }

    /// A Monte Carlo NELBO estimate at `state` (the state is not changed).
    pub fn nelbo<R: Rng + ?Sized>(
        &self,
        state: &DenseViState,
        batch: &D::Batch,
        n_samples: usize,
        temperature: f64,
        rng: &mut R,
    ) -> Result<f64> {
        if n_samples == 0 {
            return Err(Error::config("n_samples", "must be at least 1"));
        }
        Ok(self
            .estimate(state, batch, n_samples, temperature, rng)?
            .nelbo)
    }

    /// The NELBO gradient estimate over `[m; packed L]` (exposed for tests
    /// and diagnostics).
    pub fn nelbo_grad<R: Rng + ?Sized>(
        &self,
        state: &DenseViState,
        batch: &D::Batch,
        n_samples: usize,
        temperature: f64,
        rng: &mut R,
    ) -> Result<Vec<f64>> {
        if n_samples == 0 {
            return Err(Error::config("n_samples", "must be at least 1"));
        }
        Ok(self
            .estimate(state, batch, n_samples, temperature, rng)?
            .grad)
    }

    fn estimate<R: Rng + ?Sized>(
        &self,
        state: &DenseViState,
        batch: &D::Batch,
        n_samples: usize,
        temp: f64,
        rng: &mut R,
    ) -> Result<Estimate<D::Aux>> {
        let d = state.params.len();
        let l = &state.chol;
        let stl = self.config.stick_the_landing;
        let log_det: f64 = (0..d).map(|j| l[j * d + j].abs().ln()).sum();
        let mut xi = vec![0.0; d];
        let mut lx = vec![0.0; d];
        let mut u = vec![0.0; d];
        let mut g = vec![0.0; d];
        let mut theta = state.params.clone();
        let mut grad = vec![0.0; d + packed_len(d)];
        let (mut sum_obj, mut sum_lp) = (0.0, 0.0);
        let mut first_aux = None;
        for _ in 0..n_samples {
            fill_standard_normal(rng, &mut xi);
            lower_matvec(l, d, &xi, &mut lx);
            for ((t, m), v) in theta
                .values_mut()
                .iter_mut()
                .zip(state.params.values())
                .zip(&lx)
            {
                *t = m + v;
            }
            let (lp, aux) = self.density.value_and_grad(&theta, batch, &mut g)?;
            check_finite(lp, &g, state.step)?;
            let log_q =
                -0.5 * xi.iter().map(|z| z * z).sum::<f64>() - log_det - d as f64 * HALF_LOG_2PI;
            sum_obj += lp - temp * log_q;
            sum_lp += lp;
            let (gm, gl) = grad.split_at_mut(d);
            if stl {
                u.copy_from_slice(&xi);
                solve_lower_t(l, d, &mut u);
                for j in 0..d {
                    gm[j] -= g[j] + temp * u[j];
                }
                let mut p = 0;
                for j in 0..d {
                    let a = g[j] + temp * u[j];
                    for k in 0..=j {
                        gl[p] -= a * xi[k];
                        p += 1;
                    }
                }
            } else {
                for j in 0..d {
                    gm[j] -= g[j];
                }
                let mut p = 0;
                for j in 0..d {
                    for k in 0..=j {
                        gl[p] -= g[j] * xi[k];
                        if k == j {
                            gl[p] -= temp / l[j * d + j];
                        }
                        p += 1;
                    }
                }
            }
            if first_aux.is_none() {
                first_aux = Some(aux);
            }
        }
        let inv = 1.0 / n_samples as f64;
        grad.iter_mut().for_each(|x| *x *= inv);
        let nelbo = -sum_obj * inv;
        if !nelbo.is_finite() || grad.iter().any(|x| !x.is_finite()) {
            return Err(Error::NonFiniteLogDensity {
                step: state.step,
                value: nelbo,
                bad_grad: grad.iter().filter(|x| !x.is_finite()).count(),
            });
        }
        Ok(Estimate {
            nelbo,
            mean_lp: sum_lp * inv,
            grad,
            aux: first_aux.expect("n_samples >= 1"),
        })
    }
}

impl<D: LogDensity> Transform for DenseVi<D> {
    type State = DenseViState;
    type Info = ViInfo<D::Aux>;
    type Batch = D::Batch;

    fn init<R: Rng + ?Sized>(&self, params: Params, _rng: &mut R) -> Result<DenseViState> {
        let d = params.len();
        let mut chol = vec![0.0; d * d];
        for j in 0..d {
            chol[j * d + j] = self.config.init_scale;
        }
        self.init_with(params, chol)
    }

    fn step<R: Rng + ?Sized>(
        &self,
        state: &mut DenseViState,
        batch: &D::Batch,
        rng: &mut R,
    ) -> Result<Self::Info> {
        let temp = self
            .config
            .temperature
            .at_checked("temperature", state.step, false)?;
        let est = self.estimate(state, batch, self.config.n_samples, temp, rng)?;
        let d = state.params.len();
        let mut x = Vec::with_capacity(d + packed_len(d));
        x.extend_from_slice(state.params.values());
        for j in 0..d {
            x.extend_from_slice(&state.chol[j * d..j * d + j + 1]);
        }
        let mut opt = state.opt.clone();
        self.config.optimizer.apply(&mut opt, &mut x, &est.grad)?;
        state.params.values_mut().copy_from_slice(&x[..d]);
        let mut p = d;
        for j in 0..d {
            state.chol[j * d..j * d + j + 1].copy_from_slice(&x[p..p + j + 1]);
            p += j + 1;
        }
        state.opt = opt;
        state.nelbo = est.nelbo;
        state.log_posterior = est.mean_lp;
        state.step += 1;
        Ok(ViInfo {
            nelbo: est.nelbo,
            log_posterior: est.mean_lp,
            temperature: temp,
            aux: est.aux,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curvature::{cholesky, spd_inverse};
    use langevin_core::{chain_rng, FnDensity};
    use std::sync::Arc;

    /// log N(x; mu, cov), normalised.
    fn gaussian(mu: Vec<f64>, cov: Vec<f64>) -> Arc<dyn LogDensity<Batch = (), Aux = ()>> {
        let d = mu.len();
        let prec = spd_inverse(&cov, d, "test").unwrap();
        let l = cholesky(&cov, d, "test").unwrap();
        let log_det: f64 = (0..d).map(|j| 2.0 * l[j * d + j].ln()).sum();
        Arc::new(FnDensity::new(move |x: &[f64], _: &(), g: &mut [f64]| {
            let r: Vec<f64> = x.iter().zip(&mu).map(|(a, b)| a - b).collect();
            let mut q = 0.0;
            for i in 0..d {
                g[i] = -(0..d).map(|j| prec[i * d + j] * r[j]).sum::<f64>();
                q -= r[i] * g[i];
            }
            -0.5 * q - 0.5 * log_det - d as f64 * HALF_LOG_2PI
        }))
    }

    fn target() -> (Vec<f64>, Vec<f64>) {
        (
            vec![1.0, -1.0, 0.5],
            vec![1.0, 0.6, -0.3, 0.6, 2.0, 0.4, -0.3, 0.4, 0.8],
        )
    }

    #[test]
    fn nelbo_is_zero_and_stl_gradient_vanishes_at_the_optimum() {
        let (mu, cov) = target();
        let vi = DenseVi::new(gaussian(mu.clone(), cov.clone()), DenseViConfig::default()).unwrap();
        let l = cholesky(&cov, 3, "t").unwrap();
        let state = vi.init_with(Params::from_vec(mu), l).unwrap();
        for seed in 0..3 {
            let mut rng = chain_rng(seed, 0);
            assert!(vi.nelbo(&state, &(), 5, 1.0, &mut rng).unwrap().abs() < 1e-9);
            let g = vi.nelbo_grad(&state, &(), 5, 1.0, &mut rng).unwrap();
            assert!(g.iter().all(|x| x.abs() < 1e-9), "{g:?}");
        }
        // Detaching only L (posteriors) would leave −Σ gₛ ≠ 0 on the mean.
        let full = DenseVi::new(
            gaussian(target().0, target().1),
            DenseViConfig {
                stick_the_landing: false,
                ..DenseViConfig::default()
            },
        )
        .unwrap();
        let g = full
            .nelbo_grad(&state, &(), 1, 1.0, &mut chain_rng(0, 0))
            .unwrap();
        assert!(g[..3].iter().any(|x| x.abs() > 1e-3));
    }

    #[test]
    fn fits_a_3d_gaussian_covariance() {
        let (mu, cov) = target();
        for stl in [true, false] {
            for seed in 0..2 {
                let cfg = DenseViConfig {
                    optimizer: Optimizer::adam(1e-2),
                    n_samples: 2,
                    stick_the_landing: stl,
                    ..DenseViConfig::default()
                };
                let vi = DenseVi::new(gaussian(mu.clone(), cov.clone()), cfg).unwrap();
                let mut rng = chain_rng(seed, 0);
                let mut s = vi.init(Params::from_vec(vec![0.0; 3]), &mut rng).unwrap();
                for _ in 0..2000 {
                    vi.step(&mut s, &(), &mut rng).unwrap();
                }
                let c = s.covariance();
                for i in 0..9 {
                    assert!((c[i] - cov[i]).abs() < 0.5, "stl {stl} seed {seed}: {c:?}");
                }
                for j in 0..3 {
                    assert!((s.params.values()[j] - mu[j]).abs() < 0.5);
                }
            }
        }
    }

    #[test]
    fn samples_match_the_state_moments() {
        let (mu, cov) = target();
        let vi = DenseVi::new(gaussian(mu.clone(), cov.clone()), DenseViConfig::default()).unwrap();
        let state = vi
            .init_with(
                Params::from_vec(mu.clone()),
                cholesky(&cov, 3, "t").unwrap(),
            )
            .unwrap();
        for seed in 0..3 {
            let draws = state.sample(10_000, &mut chain_rng(seed, 2));
            for j in 0..3 {
                let xs: Vec<f64> = draws.iter().map(|p| p.values()[j]).collect();
                let m = xs.iter().sum::<f64>() / xs.len() as f64;
                let sd = (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64)
                    .sqrt();
                let true_sd = cov[j * 4].sqrt();
                assert!((m - mu[j]).abs() < 5.0 * true_sd / 100.0 && (m - mu[j]).abs() < 0.1);
                assert!((sd - true_sd).abs() < 5.0 * true_sd / 141.0);
            }
        }
    }

    #[test]
    fn rejects_bad_l() {
        let vi = DenseVi::new(
            gaussian(vec![0.0; 2], vec![1.0, 0.0, 0.0, 1.0]),
            DenseViConfig::default(),
        )
        .unwrap();
        let p = Params::from_vec(vec![0.0; 2]);
        assert!(vi.init_with(p.clone(), vec![1.0, 1.0, 0.0, 1.0]).is_err());
        assert!(vi.init_with(p.clone(), vec![1.0, 0.0, 0.0, 0.0]).is_err());
        assert!(vi.init_with(p, vec![1.0]).is_err());
    }
}
