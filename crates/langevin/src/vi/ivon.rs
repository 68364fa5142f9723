//! IVON: improved variational online Newton (Shen et al. 2024), a
//! diagonal-Gaussian variational method whose step costs what an Adam step
//! costs (one gradient per sample, a few passes over the parameters).
//!
//! The posterior `q = N(m, diag(σ²))` with `σ² = 1 / (λ (h + δ))` is held
//! as a mean `m`, a Hessian estimate `h` and a gradient momentum `g`. With
//! the loss `ℓ̄ = −ℓ` (ℓ the batch-averaged log posterior), step t draws
//! `θₛ = m + σ ⊙ ξₛ`, `ξₛ ~ N(0, I)`, `s = 1..S`, and (Algorithm 1 of the
//! paper)
//!
//! ```text
//! ĝ = (1/S) Σₛ ∇ℓ̄(θₛ)
//! ĥ = (1/S) Σₛ ∇ℓ̄(θₛ) ⊙ (θₛ − m) ⊙ λ (h + δ)       (reparameterised Hessian estimate)
//! g ← β₁ g + (1 − β₁) ĝ
//! h ← β₂ h + (1 − β₂) ĥ + ½ (1 − β₂)² (h − ĥ)² / (h + δ)
//! ḡ = g / (1 − β₁ᵗ)
//! m ← m − α clip((ḡ + δ m) / (h + δ), ±r)
//! ```
//!
//! The third term of the `h` update keeps `h + δ > 0` whatever `ĥ` is (it
//! is the Riemannian-gradient correction of the paper: `h + δ` is
//! multiplied by `1 + x + x²/2 > 0`, `x = (1 − β₂)(ĥ − h)/(h + δ)`).
//!
//! **Target.** IVON minimises `E_q[λ ℓ̄(θ)] + (λδ/2) E_q‖θ‖² − H(q)`: its
//! fixed point is the Gaussian variational posterior of
//! `exp(λ ℓ(θ) − (λδ/2) ‖θ‖²)`. The effective sample size λ is the inverse
//! of the library's temperature: with the batch-averaged log posterior of N
//! examples (whose prior is already in ℓ), `λ = N` and `δ = 0` target the
//! posterior. `δ > 0` adds a Gaussian prior `N(0, 1/(λδ))` on top (IVON's
//! "weight decay"). For a Gaussian target `ℓ(θ) = −½ Σⱼ pⱼ (θⱼ − μⱼ)²`
//! the fixed point is exact: `h = p`, `m = pμ / (p + δ)`,
//! `σ² = 1/(λ (p + δ))`.
//!
//! Defaults (IVON's reference implementation, `ivon-opt`): β₁ = 0.9,
//! β₂ = 0.99999, `h₀ = 1`, S = 1, no clipping; α = 0.1; λ = 1 (fit
//! `exp(log_posterior)` itself, like [`DiagViConfig`](super::DiagViConfig)'s
//! T = 1: set it to N); δ = 0 (the prior belongs to the log posterior here;
//! `ivon-opt` defaults to 1e-4). `ivon-opt`'s `rescale_lr` (α multiplied by
//! `h₀ + δ`) is not applied: scale α yourself.
//!
//! A non-finite log posterior or gradient at any sample is
//! [`Error::NonFiniteLogDensity`] and leaves the state as it was.
//!
//! Reference: Shen, Daheim, Cong, Nickl, Marconi, Bazan, Yokota, Gurevych,
//! Cremers, Khan and Möllenhoff (2024), *Variational learning is effective
//! for large deep networks*, ICML, Algorithm 1.

use langevin_core::rng::fill_standard_normal;
use langevin_core::{check_finite, Error, LogDensity, Params, Result, Schedule, Transform};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::scratch;

/// Hyper-parameters of [`Ivon`] (checked by [`Ivon::new`]).
#[derive(Debug, Clone)]
pub struct IvonConfig {
    /// α: learning rate of the mean.
    pub step_size: Schedule,
    /// λ: effective sample size (the inverse temperature; N targets the
    /// posterior of N examples), > 0.
    pub ess: f64,
    /// β₁: decay of the gradient momentum, in [0, 1).
    pub beta1: f64,
    /// β₂: decay of the Hessian estimate, in [0, 1).
    pub beta2: f64,
    /// δ: weight decay, a prior `N(0, 1/(λδ))` added to the log posterior (≥ 0).
    pub weight_decay: f64,
    /// h₀: initial Hessian estimate of every coordinate (`h₀ + δ > 0`).
    pub hess_init: f64,
    /// S: Monte Carlo samples per step (≥ 1).
    pub n_samples: usize,
    /// r: each coordinate of the mean's step is clipped to `[−r, r]`
    /// before α multiplies it (> 0; infinity = no clipping).
    pub clip_radius: f64,
}

impl Default for IvonConfig {
    fn default() -> Self {
        Self {
            step_size: 0.1.into(),
            ess: 1.0,
            beta1: 0.9,
            beta2: 0.99999,
            weight_decay: 0.0,
            hess_init: 1.0,
            n_samples: 1,
            clip_radius: f64::INFINITY,
        }
    }
}

impl IvonConfig {
    /// Check every hyper-parameter.
    pub fn validate(&self) -> Result<()> {
        self.step_size.validate_positive("step_size")?;
        if !(self.ess.is_finite() && self.ess > 0.0) {
            return Err(Error::config(
                "ess",
                format!("must be finite and > 0, got {}", self.ess),
            ));
        }
        for (field, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(b.is_finite() && (0.0..1.0).contains(&b)) {
                return Err(Error::config(field, format!("must lie in [0, 1), got {b}")));
            }
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::config(
                "weight_decay",
                format!("must be finite and >= 0, got {}", self.weight_decay),
            ));
        }
        if !(self.hess_init.is_finite() && self.hess_init + self.weight_decay > 0.0) {
            return Err(Error::config(
                "hess_init",
                format!(
                    "must be finite with hess_init + weight_decay > 0, got {} (weight_decay {})",
                    self.hess_init, self.weight_decay
                ),
            ));
        }
        if self.n_samples == 0 {
            return Err(Error::config("n_samples", "must be at least 1"));
        }
        if self.clip_radius.is_nan() || self.clip_radius <= 0.0 {
            return Err(Error::config(
                "clip_radius",
                format!(
                    "must be > 0 (infinity: no clipping), got {}",
                    self.clip_radius
                ),
            ));
        }
        Ok(())
    }
}

/// State of [`Ivon`]: the mean (as `params`), the Hessian estimate `h`, the
/// gradient momentum `g`, the step count and the last mean log posterior.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IvonState {
    /// m: the variational mean.
    pub params: Params,
    /// h: the Hessian estimate (`h + δ > 0`).
    pub hess: Vec<f64>,
    /// g: the momentum of the loss gradient (not bias-corrected).
    pub momentum: Vec<f64>,
    /// Steps taken.
    pub step: u64,
    /// Mean of ℓ(θₛ) over the samples of the last update (NaN before the
    /// first: written as JSON `null`).
    #[serde(deserialize_with = "langevin_core::serde_nan::f64_or_nan")]
    pub log_posterior: f64,
}

langevin_core::impl_transform_state!(IvonState {
    params: params,
    step: step,
    log_density: log_posterior,
    same_len: [hess, momentum],
});

/// Per-step information of [`Ivon`].
#[derive(Debug, Clone)]
pub struct IvonInfo<A> {
    /// Mean of ℓ(θₛ) over the S samples, before the update.
    pub log_posterior: f64,
    /// The user's aux output of the first sample.
    pub aux: A,
}

/// IVON over a log density `D`; the update is in the [module docs](self).
///
/// ```
/// use langevin::vi::{Ivon, IvonConfig};
/// use langevin::{chain_rng, FnDensity, Params, Transform};
///
/// // ℓ(θ) = −(θ − 2)²/2 with λ = 100: the posterior is N(2, 0.01).
/// let density = FnDensity::new(|x: &[f64], _: &(), g: &mut [f64]| {
///     g[0] = 2.0 - x[0];
///     -0.5 * g[0] * g[0]
/// });
/// let ivon = Ivon::new(density, IvonConfig { ess: 100.0, beta2: 0.999, ..IvonConfig::default() })
///     .unwrap();
/// let mut rng = chain_rng(0, 0);
/// let mut state = ivon.init(Params::from_vec(vec![0.0]), &mut rng).unwrap();
/// for _ in 0..5000 {
///     ivon.step(&mut state, &(), &mut rng).unwrap();
/// }
/// assert!((state.params.values()[0] - 2.0).abs() < 0.1);
/// assert!((ivon.sd(&state)[0] - 0.1).abs() < 0.02);
/// ```
pub struct Ivon<D> {
    config: IvonConfig,
    density: D,
}

impl<D: LogDensity> Ivon<D> {
    /// Build with validated hyper-parameters.
    pub fn new(density: D, config: IvonConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, density })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &IvonConfig {
        &self.config
    }

    /// The log density.
    pub fn density(&self) -> &D {
        &self.density
    }

    /// A state with a given mean and Hessian estimate (e.g. a previous
    /// posterior); the momentum starts at 0.
    pub fn init_with(&self, params: Params, hess: Vec<f64>) -> Result<IvonState> {
        if hess.len() != params.len() {
            return Err(Error::DimensionMismatch {
                what: "IVON Hessian estimate",
                expected: params.len(),
                got: hess.len(),
            });
        }
        let delta = self.config.weight_decay;
        if params.values().iter().any(|x| !x.is_finite())
            || hess.iter().any(|h| !(h.is_finite() && h + delta > 0.0))
        {
            return Err(Error::config(
                "init",
                "the mean must be finite and the Hessian estimate finite with h + weight_decay > 0",
            ));
        }
        let momentum = vec![0.0; params.len()];
        Ok(IvonState {
            params,
            hess,
            momentum,
            step: 0,
            log_posterior: f64::NAN,
        })
    }

    /// Standard deviations of q: `σ = 1 / sqrt(λ (h + δ))`.
    pub fn sd(&self, state: &IvonState) -> Vec<f64> {
        let (lambda, delta) = (self.config.ess, self.config.weight_decay);
        state
            .hess
            .iter()
            .map(|h| 1.0 / (lambda * (h + delta)).sqrt())
            .collect()
    }

    /// `n` independent draws from q.
    pub fn sample<R: Rng + ?Sized>(&self, state: &IvonState, n: usize, rng: &mut R) -> Vec<Params> {
        let sd = self.sd(state);
        let mut xi = vec![0.0; sd.len()];
        (0..n)
            .map(|_| {
                fill_standard_normal(rng, &mut xi);
                let mut p = state.params.clone();
                for ((t, s), z) in p.values_mut().iter_mut().zip(&sd).zip(&xi) {
                    *t += s * z;
                }
                p
            })
            .collect()
    }

    /// The averaged loss gradient ĝ and Hessian estimate ĥ over S samples,
    /// written into `g_hat` and `h_hat`; returns the mean log posterior and
    /// the first sample's aux. Reads the state only.
    #[allow(clippy::too_many_arguments)]
    fn estimate<R: Rng + ?Sized>(
        &self,
        state: &IvonState,
        batch: &D::Batch,
        rng: &mut R,
        prec_sqrt: &mut [f64],
        xi: &mut [f64],
        grad: &mut [f64],
        theta: &mut Params,
        g_hat: &mut [f64],
        h_hat: &mut [f64],
    ) -> Result<(f64, D::Aux)> {
        let (lambda, delta) = (self.config.ess, self.config.weight_decay);
        let n_samples = self.config.n_samples;
        // sqrt(λ (h + δ)) = 1/σ.
        for (p, h) in prec_sqrt.iter_mut().zip(&state.hess) {
            *p = (lambda * (h + delta)).sqrt();
        }
        let inv_s = 1.0 / n_samples as f64;
        let mut sum_lp = 0.0;
        let mut first_aux = None;
        for _ in 0..n_samples {
            fill_standard_normal(rng, xi);
            for (((t, m), p), z) in theta
                .values_mut()
                .iter_mut()
                .zip(state.params.values())
                .zip(prec_sqrt.iter())
                .zip(xi.iter())
            {
                *t = m + z / p;
            }
            let (lp, aux) = self.density.value_and_grad(theta, batch, grad)?;
            check_finite(lp, grad, state.step)?;
            sum_lp += lp;
            // ∇ℓ̄ = −∇ℓ; (θ − m) λ (h + δ) = ξ sqrt(λ (h + δ)).
            for ((((gh, hh), g), z), p) in g_hat
                .iter_mut()
                .zip(h_hat.iter_mut())
                .zip(grad.iter())
                .zip(xi.iter())
                .zip(prec_sqrt.iter())
            {
                let gl = -g * inv_s;
                *gh += gl;
                *hh += gl * z * p;
            }
            if first_aux.is_none() {
                first_aux = Some(aux);
            }
        }
        Ok((sum_lp * inv_s, first_aux.expect("n_samples >= 1")))
    }
}

impl<D: LogDensity> Transform for Ivon<D> {
    type State = IvonState;
    type Info = IvonInfo<D::Aux>;
    type Batch = D::Batch;

    fn init<R: Rng + ?Sized>(&self, params: Params, _rng: &mut R) -> Result<IvonState> {
        let hess = vec![self.config.hess_init; params.len()];
        self.init_with(params, hess)
    }

    fn step<R: Rng + ?Sized>(
        &self,
        state: &mut IvonState,
        batch: &D::Batch,
        rng: &mut R,
    ) -> Result<Self::Info> {
        let d = state.params.len();
        if state.hess.len() != d || state.momentum.len() != d {
            return Err(Error::DimensionMismatch {
                what: "IVON state",
                expected: d,
                got: state.hess.len().min(state.momentum.len()),
            });
        }
        let c = &self.config;
        let alpha = c.step_size.at_checked("step_size", state.step, true)?;
        let mut prec_sqrt = scratch::take(d);
        let mut xi = scratch::take(d);
        let mut grad = scratch::take(d);
        let mut g_hat = scratch::take(d);
        let mut h_hat = scratch::take(d);
        let mut theta = Params::new(state.params.layout().clone(), scratch::take(d))?;
        let est = self.estimate(
            state,
            batch,
            rng,
            &mut prec_sqrt,
            &mut xi,
            &mut grad,
            &mut theta,
            &mut g_hat,
            &mut h_hat,
        );
        for v in [prec_sqrt, xi, grad, theta.into_values()] {
            scratch::give(v);
        }
        let (log_posterior, aux) = match est {
            Ok(e) => e,
            Err(e) => {
                scratch::give(g_hat);
                scratch::give(h_hat);
                return Err(e);
            }
        };
        // Nothing fails from here: the state is updated in one pass.
        let (b1, b2, delta, clip) = (c.beta1, c.beta2, c.weight_decay, c.clip_radius);
        let debias = 1.0 / (1.0 - b1.powi((state.step + 1).min(i32::MAX as u64) as i32));
        for ((((m, h), g), &gh), &hh) in state
            .params
            .values_mut()
            .iter_mut()
            .zip(state.hess.iter_mut())
            .zip(state.momentum.iter_mut())
            .zip(&g_hat)
            .zip(&h_hat)
        {
            *g = b1 * *g + (1.0 - b1) * gh;
            let diff = *h - hh;
            *h = b2 * *h
                + (1.0 - b2) * hh
                + 0.5 * (1.0 - b2) * (1.0 - b2) * diff * diff / (*h + delta);
            let dir = ((*g * debias + delta * *m) / (*h + delta)).clamp(-clip, clip);
            *m -= alpha * dir;
        }
        scratch::give(g_hat);
        scratch::give(h_hat);
        state.step += 1;
        state.log_posterior = log_posterior;
        Ok(IvonInfo { log_posterior, aux })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use langevin_core::FnDensity;

    #[test]
    fn bad_configs_are_rejected() {
        let d = || {
            FnDensity::new(|x: &[f64], _: &(), g: &mut [f64]| {
                g[0] = -x[0];
                -0.5 * x[0] * x[0]
            })
        };
        let ok = IvonConfig::default();
        assert!(Ivon::new(d(), ok.clone()).is_ok());
        let bad = [
            (
                "step_size",
                IvonConfig {
                    step_size: 0.0.into(),
                    ..ok.clone()
                },
            ),
            (
                "ess",
                IvonConfig {
                    ess: 0.0,
                    ..ok.clone()
                },
            ),
            (
                "ess",
                IvonConfig {
                    ess: f64::INFINITY,
                    ..ok.clone()
                },
            ),
            (
                "beta1",
                IvonConfig {
                    beta1: 1.0,
                    ..ok.clone()
                },
            ),
            (
                "beta2",
                IvonConfig {
                    beta2: -0.1,
                    ..ok.clone()
                },
            ),
            (
                "beta2",
                IvonConfig {
                    beta2: f64::NAN,
                    ..ok.clone()
                },
            ),
            (
                "weight_decay",
                IvonConfig {
                    weight_decay: -1e-4,
                    ..ok.clone()
                },
            ),
            (
                "hess_init",
                IvonConfig {
                    hess_init: 0.0,
                    ..ok.clone()
                },
            ),
            (
                "hess_init",
                IvonConfig {
                    hess_init: f64::NAN,
                    ..ok.clone()
                },
            ),
            (
                "n_samples",
                IvonConfig {
                    n_samples: 0,
                    ..ok.clone()
                },
            ),
            (
                "clip_radius",
                IvonConfig {
                    clip_radius: 0.0,
                    ..ok.clone()
                },
            ),
            (
                "clip_radius",
                IvonConfig {
                    clip_radius: f64::NAN,
                    ..ok.clone()
                },
            ),
        ];
        for (field, cfg) in bad {
            match Ivon::new(d(), cfg.clone()) {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field, "{cfg:?}"),
                Err(e) => panic!("{cfg:?}: {e}"),
                Ok(_) => panic!("{cfg:?} accepted"),
            }
        }
        // h₀ = 0 is fine with δ > 0.
        assert!(Ivon::new(
            d(),
            IvonConfig {
                hess_init: 0.0,
                weight_decay: 1e-4,
                ..ok.clone()
            }
        )
        .is_ok());
        let ivon = Ivon::new(d(), ok).unwrap();
        assert!(ivon.init_with(Params::from_vec(vec![0.0]), vec![]).is_err());
        assert!(ivon
            .init_with(Params::from_vec(vec![0.0]), vec![-1.0])
            .is_err());
    }
}
