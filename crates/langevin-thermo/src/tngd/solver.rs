//! The analog part of TNGD: the device's OU process `dg̃ = -(F g̃ - g) dt +
//! sqrt(2 κ₀) dW`, simulated exactly (eigendecomposition of the symmetric `F`, or
//! of the small Gram matrix of its factor) or with Euler-Maruyama.

#![allow(clippy::needless_range_loop)] // dense numerical kernels index several arrays at once

use faer::prelude::*;
use faer::{Mat, Side};
use langevin_core::rng::{fill_standard_normal, ChainRng};
use serde::{Deserialize, Serialize};

use super::model::Curvature;
use crate::error::{Result, ThermoError as Error};
use crate::ou::{mat_vec, mul};

/// How the OU process of the device is simulated.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Integrator {
    /// Exact transition via the eigendecomposition of the symmetric `F`.
    Exact,
    /// Euler-Maruyama with step `dt` (in units of τ); needs `dt λ_max(F) < 2`.
    EulerMaruyama { dt: f64 },
}

/// The analog part of TNGD: OU run time, delay, noise and integrator.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct OuConfig {
    /// Analog run time per step, in units of τ.
    pub time: f64,
    /// Delay in units of τ during which the device still runs on the previous `(F, g)`.
    pub delay: f64,
    /// Noise intensity κ₀ (stationary covariance `κ₀ F⁻¹`).
    pub kappa: f64,
    pub integrator: Integrator,
}

impl Default for OuConfig {
    fn default() -> Self {
        Self {
            time: 5.0,
            delay: 0.0,
            kappa: 0.0,
            integrator: Integrator::Exact,
        }
    }
}

impl OuConfig {
    /// Validate the hyper-parameters.
    pub fn validate(&self) -> Result<()> {
        if !(self.time.is_finite() && self.time >= 0.0) {
            return Err(Error::InvalidConfig {
                field: "time",
                reason: format!("must be finite and >= 0, got {}", self.time),
            });
        }
        if !(self.delay.is_finite() && self.delay >= 0.0) {
            return Err(Error::InvalidConfig {
                field: "delay",
                reason: format!("must be finite and >= 0, got {}", self.delay),
            });
        }
        if !(self.kappa.is_finite() && self.kappa >= 0.0) {
            return Err(Error::InvalidConfig {
                field: "kappa",
                reason: format!("must be finite and >= 0, got {}", self.kappa),
            });
        }
        if let Integrator::EulerMaruyama { dt } = self.integrator {
            if !(dt.is_finite() && dt > 0.0) {
                return Err(Error::InvalidConfig {
                    field: "dt",
                    reason: format!("must be finite and > 0, got {dt}"),
                });
            }
        }
        Ok(())
    }
}

fn check_square(f: &Mat<f64>, g: &[f64]) -> Result<()> {
    if f.nrows() != f.ncols() {
        return Err(Error::DimensionMismatch {
            what: "F (square)",
            expected: f.nrows(),
            got: f.ncols(),
        });
    }
    if g.len() != f.nrows() {
        return Err(Error::DimensionMismatch {
            what: "gradient",
            expected: f.nrows(),
            got: g.len(),
        });
    }
    Ok(())
}

/// Symmetric eigendecomposition `F = U diag(λ) Uᵀ`; errors unless `F` is positive definite.
pub(crate) fn sym_eig(f: &Mat<f64>) -> Result<(Vec<f64>, Mat<f64>)> {
    let e = f
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| Error::NotPositiveDefinite {
            what: "F",
            semi: false,
            detail: Some("eigendecomposition failed".into()),
        })?;
    let n = f.nrows();
    let lam: Vec<f64> = (0..n).map(|i| e.S().column_vector()[i]).collect();
    if lam.iter().any(|&l| l.is_nan() || l <= 0.0) {
        return Err(Error::NotPositiveDefinite {
            what: "the OU drift F",
            semi: false,
            detail: Some("it must be symmetric positive definite".into()),
        });
    }
    Ok((lam, e.U().to_owned()))
}

/// Mean of the OU process `dx = -(F x - g) dt + ...` at time `t` started at `x0`:
/// `F⁻¹g + e^{-Ft}(x0 - F⁻¹g)` (F symmetric positive definite).
pub fn ou_mean(f: &Mat<f64>, g: &[f64], x0: &[f64], t: f64) -> Result<Vec<f64>> {
    check_square(f, g)?;
    if x0.len() != g.len() {
        return Err(Error::DimensionMismatch {
            what: "x0",
            expected: g.len(),
            got: x0.len(),
        });
    }
    let (lam, u) = sym_eig(f)?;
    let gy = mat_vec(u.transpose(), g);
    let y0 = mat_vec(u.transpose(), x0);
    let y: Vec<f64> = (0..lam.len())
        .map(|i| {
            let ys = gy[i] / lam[i];
            ys + (-lam[i] * t).exp() * (y0[i] - ys)
        })
        .collect();
    Ok(mat_vec(u.as_ref(), &y))
}

/// Run the device's OU process for time `t` from `x0` and return the final state (one sample).
pub fn ou_evolve(
    f: &Mat<f64>,
    g: &[f64],
    x0: &[f64],
    t: f64,
    kappa: f64,
    integrator: Integrator,
    rng: &mut ChainRng,
) -> Result<Vec<f64>> {
    check_square(f, g)?;
    if x0.len() != g.len() {
        return Err(Error::DimensionMismatch {
            what: "x0",
            expected: g.len(),
            got: x0.len(),
        });
    }
    if t == 0.0 {
        return Ok(x0.to_vec());
    }
    let n = g.len();
    match integrator {
        Integrator::Exact => {
            let (lam, u) = sym_eig(f)?;
            let gy = mat_vec(u.transpose(), g);
            let y0 = mat_vec(u.transpose(), x0);
            let mut xi = vec![0.0; n];
            if kappa > 0.0 {
                fill_standard_normal(rng, &mut xi);
            }
            let y: Vec<f64> = (0..n)
                .map(|i| {
                    let ys = gy[i] / lam[i];
                    let e = (-lam[i] * t).exp();
                    let sd = (kappa * (1.0 - e * e) / lam[i]).max(0.0).sqrt();
                    ys + e * (y0[i] - ys) + sd * xi[i]
                })
                .collect();
            Ok(mat_vec(u.as_ref(), &y))
        }
        Integrator::EulerMaruyama { dt } => {
            euler_maruyama(|v| mat_vec(f.as_ref(), v), g, x0, t, dt, kappa, rng)
        }
    }
}

/// `(1 - e^{-μt})/μ`, continuous at μ = 0.
fn psi(mu: f64, t: f64) -> f64 {
    if mu * t < 1e-12 {
        t
    } else {
        -(-mu * t).exp_m1() / mu
    }
}

/// Standard deviation of the OU noise of a mode with rate μ after time t: `sqrt(κ (1 - e^{-2μt})/μ)`.
fn noise_sd(mu: f64, t: f64, kappa: f64) -> f64 {
    (2.0 * kappa * psi(2.0 * mu, t)).max(0.0).sqrt()
}

/// Euler-Maruyama for `dx = -(F x - g) dt + sqrt(2 κ) dW` over time `t` with the
/// largest step `≤ dt` that divides `t`; `fmul(v) = F v`. Errors when the state
/// becomes non-finite (`dt` too large for `λ_max(F)`).
pub(crate) fn euler_maruyama(
    fmul: impl Fn(&[f64]) -> Vec<f64>,
    g: &[f64],
    x0: &[f64],
    t: f64,
    dt: f64,
    kappa: f64,
    rng: &mut ChainRng,
) -> Result<Vec<f64>> {
    let steps = (t / dt).ceil().max(1.0) as usize;
    let h = t / steps as f64;
    let sq = (2.0 * kappa * h).sqrt();
    let mut x = x0.to_vec();
    let mut xi = vec![0.0; x.len()];
    for _ in 0..steps {
        let fx = fmul(&x);
        if kappa > 0.0 {
            fill_standard_normal(rng, &mut xi);
        }
        for i in 0..x.len() {
            x[i] += -(fx[i] - g[i]) * h + sq * xi[i];
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidConfig {
                field: "dt",
                reason: format!("Euler-Maruyama diverged (dt = {dt} too large for λ_max(F))"),
            });
        }
    }
    Ok(x)
}

/// Run the OU process for `F = GᵀG + λI` given by its factor (the GGN of
/// [`Mlp::curvature`](super::Mlp::curvature)) without forming `F`: the exact
/// transition uses the eigendecomposition of the small Gram matrix `GGᵀ`
/// (rank ≤ B·k), the complement of `G`'s row space relaxing at rate λ. Same law
/// as [`ou_evolve`] on [`Curvature::dense`].
pub fn ou_evolve_factored(
    c: &Curvature,
    x0: &[f64],
    t: f64,
    kappa: f64,
    integrator: Integrator,
    rng: &mut ChainRng,
) -> Result<Vec<f64>> {
    let pn = c.factor.ncols();
    if x0.len() != pn || c.grad.len() != pn {
        return Err(Error::DimensionMismatch {
            what: "OU state",
            expected: pn,
            got: x0.len(),
        });
    }
    if t == 0.0 {
        return Ok(x0.to_vec());
    }
    match integrator {
        Integrator::EulerMaruyama { dt } => {
            euler_maruyama(|v| c.matvec(v), &c.grad, x0, t, dt, kappa, rng)
        }
        Integrator::Exact => {
            let r = c.factor.nrows();
            let k = mul(c.factor.as_ref(), c.factor.transpose());
            let e = k
                .self_adjoint_eigen(Side::Lower)
                .map_err(|_| Error::NotPositiveDefinite {
                    what: "GGN Gram matrix",
                    semi: false,
                    detail: Some("eigendecomposition failed".into()),
                })?;
            let s: Vec<f64> = (0..r).map(|i| e.S().column_vector()[i]).collect();
            let smax = s.iter().cloned().fold(0.0, f64::max);
            let keep: Vec<usize> = (0..r)
                .filter(|&i| s[i] > 1e-12 * smax.max(1e-300))
                .collect();
            let w = mul(c.factor.transpose(), e.U());
            let v = Mat::from_fn(pn, keep.len(), |i, j| w[(i, keep[j])] / s[keep[j]].sqrt());
            let mu: Vec<f64> = keep.iter().map(|&i| s[i] + c.damping).collect();
            let lam = c.damping;
            let apply = |f: &dyn Fn(f64) -> f64, x: &[f64]| -> Vec<f64> {
                let coef = mat_vec(v.transpose(), x);
                let scaled: Vec<f64> = coef
                    .iter()
                    .zip(&mu)
                    .map(|(a, m)| (f(*m) - f(lam)) * a)
                    .collect();
                let back = mat_vec(v.as_ref(), &scaled);
                let fl = f(lam);
                x.iter().zip(&back).map(|(xi, b)| fl * xi + b).collect()
            };
            let decay = apply(&|m| (-m * t).exp(), x0);
            let drive = apply(&|m| psi(m, t), &c.grad);
            let mut out: Vec<f64> = decay.iter().zip(&drive).map(|(a, b)| a + b).collect();
            if kappa > 0.0 {
                let mut xi = vec![0.0; pn];
                fill_standard_normal(rng, &mut xi);
                let nz = apply(&|m| noise_sd(m, t, kappa), &xi);
                out.iter_mut().zip(&nz).for_each(|(o, n)| *o += n);
            }
            Ok(out)
        }
    }
}

/// Solve `F x = g` by Cholesky (`F` symmetric positive definite).
pub(crate) fn cholesky_solve(f: &Mat<f64>, g: &[f64]) -> Result<Vec<f64>> {
    let llt = f.llt(Side::Lower).map_err(|_| Error::NotPositiveDefinite {
        what: "GGN",
        semi: false,
        detail: Some("Cholesky factorisation failed".into()),
    })?;
    let rhs = Mat::from_fn(g.len(), 1, |i, _| g[i]);
    let sol = llt.solve(&rhs);
    Ok((0..g.len()).map(|i| sol[(i, 0)]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tngd::data::toy_data;
    use crate::tngd::model::Mlp;
    use langevin_core::rng::chain_rng;

    #[test]
    fn reference_ou_mean_errors() {
        let f = Mat::from_fn(2, 2, |i, j| [[2.01, 0.5], [0.5, 1.01]][i][j]);
        let g = [1.0, -1.0];
        let exact = cholesky_solve(&f, &g).unwrap();
        let nrm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        for (t, want, tol) in [(0.0, 0.266, 5e-4), (1.0, 0.0895, 5e-4), (5.0, 3.5e-3, 5e-5)] {
            let m = ou_mean(&f, &g, &g, t).unwrap();
            let e: Vec<f64> = m.iter().zip(&exact).map(|(a, b)| a - b).collect();
            let rel = nrm(&e) / nrm(&exact);
            assert!((rel - want).abs() < tol, "t = {t}: {rel} vs {want}");
        }
    }

    #[test]
    fn ou_exact_noise_has_stationary_covariance_kappa_f_inv() {
        // Long-time samples: covariance κ₀ F⁻¹ within Monte Carlo error, several seeds.
        let f = Mat::from_fn(2, 2, |i, j| [[2.01, 0.5], [0.5, 1.01]][i][j]);
        let finv = [
            [1.01 / 1.7801, -0.5 / 1.7801],
            [-0.5 / 1.7801, 2.01 / 1.7801],
        ];
        let g = [0.0, 0.0];
        let kappa = 0.3;
        let n = 4000;
        for seed in 0..3 {
            let mut rng = chain_rng(seed, 0);
            let mut s = [[0.0; 2]; 2];
            for _ in 0..n {
                let x = ou_evolve(
                    &f,
                    &g,
                    &[0.0, 0.0],
                    50.0,
                    kappa,
                    Integrator::Exact,
                    &mut rng,
                )
                .unwrap();
                for i in 0..2 {
                    for j in 0..2 {
                        s[i][j] += x[i] * x[j] / n as f64;
                    }
                }
            }
            for i in 0..2 {
                for j in 0..2 {
                    let want = kappa * finv[i][j];
                    // sd of a product-moment estimate ≈ sqrt((S_ii S_jj + S_ij²)/n)
                    let sd =
                        ((kappa * finv[i][i] * kappa * finv[j][j] + want * want) / n as f64).sqrt();
                    assert!(
                        (s[i][j] - want).abs() < 4.0 * sd,
                        "seed {seed} ({i},{j}): {} vs {want}",
                        s[i][j]
                    );
                }
            }
        }
    }

    #[test]
    fn euler_matches_exact_mean_for_small_steps() {
        let f = Mat::from_fn(2, 2, |i, j| [[2.01, 0.5], [0.5, 1.01]][i][j]);
        let g = [1.0, -1.0];
        let mut rng = chain_rng(0, 0);
        let e = ou_evolve(
            &f,
            &g,
            &g,
            3.0,
            0.0,
            Integrator::EulerMaruyama { dt: 1e-4 },
            &mut rng,
        )
        .unwrap();
        let m = ou_mean(&f, &g, &g, 3.0).unwrap();
        for (a, b) in e.iter().zip(&m) {
            assert!((a - b).abs() < 1e-3);
        }
    }

    #[test]
    fn factored_ou_matches_dense_ou() {
        let data = toy_data(6, 3, 3, 9);
        let mlp = Mlp {
            d_in: 3,
            hidden: 4,
            k: 3,
        };
        let th = mlp.init(&mut chain_rng(1, 0));
        let rows: Vec<usize> = (0..4).collect();
        // rank B·k = 12 < P = 31: exercises the complement of the row space.
        let c = mlp.curvature(&th, &data, &rows, 0.3);
        let dense = c.dense();
        let x0: Vec<f64> = (0..mlp.n_params())
            .map(|i| (i as f64 * 0.37).sin())
            .collect();
        for t in [0.3, 2.0, 20.0] {
            let a = ou_evolve_factored(&c, &x0, t, 0.0, Integrator::Exact, &mut chain_rng(0, 0))
                .unwrap();
            let b = ou_mean(&dense, &c.grad, &x0, t).unwrap();
            for (u, v) in a.iter().zip(&b) {
                assert!((u - v).abs() < 1e-9, "t = {t}: {u} vs {v}");
            }
        }
        // Noise: the factored sampler's covariance matches κ(F⁻¹)(I - e^{-2Ft}) in a few directions.
        let kappa = 0.2;
        let t = 1.5;
        let n = 3000;
        let pn = mlp.n_params();
        let mut rng = chain_rng(5, 0);
        let zero = vec![0.0; pn];
        let c0 = Curvature {
            loss: 0.0,
            grad: zero.clone(),
            factor: c.factor.clone(),
            damping: c.damping,
        };
        let mut var0 = 0.0;
        for _ in 0..n {
            let x = ou_evolve_factored(&c0, &zero, t, kappa, Integrator::Exact, &mut rng).unwrap();
            var0 += x[0] * x[0] / n as f64;
        }
        // exact variance of coordinate 0 via dense eigendecomposition
        let (lam, u) = sym_eig(&dense).unwrap();
        let want: f64 = (0..pn)
            .map(|k| u[(0, k)] * u[(0, k)] * kappa * (1.0 - (-2.0 * lam[k] * t).exp()) / lam[k])
            .sum();
        let sd = want * (2.0 / n as f64).sqrt();
        assert!((var0 - want).abs() < 4.0 * sd, "{var0} vs {want}");
    }
}
