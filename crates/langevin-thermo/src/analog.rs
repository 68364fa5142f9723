//! Analog posterior samplers ("thermodynamic Bayesian inference").
//!
//! Circuits that realise overdamped Langevin dynamics
//!
//! ```text
//!     dθ = ∇ log p(θ | data) dt + sqrt(2) dW          (t in units of τ = R_u C_int)
//! ```
//!
//! with one RC integrator per parameter (θ_i = v_i / v_scale is the voltage on
//! its integrating capacitor) and resistor crossbars (a conductance
//! `|w| / R_u` realises a weight `w`; signs via inverted copies of the inputs).
//!
//! **(a) Gaussian-Gaussian** ([`GaussianProblem`]). Prior `N(μ₀, Σ₀)`,
//! likelihood `y ~ N(Hθ, Σ_ℓ)`; the drift is `-(Pθ - b)` with the posterior
//! precision `P = Σ₀⁻¹ + HᵀΣ_ℓ⁻¹H` in one crossbar and `b = Σ₀⁻¹μ₀ + HᵀΣ_ℓ⁻¹y`
//! as bias currents. Mismatch makes the realised drift `A = D_c⁻¹ (P ∘ (1+Δ))`
//! (non-symmetric), `b' = D_c⁻¹ (b ∘ (1+δ))`, diffusion
//! `diag(2 (1+δ_n) / (1+δ_c)²)`. The circuit is linear, so it is simulated
//! exactly: moments by exact one-step propagation
//! (`m ← Φ m + (I-Φ) A⁻¹b'`, `Σ ← Φ Σ Φᵀ + Q_h` with `Φ = e^{-Ah}` and `Q_h` from
//! Van Loan's exponential), sample paths by the same transition with
//! Gaussian noise. For the ideal circuit the KL to the posterior is also
//! available in closed form in the eigenbasis of `P`
//! ([`ideal_kl_at`]), which gives the time-to-threshold table up to d = 1024.
//!
//! **(b) Bayesian logistic regression** ([`LogisticProblem`]): crossbars
//! compute `a = Xθ` and `Xᵀ(y - s)`, one nonlinear element per data point
//! computes `s = σ̃(a)` ([`Nonlinearity`]): the ideal sigmoid, a bipolar
//! differential pair (whose collector-current split is exactly
//! `1/(1+e^{-ΔV/V_T})`, here with a random input offset from mismatch) or a
//! MOS square-law pair (`½(1 + u sqrt(2 - u²))`, `u = a / (2√2)` clipped to
//! ±1, slope matched to the sigmoid at 0, saturating at |a| = 2.83; max
//! deviation from the sigmoid 0.064). Simulated with Euler-Maruyama with step
//! `h` (default 0.01 τ, stated in every result), many parallel chains, and
//! compared against a long MALA run on the exact posterior ([`mala`]).
//!
//! **Energy and time model** (constants in [`CircuitConfig`]; representative
//! orders of magnitude, not measurements):
//! * `R_u = 100 kΩ`, `C_int = 10 pF`: `τ = 1 µs` (on-chip integrator);
//! * `v_scale = 0.1 V` per unit of θ;
//! * static power per integrator cell 10 µW (a low-power op-amp integrator
//!   plus its noise source), per nonlinear element `I_tail V_dd = 10 µA ×
//!   1 V = 10 µW`;
//! * crossbar dissipation `Σ_ij |w_ij| / R_u · v_scale² E[θ_j²]` (and likewise
//!   for bias currents), evaluated at the posterior moments;
//! * energy = total power × analog time `t τ`. The "cells" count of the issue
//!   is the number of integrators `d`.

#![allow(clippy::needless_range_loop)] // dense numerical kernels index several arrays at once

use faer::prelude::*;
use faer::{Mat, Side};
use langevin_core::rng::{chain_rng, fill_standard_normal, ChainRng};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, ThermoError as Error};
use crate::ou::{self, mul, spd_inverse};

/// Physical constants of the analog sampler (see module docs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CircuitConfig {
    /// Unit crossbar resistance R_u (Ω): weight 1 ↔ conductance 1/R_u.
    pub r_unit: f64,
    /// Integrating capacitance (F).
    pub c_int: f64,
    /// Volts per unit of θ.
    pub v_scale: f64,
    /// Static power per integrator cell (W).
    pub cell_power: f64,
    /// Power per nonlinear element (W).
    pub nonlinear_power: f64,
    /// Mismatch of every resistor, capacitor, noise source: uniform ±tolerance (%).
    pub tolerance_pct: f64,
    /// Seed of the mismatch draw.
    pub mismatch_seed: u64,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        Self {
            r_unit: 1e5,
            c_int: 10e-12,
            v_scale: 0.1,
            cell_power: 10e-6,
            nonlinear_power: 10e-6,
            tolerance_pct: 0.0,
            mismatch_seed: 0,
        }
    }
}

impl CircuitConfig {
    /// τ = R_u C_int (s).
    pub fn tau(&self) -> f64 {
        self.r_unit * self.c_int
    }
    /// Validate.
    pub fn validate(&self) -> Result<()> {
        for (v, f) in [
            (self.r_unit, "r_unit"),
            (self.c_int, "c_int"),
            (self.v_scale, "v_scale"),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::InvalidConfig {
                    field: f,
                    reason: format!("must be finite and > 0, got {v}"),
                });
            }
        }
        for (v, f) in [
            (self.cell_power, "cell_power"),
            (self.nonlinear_power, "nonlinear_power"),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::InvalidConfig {
                    field: f,
                    reason: format!("must be >= 0, got {v}"),
                });
            }
        }
        if !(self.tolerance_pct.is_finite() && (0.0..50.0).contains(&self.tolerance_pct)) {
            return Err(Error::InvalidConfig {
                field: "tolerance_pct",
                reason: format!("must be in [0, 50), got {}", self.tolerance_pct),
            });
        }
        Ok(())
    }
    fn jitter(&self, rng: &mut ChainRng) -> f64 {
        let t = self.tolerance_pct / 100.0;
        if t > 0.0 {
            1.0 + t * (2.0 * rng.random::<f64>() - 1.0)
        } else {
            1.0
        }
    }
}

// ---------------------------------------------------------------------------
// (a) Gaussian-Gaussian
// ---------------------------------------------------------------------------

/// A Gaussian posterior `N(μ, P⁻¹)` written as the drift `-(Pθ - b)`.
#[derive(Clone, Debug)]
pub struct GaussianProblem {
    pub precision: Mat<f64>,
    pub b: Vec<f64>,
    pub mean: Vec<f64>,
}

impl GaussianProblem {
    /// Posterior of prior `N(μ₀, Σ₀)` and likelihood `y ~ N(Hθ, Σ_ℓ)` (`H` is m × d).
    pub fn from_model(
        mu0: &[f64],
        sigma0: &Mat<f64>,
        h: &Mat<f64>,
        sigma_l: &Mat<f64>,
        y: &[f64],
    ) -> Result<Self> {
        let d = mu0.len();
        let m = y.len();
        if sigma0.nrows() != d || sigma0.ncols() != d {
            return Err(Error::DimensionMismatch {
                what: "prior covariance",
                expected: d,
                got: sigma0.nrows(),
            });
        }
        if h.nrows() != m || h.ncols() != d {
            return Err(Error::DimensionMismatch {
                what: "H (rows = len(y), cols = len(mu0))",
                expected: m * d,
                got: h.nrows() * h.ncols(),
            });
        }
        if sigma_l.nrows() != m || sigma_l.ncols() != m {
            return Err(Error::DimensionMismatch {
                what: "likelihood covariance",
                expected: m,
                got: sigma_l.nrows(),
            });
        }
        let p0 = spd_inverse("prior covariance", sigma0.as_ref())?;
        let pl = spd_inverse("likelihood covariance", sigma_l.as_ref())?;
        let ht_pl = mul(h.transpose(), pl.as_ref());
        let p = mul(ht_pl.as_ref(), h.as_ref());
        let precision = Mat::from_fn(d, d, |i, j| p0[(i, j)] + 0.5 * (p[(i, j)] + p[(j, i)]));
        let b: Vec<f64> = (0..d)
            .map(|i| {
                (0..d).map(|j| p0[(i, j)] * mu0[j]).sum::<f64>()
                    + (0..m).map(|k| ht_pl[(i, k)] * y[k]).sum::<f64>()
            })
            .collect();
        Self::from_precision(precision, b)
    }

    /// From the precision and `b` (mean `P⁻¹ b`).
    pub fn from_precision(precision: Mat<f64>, b: Vec<f64>) -> Result<Self> {
        let d = b.len();
        if precision.nrows() != d || precision.ncols() != d {
            return Err(Error::DimensionMismatch {
                what: "precision",
                expected: d,
                got: precision.nrows(),
            });
        }
        let llt = precision
            .llt(Side::Lower)
            .map_err(|_| Error::NotPositiveDefinite {
                what: "posterior precision",
                semi: false,
                detail: None,
            })?;
        let mean_m = llt.solve(Mat::from_fn(d, 1, |i, _| b[i]));
        let mean = (0..d).map(|i| mean_m[(i, 0)]).collect();
        Ok(Self { precision, b, mean })
    }

    /// The scaling family: prior `N(0, I)`, `y = Hθ* + 0.5 ε`, `H` tridiagonal
    /// blur (1 on the diagonal, 0.5 off it). Posterior spectrum in `[1, 17]`
    /// for every `d`, bounded row sums (crossbar power ∝ d).
    pub fn blur_family(d: usize, seed: u64) -> Result<Self> {
        if d == 0 {
            return Err(Error::InvalidConfig {
                field: "d",
                reason: "must be >= 1".into(),
            });
        }
        let mut rng = chain_rng(seed, 31);
        let mut th = vec![0.0; d];
        fill_standard_normal(&mut rng, &mut th);
        let h = Mat::from_fn(d, d, |i, j| {
            if i == j {
                1.0
            } else if i.abs_diff(j) == 1 {
                0.5
            } else {
                0.0
            }
        });
        let mut eps = vec![0.0; d];
        fill_standard_normal(&mut rng, &mut eps);
        let y: Vec<f64> = (0..d)
            .map(|i| (0..d).map(|j| h[(i, j)] * th[j]).sum::<f64>() + 0.5 * eps[i])
            .collect();
        let s_l = Mat::from_fn(d, d, |i, j| if i == j { 0.25 } else { 0.0 });
        let s0 = Mat::<f64>::identity(d, d);
        Self::from_model(&vec![0.0; d], &s0, &h, &s_l, &y)
    }

    /// Dimension.
    pub fn dim(&self) -> usize {
        self.b.len()
    }
}

/// KL(N(m, S) ‖ N(μ, P⁻¹)) for a general Gaussian (S positive definite).
pub fn kl_to_posterior(m: &[f64], s: &Mat<f64>, post: &GaussianProblem) -> Result<f64> {
    let d = post.dim();
    let ls = s.llt(Side::Lower).map_err(|_| Error::NotPositiveDefinite {
        what: "covariance S",
        semi: false,
        detail: None,
    })?;
    let logdet_s: f64 = (0..d).map(|i| 2.0 * ls.L()[(i, i)].ln()).sum();
    let lp = post
        .precision
        .llt(Side::Lower)
        .map_err(|_| Error::NotPositiveDefinite {
            what: "precision",
            semi: false,
            detail: None,
        })?;
    let lpl = lp.L();
    let logdet_p: f64 = (0..d).map(|i| 2.0 * lpl[(i, i)].ln()).sum();
    let tr: f64 = (0..d)
        .map(|i| {
            (0..d)
                .map(|j| post.precision[(i, j)] * s[(j, i)])
                .sum::<f64>()
        })
        .sum();
    let dm: Vec<f64> = m.iter().zip(&post.mean).map(|(a, b)| a - b).collect();
    let quad: f64 = (0..d)
        .map(|i| dm[i] * (0..d).map(|j| post.precision[(i, j)] * dm[j]).sum::<f64>())
        .sum();
    Ok(0.5 * (tr - d as f64 - logdet_s - logdet_p + quad))
}

/// The ideal circuit's KL at time `t`, started at `θ(0) = m0` (deterministic),
/// in closed form in the eigenbasis of `P`: per mode
/// `½[λ s - 1 - ln(λ s) + λ e^{-2λt} δ²]`, `s = (1 - e^{-2λt})/λ`.
pub struct IdealKl {
    lam: Vec<f64>,
    delta: Vec<f64>,
}

impl IdealKl {
    /// Precompute the eigendecomposition of `P` and the start offset in its basis.
    pub fn new(post: &GaussianProblem, m0: &[f64]) -> Result<Self> {
        let d = post.dim();
        if m0.len() != d {
            return Err(Error::DimensionMismatch {
                what: "start",
                expected: d,
                got: m0.len(),
            });
        }
        let e = post
            .precision
            .self_adjoint_eigen(Side::Lower)
            .map_err(|_| Error::NotPositiveDefinite {
                what: "precision eig",
                semi: false,
                detail: None,
            })?;
        let lam: Vec<f64> = (0..d).map(|i| e.S().column_vector()[i]).collect();
        let u = e.U();
        let delta = (0..d)
            .map(|k| (0..d).map(|i| u[(i, k)] * (m0[i] - post.mean[i])).sum())
            .collect();
        Ok(Self { lam, delta })
    }

    /// The eigenvalues of the posterior precision `P` (the ideal circuit's relaxation
    /// rates, per τ), ascending.
    pub fn eigenvalues(&self) -> &[f64] {
        &self.lam
    }

    /// KL at time `t > 0`.
    pub fn at(&self, t: f64) -> f64 {
        self.lam
            .iter()
            .zip(&self.delta)
            .map(|(&l, &dl)| {
                let e2 = (-2.0 * l * t).exp();
                let ls = 1.0 - e2;
                0.5 * (ls - 1.0 - ls.ln() + l * e2 * dl * dl)
            })
            .sum()
    }

    /// First time at which the KL falls to `threshold` (bisection; KL is decreasing in t).
    pub fn time_to(&self, threshold: f64) -> f64 {
        let (mut lo, mut hi) = (1e-9, 1.0);
        while self.at(hi) > threshold && hi < 1e9 {
            hi *= 2.0;
        }
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if self.at(mid) > threshold {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }
}

/// Convenience: closed-form KL of the ideal circuit at time `t`.
pub fn ideal_kl_at(post: &GaussianProblem, m0: &[f64], t: f64) -> Result<f64> {
    Ok(IdealKl::new(post, m0)?.at(t))
}

/// The realised (mismatched) linear circuit: `dθ = -(Aθ - b') dt + sqrt(D) dW`, D diagonal.
#[derive(Clone, Debug)]
pub struct LinearCircuit {
    pub drift: Mat<f64>,
    pub b: Vec<f64>,
    pub diffusion: Vec<f64>,
}

impl LinearCircuit {
    /// Realise the problem's crossbar, capacitors and noise sources with mismatch.
    pub fn realise(post: &GaussianProblem, cfg: &CircuitConfig) -> Result<Self> {
        cfg.validate()?;
        let d = post.dim();
        let mut rng = chain_rng(cfg.mismatch_seed, 41);
        let cap: Vec<f64> = (0..d).map(|_| cfg.jitter(&mut rng)).collect();
        let mut drift = Mat::<f64>::zeros(d, d);
        for i in 0..d {
            for j in 0..d {
                if post.precision[(i, j)] != 0.0 {
                    drift[(i, j)] = post.precision[(i, j)] * cfg.jitter(&mut rng) / cap[i];
                }
            }
        }
        let b = (0..d)
            .map(|i| post.b[i] * cfg.jitter(&mut rng) / cap[i])
            .collect();
        let diffusion = (0..d)
            .map(|i| 2.0 * cfg.jitter(&mut rng) / (cap[i] * cap[i]))
            .collect();
        Ok(Self {
            drift,
            b,
            diffusion,
        })
    }

    /// Exact transition over a step `h`: `(Φ, c, Q_h)` with `θ' = Φθ + c + N(0, Q_h)`.
    pub fn transition(&self, h: f64) -> Result<(Mat<f64>, Vec<f64>, Mat<f64>)> {
        let d = self.b.len();
        let diffusion = Mat::from_fn(d, d, |i, j| if i == j { self.diffusion[i] } else { 0.0 });
        let (phi, q) = ou::van_loan(self.drift.as_ref(), diffusion.as_ref(), h);
        // c = (I - Φ) A⁻¹ b'
        let fix_m = self
            .drift
            .partial_piv_lu()
            .solve(Mat::from_fn(d, 1, |i, _| self.b[i]));
        let fix: Vec<f64> = (0..d).map(|i| fix_m[(i, 0)]).collect();
        if fix.iter().any(|v| !v.is_finite()) {
            return Err(Error::Singular {
                what: "realised drift matrix",
            });
        }
        let c = (0..d)
            .map(|i| fix[i] - (0..d).map(|j| phi[(i, j)] * fix[j]).sum::<f64>())
            .collect();
        Ok((phi, c, q))
    }

    /// Exact moments at times `h, 2h, ..., steps·h` from the deterministic start `m0`;
    /// returns the KL to `post` at each time.
    pub fn kl_path(
        &self,
        post: &GaussianProblem,
        m0: &[f64],
        h: f64,
        steps: usize,
    ) -> Result<Vec<f64>> {
        let d = self.b.len();
        let (phi, c, q) = self.transition(h)?;
        let mut m = m0.to_vec();
        let mut s = Mat::<f64>::zeros(d, d);
        let mut out = Vec::with_capacity(steps);
        for _ in 0..steps {
            m = (0..d)
                .map(|i| (0..d).map(|j| phi[(i, j)] * m[j]).sum::<f64>() + c[i])
                .collect();
            let ps = mul(phi.as_ref(), s.as_ref());
            let pst = mul(ps.as_ref(), phi.transpose());
            s = Mat::from_fn(d, d, |i, j| pst[(i, j)] + q[(i, j)]);
            out.push(kl_to_posterior(&m, &s, post)?);
        }
        Ok(out)
    }

    /// Sample `chains` independent circuit trajectories exactly at `h, 2h, ...`;
    /// returns the states at the final time (`chains × d`).
    pub fn sample(
        &self,
        m0: &[f64],
        h: f64,
        steps: usize,
        chains: usize,
        rng: &mut ChainRng,
    ) -> Result<Vec<Vec<f64>>> {
        let d = self.b.len();
        let (phi, c, q) = self.transition(h)?;
        let (lq, _) = ou::psd_factor("transition covariance", q.as_ref())?;
        let mut out = Vec::with_capacity(chains);
        let mut xi = vec![0.0; d];
        for _ in 0..chains {
            let mut x = m0.to_vec();
            for _ in 0..steps {
                fill_standard_normal(rng, &mut xi);
                x = (0..d)
                    .map(|i| {
                        (0..d).map(|j| phi[(i, j)] * x[j]).sum::<f64>()
                            + c[i]
                            + (0..d).map(|j| lq[(i, j)] * xi[j]).sum::<f64>()
                    })
                    .collect();
            }
            out.push(x);
        }
        Ok(out)
    }

    /// Power (W) of the circuit at the posterior moments (see module docs).
    pub fn power(post: &GaussianProblem, cfg: &CircuitConfig) -> Result<f64> {
        let d = post.dim();
        let cov = spd_inverse("precision", post.precision.as_ref())?;
        let e2: Vec<f64> = (0..d)
            .map(|j| post.mean[j] * post.mean[j] + cov[(j, j)])
            .collect();
        let v2 = cfg.v_scale * cfg.v_scale;
        let mut xbar = 0.0;
        for i in 0..d {
            for j in 0..d {
                xbar += post.precision[(i, j)].abs() / cfg.r_unit * v2 * e2[j];
            }
            xbar += post.b[i].abs() / cfg.r_unit * v2;
        }
        Ok(d as f64 * cfg.cell_power + xbar)
    }
}

/// One row of the Gaussian time/energy scaling table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScalingRow {
    pub d: usize,
    pub lambda_min: f64,
    pub lambda_max: f64,
    /// Time (units of τ) for the ideal circuit to reach the KL threshold.
    pub t_ideal_tau: f64,
    /// Same for the mismatched circuit (None when not computed or never reached).
    pub t_mismatch_tau: Option<f64>,
    /// KL of the mismatched circuit's stationary law (the floor).
    pub kl_floor_mismatch: Option<f64>,
    pub power_watts: f64,
    pub static_power_watts: f64,
    /// Energy of the ideal run to threshold (J).
    pub energy_joules: f64,
}

/// Time and energy to reach `threshold` nats of KL from `θ(0) = 0` for the
/// blur family at each `d`. Mismatched circuits are propagated exactly (step
/// `h` τ) for `d <= mismatch_max_d`.
pub fn gaussian_scaling(
    dims: &[usize],
    threshold: f64,
    cfg: &CircuitConfig,
    mismatch_max_d: usize,
    seed: u64,
) -> Result<Vec<ScalingRow>> {
    cfg.validate()?;
    if !(threshold.is_finite() && threshold > 0.0) {
        return Err(Error::InvalidConfig {
            field: "threshold",
            reason: format!("must be > 0, got {threshold}"),
        });
    }
    let mut rows = Vec::new();
    for &d in dims {
        let post = GaussianProblem::blur_family(d, seed)?;
        let m0 = vec![0.0; d];
        let ik = IdealKl::new(&post, &m0)?;
        let t_ideal = ik.time_to(threshold);
        let power = LinearCircuit::power(&post, cfg)?;
        let (mut t_mis, mut floor) = (None, None);
        if cfg.tolerance_pct > 0.0 && d <= mismatch_max_d {
            let circ = LinearCircuit::realise(&post, cfg)?;
            let h = 0.05;
            let steps = ((3.0 * t_ideal + 10.0) / h).ceil() as usize;
            let path = circ.kl_path(&post, &m0, h, steps)?;
            t_mis = path
                .iter()
                .position(|&k| k <= threshold)
                .map(|i| (i + 1) as f64 * h);
            floor = path.last().copied();
        }
        rows.push(ScalingRow {
            d,
            lambda_min: ik.lam.iter().cloned().fold(f64::INFINITY, f64::min),
            lambda_max: ik.lam.iter().cloned().fold(0.0, f64::max),
            t_ideal_tau: t_ideal,
            t_mismatch_tau: t_mis,
            kl_floor_mismatch: floor,
            power_watts: power,
            static_power_watts: d as f64 * cfg.cell_power,
            energy_joules: power * t_ideal * cfg.tau(),
        });
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------
// (b) Bayesian logistic regression
// ---------------------------------------------------------------------------

/// Transfer curve of the per-data-point nonlinear element.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Nonlinearity {
    /// The exact logistic sigmoid.
    Ideal,
    /// Bipolar differential pair: exactly a sigmoid, shifted by an input
    /// offset `offset_sd · N(0,1)` per element (in units of `a`).
    Bipolar { offset_sd: f64 },
    /// MOS square-law differential pair (see module docs).
    MosSquareLaw,
}

fn sigmoid(a: f64) -> f64 {
    if a >= 0.0 {
        1.0 / (1.0 + (-a).exp())
    } else {
        let e = a.exp();
        e / (1.0 + e)
    }
}

impl Nonlinearity {
    /// Transfer curve value with element offset `off`.
    pub fn apply(&self, a: f64, off: f64) -> f64 {
        match self {
            Nonlinearity::Ideal => sigmoid(a),
            Nonlinearity::Bipolar { .. } => sigmoid(a + off),
            Nonlinearity::MosSquareLaw => {
                let u = (a / (2.0 * std::f64::consts::SQRT_2)).clamp(-1.0, 1.0);
                0.5 * (1.0 + u * (2.0 - u * u).sqrt())
            }
        }
    }
    /// Max |f(a) - σ(a)| over a ∈ [-10, 10] (no offset).
    pub fn max_deviation(&self) -> f64 {
        (0..=2000)
            .map(|k| -10.0 + k as f64 * 0.01)
            .map(|a| (self.apply(a, 0.0) - sigmoid(a)).abs())
            .fold(0.0, f64::max)
    }
}

/// Logistic-regression data with prior `N(0, prior_var I)`.
#[derive(Clone, Debug)]
pub struct LogisticProblem {
    /// n × d, row-major.
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    pub n: usize,
    pub d: usize,
    pub prior_var: f64,
}

impl LogisticProblem {
    /// Synthetic family: `n = max(2d, 20)`, `x ~ N(0, 4/d I)`, `θ* ~ N(0, I)`,
    /// labels from the model. Posterior curvature bounded as `d` grows.
    pub fn synthetic(d: usize, seed: u64) -> Result<Self> {
        if d == 0 {
            return Err(Error::InvalidConfig {
                field: "d",
                reason: "must be >= 1".into(),
            });
        }
        let n = (2 * d).max(20);
        let mut rng = chain_rng(seed, 51);
        let mut th = vec![0.0; d];
        fill_standard_normal(&mut rng, &mut th);
        let mut x = vec![0.0; n * d];
        fill_standard_normal(&mut rng, &mut x);
        let s = (4.0 / d as f64).sqrt();
        x.iter_mut().for_each(|v| *v *= s);
        let y = (0..n)
            .map(|i| {
                let a: f64 = (0..d).map(|j| x[i * d + j] * th[j]).sum();
                f64::from(u8::from(rng.random::<f64>() < sigmoid(a)))
            })
            .collect();
        Ok(Self {
            x,
            y,
            n,
            d,
            prior_var: 1.0,
        })
    }

    /// Log posterior and gradient (exact model).
    pub fn logp_grad(&self, th: &[f64]) -> (f64, Vec<f64>) {
        let mut g: Vec<f64> = th.iter().map(|t| -t / self.prior_var).collect();
        let mut lp = -0.5 * th.iter().map(|t| t * t).sum::<f64>() / self.prior_var;
        for i in 0..self.n {
            let row = &self.x[i * self.d..(i + 1) * self.d];
            let a: f64 = row.iter().zip(th).map(|(x, t)| x * t).sum();
            // log σ(a) y + log(1-σ(a)) (1-y) = y a - log(1+e^a)
            lp += self.y[i] * a - (a.max(0.0) + (-a.abs()).exp().ln_1p());
            let r = self.y[i] - sigmoid(a);
            for (gj, xj) in g.iter_mut().zip(row) {
                *gj += r * xj;
            }
        }
        (lp, g)
    }
}

/// Reference moments of a sampler run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Moments {
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    pub acceptance: f64,
}

/// MALA on the exact logistic posterior: `iters` steps after `burn` burn-in,
/// step size adapted during burn-in towards 0.574 acceptance.
pub fn mala(p: &LogisticProblem, iters: usize, burn: usize, seed: u64) -> Result<Moments> {
    if iters < 2 {
        return Err(Error::InvalidConfig {
            field: "iters",
            reason: "must be >= 2".into(),
        });
    }
    let d = p.d;
    let mut rng = chain_rng(seed, 61);
    let mut th = vec![0.0; d];
    let (mut lp, mut g) = p.logp_grad(&th);
    let mut eps = 0.5 / (d as f64).powf(1.0 / 6.0);
    let (mut sum, mut sq) = (vec![0.0; d], vec![0.0; d]);
    let mut acc = 0usize;
    let mut z = vec![0.0; d];
    for it in 0..burn + iters {
        fill_standard_normal(&mut rng, &mut z);
        let prop: Vec<f64> = (0..d)
            .map(|i| th[i] + 0.5 * eps * eps * g[i] + eps * z[i])
            .collect();
        let (lp2, g2) = p.logp_grad(&prop);
        let q = |to: &[f64], from: &[f64], gf: &[f64]| -> f64 {
            -(0..d)
                .map(|i| (to[i] - from[i] - 0.5 * eps * eps * gf[i]).powi(2))
                .sum::<f64>()
                / (2.0 * eps * eps)
        };
        let log_a = lp2 - lp + q(&th, &prop, &g2) - q(&prop, &th, &g);
        let accept = rng.random::<f64>().ln() < log_a;
        if accept {
            th = prop;
            lp = lp2;
            g = g2;
        }
        if it < burn {
            eps *= if accept {
                1.01
            } else {
                0.99f64.powf(0.574 / 0.426)
            };
        } else {
            acc += usize::from(accept);
            for i in 0..d {
                sum[i] += th[i];
                sq[i] += th[i] * th[i];
            }
        }
    }
    let n = iters as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let var = sq.iter().zip(&mean).map(|(s, m)| s / n - m * m).collect();
    Ok(Moments {
        mean,
        var,
        acceptance: acc as f64 / n,
    })
}

/// The realised logistic circuit: mismatched crossbars and nonlinear elements.
#[derive(Clone, Debug)]
pub struct LogisticCircuit {
    /// Forward crossbar (realises X), n × d.
    pub xf: Vec<f64>,
    /// Backward crossbar (realises Xᵀ), stored n × d.
    pub xb: Vec<f64>,
    pub offsets: Vec<f64>,
    pub nonlinearity: Nonlinearity,
    /// Per-integrator capacitor and noise factors.
    pub cap: Vec<f64>,
    pub noise: Vec<f64>,
    /// Prior leak conductance factors.
    pub leak: Vec<f64>,
    pub n: usize,
    pub d: usize,
    pub prior_var: f64,
    pub y: Vec<f64>,
}

impl LogisticCircuit {
    /// Realise with mismatch from `cfg` and the given nonlinear element.
    pub fn realise(p: &LogisticProblem, nl: Nonlinearity, cfg: &CircuitConfig) -> Result<Self> {
        cfg.validate()?;
        if let Nonlinearity::Bipolar { offset_sd } = nl {
            if !(offset_sd.is_finite() && offset_sd >= 0.0) {
                return Err(Error::InvalidConfig {
                    field: "offset_sd",
                    reason: "must be >= 0".into(),
                });
            }
        }
        let mut rng = chain_rng(cfg.mismatch_seed, 71);
        let xf = p.x.iter().map(|v| v * cfg.jitter(&mut rng)).collect();
        let xb = p.x.iter().map(|v| v * cfg.jitter(&mut rng)).collect();
        let offsets = (0..p.n)
            .map(|_| match nl {
                Nonlinearity::Bipolar { offset_sd } => {
                    offset_sd * langevin_core::rng::standard_normal(&mut rng)
                }
                _ => 0.0,
            })
            .collect();
        let cap = (0..p.d).map(|_| cfg.jitter(&mut rng)).collect();
        let noise = (0..p.d).map(|_| cfg.jitter(&mut rng)).collect();
        let leak = (0..p.d).map(|_| cfg.jitter(&mut rng)).collect();
        Ok(Self {
            xf,
            xb,
            offsets,
            nonlinearity: nl,
            cap,
            noise,
            leak,
            n: p.n,
            d: p.d,
            prior_var: p.prior_var,
            y: p.y.clone(),
        })
    }

    fn drift(&self, th: &[f64], out: &mut [f64]) {
        for j in 0..self.d {
            out[j] = -self.leak[j] * th[j] / self.prior_var;
        }
        for i in 0..self.n {
            let a: f64 = self.xf[i * self.d..(i + 1) * self.d]
                .iter()
                .zip(th)
                .map(|(x, t)| x * t)
                .sum();
            let r = self.y[i] - self.nonlinearity.apply(a, self.offsets[i]);
            for (o, xb) in out.iter_mut().zip(&self.xb[i * self.d..(i + 1) * self.d]) {
                *o += r * xb;
            }
        }
        for j in 0..self.d {
            out[j] /= self.cap[j];
        }
    }

    /// Euler-Maruyama with step `h` (τ units) for `chains` chains from θ = 0;
    /// returns per-coordinate (mean, variance) across chains at each `record` time index.
    pub fn simulate(
        &self,
        h: f64,
        steps: usize,
        chains: usize,
        record_every: usize,
        rng: &mut ChainRng,
    ) -> Result<Vec<(f64, Moments)>> {
        if !(h.is_finite() && h > 0.0) || chains < 2 || record_every == 0 {
            return Err(Error::InvalidConfig {
                field: "h/chains/record_every",
                reason: "need h > 0, chains >= 2, record_every >= 1".into(),
            });
        }
        let d = self.d;
        let mut states = vec![vec![0.0; d]; chains];
        let mut buf = vec![0.0; d];
        let mut xi = vec![0.0; d];
        let sd: Vec<f64> = (0..d)
            .map(|j| (2.0 * self.noise[j] * h).sqrt() / self.cap[j])
            .collect();
        let mut out = Vec::new();
        for s in 1..=steps {
            for st in states.iter_mut() {
                self.drift(st, &mut buf);
                fill_standard_normal(rng, &mut xi);
                for j in 0..d {
                    st[j] += h * buf[j] + sd[j] * xi[j];
                }
            }
            if s % record_every == 0 {
                let mut mean = vec![0.0; d];
                let mut var = vec![0.0; d];
                for st in &states {
                    for j in 0..d {
                        mean[j] += st[j] / chains as f64;
                    }
                }
                for st in &states {
                    for j in 0..d {
                        var[j] += (st[j] - mean[j]).powi(2) / (chains - 1) as f64;
                    }
                }
                if mean.iter().any(|v| !v.is_finite()) {
                    return Err(Error::InvalidConfig {
                        field: "h",
                        reason: format!("Euler-Maruyama diverged with h = {h}"),
                    });
                }
                out.push((
                    s as f64 * h,
                    Moments {
                        mean,
                        var,
                        acceptance: f64::NAN,
                    },
                ));
            }
        }
        Ok(out)
    }

    /// One circuit trajectory by Euler-Maruyama with step `h` (τ units) from `start`:
    /// `burn` steps, then `n_draws` states read out every `thin` steps.
    pub fn trajectory(
        &self,
        start: &[f64],
        h: f64,
        burn: usize,
        thin: usize,
        n_draws: usize,
        rng: &mut ChainRng,
    ) -> Result<Vec<Vec<f64>>> {
        let d = self.d;
        if start.len() != d {
            return Err(Error::DimensionMismatch {
                what: "start",
                expected: d,
                got: start.len(),
            });
        }
        if !(h.is_finite() && h > 0.0) || thin == 0 {
            return Err(Error::InvalidConfig {
                field: "h/thin",
                reason: "need h > 0 and thin >= 1".into(),
            });
        }
        let sd: Vec<f64> = (0..d)
            .map(|j| (2.0 * self.noise[j] * h).sqrt() / self.cap[j])
            .collect();
        let mut x = start.to_vec();
        let (mut buf, mut xi) = (vec![0.0; d], vec![0.0; d]);
        let mut out = Vec::with_capacity(n_draws);
        for s in 1..=burn + thin * n_draws {
            self.drift(&x, &mut buf);
            fill_standard_normal(rng, &mut xi);
            for j in 0..d {
                x[j] += h * buf[j] + sd[j] * xi[j];
            }
            if s > burn && (s - burn).is_multiple_of(thin) {
                if x.iter().any(|v| !v.is_finite()) {
                    return Err(Error::InvalidConfig {
                        field: "h",
                        reason: format!("Euler-Maruyama diverged with h = {h}"),
                    });
                }
                out.push(x.clone());
            }
        }
        Ok(out)
    }

    /// Power (W): integrators, nonlinear elements and both crossbars at the reference moments.
    pub fn power(&self, reference: &Moments, cfg: &CircuitConfig) -> f64 {
        let v2 = cfg.v_scale * cfg.v_scale;
        let e2: Vec<f64> = (0..self.d)
            .map(|j| reference.mean[j].powi(2) + reference.var[j])
            .collect();
        let mut xbar = 0.0;
        for i in 0..self.n {
            for j in 0..self.d {
                // forward crossbar driven by θ_j; backward crossbar by residual currents ≈ O(1) unit.
                xbar += self.xf[i * self.d + j].abs() / cfg.r_unit * v2 * e2[j]
                    + self.xb[i * self.d + j].abs() / cfg.r_unit * v2 * 0.25;
            }
        }
        self.d as f64 * cfg.cell_power + self.n as f64 * cfg.nonlinear_power + xbar
    }
}

/// Sum over coordinates of the 1-D Gaussian KL(N(m, v) ‖ N(μ, σ²)) (the
/// marginal-KL metric used for the logistic case; it needs far fewer chains
/// than a full-covariance KL).
pub fn marginal_kl(q: &Moments, p: &Moments) -> f64 {
    q.mean
        .iter()
        .zip(&q.var)
        .zip(p.mean.iter().zip(&p.var))
        .map(|((&m, &v), (&mu, &s2))| {
            let v = v.max(1e-300);
            0.5 * (v / s2 + (m - mu).powi(2) / s2 - 1.0 - (v / s2).ln())
        })
        .sum()
}

/// One row of the logistic scaling table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogisticRow {
    pub d: usize,
    pub n: usize,
    pub nonlinearity: String,
    /// First recorded time (τ) with marginal KL ≤ threshold (None: not reached).
    pub t_tau: Option<f64>,
    /// Marginal KL averaged over the last quarter of the run (the floor),
    /// minus the finite-ensemble bias `d / chains` (so it can be slightly negative).
    pub kl_floor: f64,
    /// Max |mean - reference mean| / reference sd at the end.
    pub max_mean_z: f64,
    /// Max |var / reference var - 1| at the end.
    pub max_var_rel: f64,
    pub power_watts: f64,
    pub energy_joules: Option<f64>,
    pub mala_acceptance: f64,
}

/// Simulate the logistic circuit for each `d` and nonlinearity; time to reach
/// `threshold` (sum of marginal KLs, minus the finite-ensemble bias `d/chains`)
/// from θ = 0 against a MALA reference (40 000 steps after 5 000 burn-in).
#[allow(clippy::too_many_arguments)]
pub fn logistic_scaling(
    dims: &[usize],
    nls: &[Nonlinearity],
    threshold: f64,
    cfg: &CircuitConfig,
    h: f64,
    t_end: f64,
    chains: usize,
    seed: u64,
) -> Result<Vec<LogisticRow>> {
    cfg.validate()?;
    let mut rows = Vec::new();
    for &d in dims {
        let p = LogisticProblem::synthetic(d, seed)?;
        let reference = mala(&p, 40_000, 5_000, seed)?;
        for nl in nls {
            let circ = LogisticCircuit::realise(&p, *nl, cfg)?;
            let steps = (t_end / h).ceil() as usize;
            let every = ((0.1 / h).round() as usize).max(1);
            let mut rng = chain_rng(seed, 81 + d as u64);
            let path = circ.simulate(h, steps, chains, every, &mut rng)?;
            // Bias-corrected: each coordinate's plug-in KL estimate from N chains
            // has expectation ≈ 1/N (1/(2N) from the mean, 1/(2N) from the variance).
            let bias = d as f64 / chains as f64;
            let kls: Vec<f64> = path
                .iter()
                .map(|(_, m)| marginal_kl(m, &reference) - bias)
                .collect();
            let t_tau = path
                .iter()
                .zip(&kls)
                .find(|(_, &k)| k <= threshold)
                .map(|((t, _), _)| *t);
            let q = kls.len() / 4;
            let kl_floor = kls[kls.len() - q.max(1)..].iter().sum::<f64>() / q.max(1) as f64;
            let last = &path
                .last()
                .ok_or_else(|| Error::InvalidConfig {
                    field: "t_end",
                    reason: "too short".into(),
                })?
                .1;
            let max_mean_z = (0..d)
                .map(|j| (last.mean[j] - reference.mean[j]).abs() / reference.var[j].sqrt())
                .fold(0.0, f64::max);
            let max_var_rel = (0..d)
                .map(|j| (last.var[j] / reference.var[j] - 1.0).abs())
                .fold(0.0, f64::max);
            let power = circ.power(&reference, cfg);
            rows.push(LogisticRow {
                d,
                n: p.n,
                nonlinearity: format!("{nl:?}"),
                t_tau,
                kl_floor,
                max_mean_z,
                max_var_rel,
                power_watts: power,
                energy_joules: t_tau.map(|t| t * cfg.tau() * power),
                mala_acceptance: reference.acceptance,
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ideal_kl_closed_form_matches_exact_propagation() {
        let post = GaussianProblem::blur_family(6, 1).unwrap();
        let circ = LinearCircuit::realise(&post, &CircuitConfig::default()).unwrap();
        let m0 = vec![0.0; 6];
        let path = circ.kl_path(&post, &m0, 0.1, 30).unwrap();
        for (k, kl) in path.iter().enumerate() {
            let t = (k + 1) as f64 * 0.1;
            let want = ideal_kl_at(&post, &m0, t).unwrap();
            assert!(
                (kl - want).abs() < 1e-8 * want.max(1.0),
                "t = {t}: {kl} vs {want}"
            );
        }
    }

    #[test]
    fn mos_pair_deviation_is_documented_value() {
        let d = Nonlinearity::MosSquareLaw.max_deviation();
        assert!((d - 0.0637).abs() < 0.001, "{d}");
        assert_eq!(Nonlinearity::Ideal.max_deviation(), 0.0);
    }

    #[test]
    fn mala_gradient_matches_finite_differences() {
        let p = LogisticProblem::synthetic(3, 0).unwrap();
        let th = [0.3, -0.2, 0.5];
        let (_, g) = p.logp_grad(&th);
        for i in 0..3 {
            let mut a = th;
            a[i] += 1e-6;
            let mut b = th;
            b[i] -= 1e-6;
            let fd = (p.logp_grad(&a).0 - p.logp_grad(&b).0) / 2e-6;
            assert!((fd - g[i]).abs() < 1e-6);
        }
    }
}
