//! Variational inference with a diagonal Gaussian `q = N(m, diag(s²))`.
//!
//! Parameters: mean `m` and `ρ = log s`. One step draws `ξₛ ~ N(0, I)`,
//! `θₛ = m + s ⊙ ξₛ` for `s = 1..S`, evaluates `gₛ = ∇ℓ(θₛ)` and
//!
//! ```text
//! log q(θₛ) = Σⱼ [ −ξₛⱼ²/2 − ρⱼ ] − (d/2) log 2π
//! NELBO     = −(1/S) Σₛ [ ℓ(θₛ) − T log q(θₛ) ]
//! ∂NELBO/∂m = −(1/S) Σₛ [ gₛ + T ξₛ / s ]              (stick the landing)
//!           = −(1/S) Σₛ gₛ                              (full gradient)
//! ∂NELBO/∂ρ = −(1/S) Σₛ [ gₛ ⊙ s ⊙ ξₛ + T ξₛ² ]        (stick the landing)
//!           = −(1/S) Σₛ [ gₛ ⊙ s ⊙ ξₛ + T ]            (full gradient)
//! ```
//!
//! and hands `(∂m, ∂ρ)` to the optimiser, which minimises. Stick the landing
//! detaches `m` and `s` inside `log q` only (`∂ log q/∂θ = −ξ/s`).
//!
//! Defaults (posteriors' `vi.diag`): Adam with learning rate 1e-2, T = 1,
//! S = 1, stick the landing on, initial `log s = 0`.
//!
//! References: Blundell et al. (2015), *Weight uncertainty in neural
//! networks*; Roeder, Wu and Duvenaud (2017), *Sticking the landing*.
#![allow(clippy::needless_range_loop)]

use langevin_core::rng::fill_standard_normal;
use langevin_core::{check_finite, Error, LogDensity, Params, Result, Schedule, Transform};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{ViInfo, HALF_LOG_2PI};
use crate::optim::{Optimizer, OptimizerState};
use crate::scratch;

/// Hyper-parameters of diagonal VI.
#[derive(Debug, Clone)]
pub struct DiagViConfig {
    /// Minimises the NELBO over `(m, log s)`.
    pub optimizer: Optimizer,
    /// T: weight of the entropy term.
    pub temperature: Schedule,
    /// S: Monte Carlo samples per step.
    pub n_samples: usize,
    /// Detach `m` and `s` inside `log q`.
    pub stick_the_landing: bool,
    /// Initial `log s` of every coordinate.
    pub init_log_sd: f64,
}

impl Default for DiagViConfig {
    fn default() -> Self {
        Self {
            optimizer: Optimizer::adam(1e-2),
            temperature: 1.0.into(),
            n_samples: 1,
            stick_the_landing: true,
            init_log_sd: 0.0,
        }
    }
}

impl DiagViConfig {
    pub fn validate(&self) -> Result<()> {
        self.optimizer.validate()?;
        self.temperature.validate_non_negative("temperature")?;
        if self.n_samples == 0 {
            return Err(Error::config("n_samples", "must be at least 1"));
        }
        if !self.init_log_sd.is_finite() {
            return Err(Error::config("init_log_sd", "must be finite"));
        }
        Ok(())
    }
}

/// State of diagonal VI: mean (as `params`), `log s`, optimiser buffers over
/// `[m; log s]`, the last NELBO estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagViState {
    pub params: Params,
    pub log_sd: Vec<f64>,
    pub opt: OptimizerState,
    #[serde(deserialize_with = "langevin_core::serde_nan::f64_or_nan")]
    pub nelbo: f64,
    /// Mean of ℓ(θₛ) at the last update.
    #[serde(deserialize_with = "langevin_core::serde_nan::f64_or_nan")]
    pub log_posterior: f64,
    pub step: u64,
}

langevin_core::impl_transform_state!(DiagViState {
    params: params,
    step: step,
    log_density: log_posterior,
});

impl DiagViState {
    /// Standard deviations `s = exp(log s)`.
    pub fn sd(&self) -> Vec<f64> {
        let mut sd = self.log_sd.clone();
        langevin_core::vecmath::exp_in_place(&mut sd);
        sd
    }

    /// `n` independent draws from q.
    pub fn sample<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Vec<Params> {
        let sd = self.sd();
        let mut xi = vec![0.0; sd.len()];
        (0..n)
            .map(|_| {
                fill_standard_normal(rng, &mut xi);
                let mut p = self.params.clone();
                for ((t, s), z) in p.values_mut().iter_mut().zip(&sd).zip(&xi) {
                    *t += s * z;
                }
                p
            })
            .collect()
    }
}

/// Diagonal-Gaussian VI over a log density `D`.
pub struct DiagVi<D> {
    config: DiagViConfig,
    density: D,
}

/// Buffers of one estimate: standard deviations, normals, the density's
/// gradient and the sampled parameters.
struct Temporaries {
    sd: Vec<f64>,
    xi: Vec<f64>,
    g: Vec<f64>,
    theta: Params,
}

struct Estimate<A> {
    nelbo: f64,
    mean_lp: f64,
    grad: Vec<f64>,
    aux: A,
}

impl<D: LogDensity> DiagVi<D> {
    pub fn new(density: D, config: DiagViConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, density })
    }

    pub fn config(&self) -> &DiagViConfig {
        &self.config
    }

    pub fn density(&self) -> &D {
        &self.density
    }

    /// A state with given mean and `log s` (e.g. a previous posterior).
    pub fn init_with(&self, params: Params, log_sd: Vec<f64>) -> Result<DiagViState> {
        if log_sd.len() != params.len() {
            return Err(Error::DimensionMismatch {
                what: "log_sd",
                expected: params.len(),
                got: log_sd.len(),
            });
        }
        if log_sd.iter().chain(params.values()).any(|x| !x.is_finite()) {
            return Err(Error::config("init", "mean and log_sd must be finite"));
        }
        let opt = self.config.optimizer.init_state(2 * params.len());
        Ok(DiagViState {
            params,
            log_sd,
            opt,
            nelbo: f64::NAN,
            log_posterior: f64::NAN,
            step: 0,
        })
    }

    /// A Monte Carlo NELBO estimate at `state` with `n_samples` draws and
    /// temperature `temperature` (the state is not changed).
    pub fn nelbo<R: Rng + ?Sized>(
        &self,
        state: &DiagViState,
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

    fn estimate<R: Rng + ?Sized>(
        &self,
        state: &DiagViState,
        batch: &D::Batch,
        n_samples: usize,
        temp: f64,
        rng: &mut R,
    ) -> Result<Estimate<D::Aux>> {
        let d = state.params.len();
        // Per-step temporaries from the per-thread pool (no page faults).
        let mut sd = scratch::take(d);
        sd.copy_from_slice(&state.log_sd);
        langevin_core::vecmath::exp_in_place(&mut sd);
        let mut tmp = Temporaries {
            sd,
            xi: scratch::take(d),
            g: scratch::take(d),
            theta: Params::new(state.params.layout().clone(), scratch::take(d))?,
        };
        let result = self.estimate_into(state, batch, n_samples, temp, rng, &mut tmp);
        scratch::give(tmp.sd);
        scratch::give(tmp.xi);
        scratch::give(tmp.g);
        scratch::give(tmp.theta.into_values());
        result
    }

    fn estimate_into<R: Rng + ?Sized>(
        &self,
        state: &DiagViState,
        batch: &D::Batch,
        n_samples: usize,
        temp: f64,
        rng: &mut R,
        tmp: &mut Temporaries,
    ) -> Result<Estimate<D::Aux>> {
        let d = state.params.len();
        let stl = self.config.stick_the_landing;
        let Temporaries { sd, xi, g, theta } = tmp;
        let mut grad = scratch::take(2 * d);
        let (mut sum_obj, mut sum_lp) = (0.0, 0.0);
        let mut first_aux = None;
        for _ in 0..n_samples {
            fill_standard_normal(rng, xi);
            for (((t, m), s), z) in theta
                .values_mut()
                .iter_mut()
                .zip(state.params.values())
                .zip(sd.iter())
                .zip(xi.iter())
            {
                *t = m + s * z;
            }
            let (lp, aux) = self.density.value_and_grad(theta, batch, g)?;
            check_finite(lp, g, state.step)?;
            let log_q: f64 = xi
                .iter()
                .zip(&state.log_sd)
                .map(|(z, r)| -0.5 * z * z - r - HALF_LOG_2PI)
                .sum();
            sum_obj += lp - temp * log_q;
            sum_lp += lp;
            let (gm, gr) = grad.split_at_mut(d);
            for j in 0..d {
                let (gj, z, s) = (g[j], xi[j], sd[j]);
                if stl {
                    gm[j] -= gj + temp * z / s;
                    gr[j] -= gj * s * z + temp * z * z;
                } else {
                    gm[j] -= gj;
                    gr[j] -= gj * s * z + temp;
                }
            }
            if first_aux.is_none() {
                first_aux = Some(aux);
            }
        }
        let inv = 1.0 / n_samples as f64;
        grad.iter_mut().for_each(|x| *x *= inv);
        let nelbo = -sum_obj * inv;
        if !nelbo.is_finite() {
            return Err(Error::NonFiniteLogDensity {
                step: state.step,
                value: nelbo,
                bad_grad: 0,
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

impl<D: LogDensity> Transform for DiagVi<D> {
    type State = DiagViState;
    type Info = ViInfo<D::Aux>;
    type Batch = D::Batch;

    fn init<R: Rng + ?Sized>(&self, params: Params, _rng: &mut R) -> Result<DiagViState> {
        let log_sd = vec![self.config.init_log_sd; params.len()];
        self.init_with(params, log_sd)
    }

    fn step<R: Rng + ?Sized>(
        &self,
        state: &mut DiagViState,
        batch: &D::Batch,
        rng: &mut R,
    ) -> Result<Self::Info> {
        let temp = self
            .config
            .temperature
            .at_checked("temperature", state.step, false)?;
        let est = self.estimate(state, batch, self.config.n_samples, temp, rng)?;
        // The optimiser sees (mean, log sd) as one vector; it validates
        // before mutating, so an error leaves the state intact.
        self.config.optimizer.apply_parts(
            &mut state.opt,
            &mut [state.params.values_mut(), &mut state.log_sd],
            &est.grad,
        )?;
        scratch::give(est.grad);
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
    use langevin_core::{chain_rng, FnDensity};

    fn gaussian_target(
        mu: Vec<f64>,
        sd: Vec<f64>,
    ) -> impl LogDensity<Batch = (), Aux = ()> + Clone {
        let f = move |x: &[f64], _: &(), g: &mut [f64]| {
            let mut lp = 0.0;
            for j in 0..x.len() {
                let z = (x[j] - mu[j]) / sd[j];
                g[j] = -z / sd[j];
                lp += -0.5 * z * z - sd[j].ln() - HALF_LOG_2PI;
            }
            lp
        };
        std::sync::Arc::new(FnDensity::new(f))
    }

    #[test]
    fn nelbo_is_zero_when_q_is_the_target() {
        let mu = vec![1.0, -2.0, 0.5];
        let sd = vec![0.5, 2.0, 1.3];
        let vi = DiagVi::new(
            gaussian_target(mu.clone(), sd.clone()),
            DiagViConfig::default(),
        )
        .unwrap();
        let state = vi
            .init_with(Params::from_vec(mu), sd.iter().map(|s| s.ln()).collect())
            .unwrap();
        for seed in 0..5 {
            let mut rng = chain_rng(seed, 0);
            let nelbo = vi.nelbo(&state, &(), 7, 1.0, &mut rng).unwrap();
            assert!(nelbo.abs() < 1e-6, "seed {seed}: {nelbo}");
        }
    }

    #[test]
    fn fits_a_gaussian_target_with_and_without_stl() {
        let mu = vec![1.0, -2.0, 0.5];
        let sd = vec![0.5, 2.0, 1.3];
        for stl in [true, false] {
            for seed in 0..3 {
                let cfg = DiagViConfig {
                    optimizer: Optimizer::adam(1e-2),
                    n_samples: 2,
                    stick_the_landing: stl,
                    ..DiagViConfig::default()
                };
                let vi = DiagVi::new(gaussian_target(mu.clone(), sd.clone()), cfg).unwrap();
                let mut rng = chain_rng(seed, 0);
                let mut s = vi.init(Params::from_vec(vec![0.0; 3]), &mut rng).unwrap();
                let first = vi.nelbo(&s, &(), 200, 1.0, &mut rng).unwrap();
                for _ in 0..1000 {
                    vi.step(&mut s, &(), &mut rng).unwrap();
                }
                let last = vi.nelbo(&s, &(), 200, 1.0, &mut rng).unwrap();
                for j in 0..3 {
                    assert!(
                        (s.params.values()[j] - mu[j]).abs() < 0.5,
                        "stl {stl} seed {seed}: mean {:?}",
                        s.params
                    );
                    assert!(
                        (s.sd()[j] - sd[j]).abs() < 0.5,
                        "stl {stl} seed {seed}: sd {:?}",
                        s.sd()
                    );
                }
                assert!(last < first && last < 0.1, "{first} -> {last}");
            }
        }
    }

    #[test]
    fn samples_match_the_state_moments() {
        let vi = DiagVi::new(
            gaussian_target(vec![0.0], vec![1.0]),
            DiagViConfig::default(),
        )
        .unwrap();
        let state = vi
            .init_with(
                Params::from_vec(vec![1.5, -3.0]),
                vec![0.3f64.ln(), 2.0f64.ln()],
            )
            .unwrap();
        for seed in 0..3 {
            let draws = state.sample(10_000, &mut chain_rng(seed, 1));
            for (j, (m, s)) in [(1.5, 0.3), (-3.0, 2.0)].into_iter().enumerate() {
                let xs: Vec<f64> = draws.iter().map(|p| p.values()[j]).collect();
                let mean = xs.iter().sum::<f64>() / xs.len() as f64;
                let var =
                    xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
                // 5 Monte Carlo standard errors, all below 0.1.
                assert!((mean - m).abs() < 5.0 * s / 100.0 && (mean - m).abs() < 0.1);
                assert!((var.sqrt() - s).abs() < 5.0 * s / (2.0f64 * 10_000.0).sqrt() + 1e-3);
            }
        }
    }

    #[test]
    fn errors_leave_the_state_untouched() {
        let d = FnDensity::new(|x: &[f64], _: &(), g: &mut [f64]| {
            g[0] = 1.0;
            if x[0] > 10.0 {
                f64::NAN
            } else {
                0.0
            }
        });
        let vi = DiagVi::new(d, DiagViConfig::default()).unwrap();
        let mut rng = chain_rng(0, 0);
        let mut s = vi
            .init_with(Params::from_vec(vec![11.0]), vec![-10.0])
            .unwrap();
        let before = s.clone();
        assert!(vi.step(&mut s, &(), &mut rng).is_err());
        assert_eq!(
            (&s.params, &s.log_sd, &s.opt, s.step),
            (&before.params, &before.log_sd, &before.opt, 0)
        );
        assert!(DiagVi::new(
            gaussian_target(vec![0.0], vec![1.0]),
            DiagViConfig {
                n_samples: 0,
                ..DiagViConfig::default()
            }
        )
        .is_err());
    }
}
