//! Marginal-likelihood (evidence) tuning of a Laplace approximation's prior precision,
//! and of the observation noise of a Gaussian regression, as laplace-torch's
//! `optimize_prior_precision(method="marglik")` does.
//!
//! With a Gaussian prior `N(0, δ⁻¹ I)` on the `m` approximated parameters, the Laplace
//! approximation of the log evidence at the mode θ* is
//!
//! ```text
//! log p(D | δ) ≈ log p(D | θ*) − δ/2 ‖θ*‖² + m/2 ln δ − ½ ln det(H + δ I)
//! ```
//!
//! with `H` the log likelihood's curvature at θ* (GGN, Fisher or Hessian, without the
//! prior; `ln det(H + δI) = Σ ln(λᵢ + δ)` over its eigenvalues). Its derivative in `ln δ`
//! vanishes where `δ ‖θ*‖² = γ(δ) = Σ λᵢ / (λᵢ + δ)` (MacKay's effective number of
//! parameters). `γ(δ)/‖θ*‖² − δ` is strictly decreasing, so the maximiser is unique;
//! [`optimize_prior_precision`] finds it by bisection in `ln δ` to relative precision
//! 1e-12. As in laplace-torch this is post hoc: θ* and `H` stay those of the fit (refit
//! the mode with the new prior and repeat for the type-II maximum likelihood fixed point).
//!
//! For a Gaussian likelihood `y ~ N(f(x, θ), σ²)` with a GGN `H = G/σ²` (`G = Σ JᵢᵀJᵢ`)
//! and residual sum of squares `r` at θ*, the evidence in `(δ, σ)` is stationary where
//! `δ = γ/‖θ*‖²` and `σ² = r / (n − γ)` (MacKay 1992); [`optimize_prior_precision_and_noise`]
//! iterates these two updates to a fixed point.
//!
//! For linear-Gaussian models the Laplace evidence at the exact posterior mode is the
//! exact evidence; the tests check both optimisers against the closed form
//! `log N(y; 0, σ² I + X Xᵀ / δ)`.

use faer::{Mat, Side};
use langevin_core::{Error, Result};

/// The log likelihood's curvature at the mode, without the prior.
#[derive(Debug, Clone, Copy)]
pub enum Curvature<'a> {
    /// A diagonal approximation (its entries are the eigenvalues).
    Diag(&'a [f64]),
    /// A dense symmetric `m × m` matrix, row-major.
    Dense { h: &'a [f64], m: usize },
}

/// The result of an evidence optimisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// The prior precision δ that maximises the Laplace evidence.
    pub prior_precision: f64,
    /// The observation noise sd (only from [`optimize_prior_precision_and_noise`]).
    pub noise_sd: Option<f64>,
    /// The Laplace log evidence at the optimum.
    pub log_evidence: f64,
    /// `γ = Σ λᵢ / (λᵢ + δ)`: how many parameters the data determine.
    pub effective_params: f64,
}

/// Eigenvalues of the curvature; negative ones (beyond rounding) are an error: the
/// evidence needs `H + δ I` positive definite for every δ > 0.
pub fn curvature_eigenvalues(c: Curvature<'_>) -> Result<Vec<f64>> {
    let eig = match c {
        Curvature::Diag(d) => d.to_vec(),
        Curvature::Dense { h, m } => {
            if h.len() != m * m {
                return Err(Error::DimensionMismatch {
                    what: "dense curvature",
                    expected: m * m,
                    got: h.len(),
                });
            }
            let mat = Mat::from_fn(m, m, |i, j| 0.5 * (h[i * m + j] + h[j * m + i]));
            mat.self_adjoint_eigenvalues(Side::Lower)
                .map_err(|_| Error::Numerical("eigenvalues of the curvature".into()))?
        }
    };
    let scale = eig.iter().fold(0f64, |a, v| a.max(v.abs()));
    if let Some(v) = eig.iter().find(|v| !v.is_finite()) {
        return Err(Error::Numerical(format!("curvature eigenvalue {v}")));
    }
    if let Some(v) = eig
        .iter()
        .find(|&&v| v < -1e-10 * scale.max(f64::MIN_POSITIVE))
    {
        return Err(Error::NotPositiveDefinite {
            context: Some(format!(
                "the curvature has a negative eigenvalue {v:.3e}: the evidence needs a \
                 positive semi-definite curvature (a GGN or Fisher, or a Hessian at a mode)"
            )),
        });
    }
    Ok(eig.into_iter().map(|v| v.max(0.0)).collect())
}

/// [`curvature_eigenvalues`], one per parameter of `theta`.
fn eigenvalues_for(theta: &[f64], c: Curvature<'_>) -> Result<Vec<f64>> {
    let eig = curvature_eigenvalues(c)?;
    if eig.len() != theta.len() {
        return Err(Error::DimensionMismatch {
            what: "curvature (one eigenvalue per parameter)",
            expected: theta.len(),
            got: eig.len(),
        });
    }
    Ok(eig)
}

/// The Laplace log evidence for prior precision `delta` (see the module docs):
/// `log_lik` is `log p(D | θ*)`, `theta_sq` is `‖θ*‖²` over the approximated
/// parameters, `eig` the curvature's eigenvalues.
pub fn log_evidence(log_lik: f64, theta_sq: f64, eig: &[f64], delta: f64) -> f64 {
    let m = eig.len() as f64;
    log_lik - 0.5 * delta * theta_sq + 0.5 * m * delta.ln()
        - 0.5 * eig.iter().map(|l| (l + delta).ln()).sum::<f64>()
}

fn effective(eig: &[f64], delta: f64) -> f64 {
    eig.iter().map(|l| l / (l + delta)).sum()
}

/// The δ with `δ θ² = γ(δ)` (unique: the left side increases, the right decreases).
fn solve_delta(theta_sq: f64, eig: &[f64]) -> Result<f64> {
    if !(theta_sq.is_finite() && theta_sq > 0.0) {
        return Err(Error::config(
            "theta",
            "is zero (or not finite): the evidence grows without bound with the prior \
             precision",
        ));
    }
    if eig.iter().all(|&l| l == 0.0) {
        return Err(Error::config(
            "curvature",
            "is zero: the data determine no parameter, the evidence grows as the prior \
             precision falls to 0",
        ));
    }
    let f = |u: f64| {
        let d = u.exp();
        effective(eig, d) / theta_sq - d
    };
    // Bracket: f decreases from γ(0+)/θ² > 0 to −∞.
    let (mut lo, mut hi) = (-1.0f64, 1.0f64);
    while f(lo) <= 0.0 {
        lo -= 8.0;
        if lo < -700.0 {
            return Err(Error::Numerical("no prior precision bracket".into()));
        }
    }
    while f(hi) >= 0.0 {
        hi += 8.0;
        if hi > 700.0 {
            return Err(Error::Numerical("no prior precision bracket".into()));
        }
    }
    while hi - lo > 1e-12 {
        let mid = 0.5 * (lo + hi);
        if f(mid) > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok((0.5 * (lo + hi)).exp())
}

/// The prior precision that maximises the Laplace evidence (see the module docs).
/// `theta` are the approximated parameters at the mode (e.g. a Laplace state's subset
/// of its `params`).
pub fn optimize_prior_precision(
    log_lik: f64,
    theta: &[f64],
    curvature: Curvature<'_>,
) -> Result<Evidence> {
    let eig = eigenvalues_for(theta, curvature)?;
    if !log_lik.is_finite() {
        return Err(Error::Numerical(format!("log likelihood {log_lik}")));
    }
    let theta_sq: f64 = theta.iter().map(|t| t * t).sum();
    let delta = solve_delta(theta_sq, &eig)?;
    Ok(Evidence {
        prior_precision: delta,
        noise_sd: None,
        log_evidence: log_evidence(log_lik, theta_sq, &eig, delta),
        effective_params: effective(&eig, delta),
    })
}

/// Prior precision and observation noise sd of a Gaussian regression that maximise the
/// Laplace evidence: `n` observations with residual sum of squares `rss` at the mode
/// `theta`, and the GGN at unit noise `G = Σ JᵢᵀJᵢ` (the likelihood's curvature is
/// `G / σ²`). Iterates `δ = γ/‖θ*‖²`, `σ² = rss/(n − γ)` to a fixed point.
pub fn optimize_prior_precision_and_noise(
    n: usize,
    rss: f64,
    theta: &[f64],
    ggn_unit_noise: Curvature<'_>,
) -> Result<Evidence> {
    let eig0 = eigenvalues_for(theta, ggn_unit_noise)?;
    if !(rss.is_finite() && rss > 0.0) {
        return Err(Error::config(
            "rss",
            format!("must be finite and > 0, got {rss}"),
        ));
    }
    if (n as f64) <= eig0.iter().filter(|&&l| l > 0.0).count() as f64 {
        return Err(Error::config(
            "n",
            format!(
                "{n} observations cannot determine the noise of {} well-determined parameters",
                eig0.len()
            ),
        ));
    }
    let theta_sq: f64 = theta.iter().map(|t| t * t).sum();
    let mut s2 = rss / n as f64;
    let mut delta = 1.0;
    let eig_at = |s2: f64| eig0.iter().map(|l| l / s2).collect::<Vec<f64>>();
    for _ in 0..10_000 {
        let eig = eig_at(s2);
        let new_delta = solve_delta(theta_sq, &eig)?;
        let gamma = effective(&eig, new_delta);
        let new_s2 = rss / (n as f64 - gamma);
        let done = ((new_delta / delta).ln().abs() < 1e-12) && ((new_s2 / s2).ln().abs() < 1e-12);
        delta = new_delta;
        s2 = new_s2;
        if done {
            let eig = eig_at(s2);
            let log_lik =
                -0.5 * n as f64 * (2.0 * std::f64::consts::PI * s2).ln() - rss / (2.0 * s2);
            return Ok(Evidence {
                prior_precision: delta,
                noise_sd: Some(s2.sqrt()),
                log_evidence: log_evidence(log_lik, theta_sq, &eig, delta),
                effective_params: effective(&eig, delta),
            });
        }
    }
    Err(Error::Numerical(
        "the evidence fixed point (prior precision, noise) did not converge in 10 000 \
         iterations"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use langevin_core::chain_rng;
    use langevin_core::rng::fill_standard_normal;

    /// A linear-Gaussian problem: `X` (n × m, row-major), `y`.
    fn problem(n: usize, m: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut rng = chain_rng(seed, 0);
        let mut x = vec![0.0; n * m];
        fill_standard_normal(&mut rng, &mut x);
        let mut w = vec![0.0; m];
        fill_standard_normal(&mut rng, &mut w);
        let mut e = vec![0.0; n];
        fill_standard_normal(&mut rng, &mut e);
        let y = (0..n)
            .map(|i| (0..m).map(|j| x[i * m + j] * w[j] * 0.7).sum::<f64>() + 0.5 * e[i])
            .collect();
        (x, y)
    }

    /// The exact log evidence `log N(y; 0, σ² I + X Xᵀ / δ)`.
    fn exact(x: &[f64], y: &[f64], m: usize, delta: f64, s2: f64) -> f64 {
        let n = y.len();
        let c = Mat::from_fn(n, n, |i, k| {
            (0..m).map(|j| x[i * m + j] * x[k * m + j]).sum::<f64>() / delta
                + if i == k { s2 } else { 0.0 }
        });
        let llt = c.llt(Side::Lower).unwrap();
        let l = llt.L();
        let logdet: f64 = (0..n).map(|i| 2.0 * l[(i, i)].ln()).sum();
        let sol = faer::linalg::solvers::Solve::solve(&llt, Mat::from_fn(n, 1, |i, _| y[i]));
        let quad: f64 = (0..n).map(|i| y[i] * sol[(i, 0)]).sum();
        -0.5 * (n as f64 * (2.0 * std::f64::consts::PI).ln() + logdet + quad)
    }

    /// Mode, log likelihood, residual sum of squares and `G = XᵀX` at prior precision
    /// `delta` and noise variance `s2`.
    fn fit(x: &[f64], y: &[f64], m: usize, delta: f64, s2: f64) -> (Vec<f64>, f64, f64, Vec<f64>) {
        let n = y.len();
        let g: Vec<f64> = (0..m * m)
            .map(|e| (0..n).map(|i| x[i * m + e / m] * x[i * m + e % m]).sum())
            .collect();
        let p = Mat::from_fn(m, m, |a, b| {
            g[a * m + b] / s2 + if a == b { delta } else { 0.0 }
        });
        let xty = Mat::from_fn(m, 1, |a, _| {
            (0..n).map(|i| x[i * m + a] * y[i]).sum::<f64>() / s2
        });
        let sol = faer::linalg::solvers::Solve::solve(&p.llt(Side::Lower).unwrap(), xty);
        let theta: Vec<f64> = (0..m).map(|a| sol[(a, 0)]).collect();
        let rss: f64 = (0..n)
            .map(|i| (y[i] - (0..m).map(|j| x[i * m + j] * theta[j]).sum::<f64>()).powi(2))
            .sum();
        let ll = -0.5 * n as f64 * (2.0 * std::f64::consts::PI * s2).ln() - rss / (2.0 * s2);
        (theta, ll, rss, g)
    }

    /// At the exact posterior mode, the Laplace evidence of a linear-Gaussian model is the
    /// exact evidence (to rounding), for any δ and σ.
    #[test]
    fn laplace_evidence_is_exact_for_linear_gaussian_models() {
        let (m, s2) = (4, 0.3);
        let (x, y) = problem(30, m, 1);
        for delta in [0.01, 0.5, 3.0, 100.0] {
            let (theta, ll, _, g) = fit(&x, &y, m, delta, s2);
            let h: Vec<f64> = g.iter().map(|v| v / s2).collect();
            let eig = curvature_eigenvalues(Curvature::Dense { h: &h, m }).unwrap();
            let sq: f64 = theta.iter().map(|t| t * t).sum();
            let le = log_evidence(ll, sq, &eig, delta);
            let ex = exact(&x, &y, m, delta, s2);
            assert!((le - ex).abs() < 1e-9 * ex.abs(), "δ {delta}: {le} vs {ex}");
        }
    }

    /// Refitting the mode and re-optimising δ converges to the δ that maximises the exact
    /// evidence (type-II maximum likelihood), found here by a fine search on the closed
    /// form; the optimum of each post-hoc step satisfies `δ‖θ‖² = γ`. Three data sets.
    #[test]
    fn prior_precision_reaches_the_exact_evidence_maximum() {
        for seed in 0..3 {
            let (m, s2) = (5, 0.25);
            let (x, y) = problem(40, m, seed);
            let mut delta = 1.0;
            for _ in 0..200 {
                let (theta, ll, _, g) = fit(&x, &y, m, delta, s2);
                let h: Vec<f64> = g.iter().map(|v| v / s2).collect();
                let e =
                    optimize_prior_precision(ll, &theta, Curvature::Dense { h: &h, m }).unwrap();
                let sq: f64 = theta.iter().map(|t| t * t).sum();
                assert!((e.prior_precision * sq / e.effective_params - 1.0).abs() < 1e-9);
                delta = e.prior_precision;
            }
            // Golden-section search of the exact evidence in ln δ.
            let (mut a, mut b) = (-10f64, 10f64);
            let r = (5f64.sqrt() - 1.0) / 2.0;
            for _ in 0..200 {
                let (c, d) = (b - r * (b - a), a + r * (b - a));
                if exact(&x, &y, m, c.exp(), s2) > exact(&x, &y, m, d.exp(), s2) {
                    b = d;
                } else {
                    a = c;
                }
            }
            let best = (0.5 * (a + b)).exp();
            assert!(
                (delta / best - 1.0).abs() < 1e-6,
                "seed {seed}: {delta} vs {best}"
            );
        }
    }

    /// The joint (δ, σ) fixed point with refits reaches the maximum of the exact evidence
    /// over both (checked against a coordinate search on the closed form).
    #[test]
    fn prior_precision_and_noise_reach_the_exact_evidence_maximum() {
        for seed in 0..3 {
            let m = 3;
            let (x, y) = problem(50, m, 10 + seed);
            let (mut delta, mut s2) = (1.0, 1.0);
            for _ in 0..300 {
                let (theta, _, rss, g) = fit(&x, &y, m, delta, s2);
                let e = optimize_prior_precision_and_noise(
                    y.len(),
                    rss,
                    &theta,
                    Curvature::Dense { h: &g, m },
                )
                .unwrap();
                delta = e.prior_precision;
                s2 = e.noise_sd.unwrap().powi(2);
            }
            let here = exact(&x, &y, m, delta, s2);
            // No better point in a neighbourhood (1% steps in either coordinate).
            for (fd, fs) in [(1.01, 1.0), (0.99, 1.0), (1.0, 1.01), (1.0, 0.99)] {
                assert!(
                    exact(&x, &y, m, delta * fd, s2 * fs) < here,
                    "seed {seed}: ({delta}, {s2}) is not a maximum"
                );
            }
            // And the Laplace evidence reported there is the exact one.
            let (theta, _, rss, g) = fit(&x, &y, m, delta, s2);
            let e = optimize_prior_precision_and_noise(
                y.len(),
                rss,
                &theta,
                Curvature::Dense { h: &g, m },
            )
            .unwrap();
            assert!((e.log_evidence - here).abs() < 1e-6 * here.abs());
        }
    }

    #[test]
    fn degenerate_inputs_are_typed_errors() {
        let h = [1.0, 0.0, 0.0, -1.0];
        assert!(
            optimize_prior_precision(0.0, &[1.0, 1.0], Curvature::Dense { h: &h, m: 2 }).is_err()
        );
        assert!(optimize_prior_precision(0.0, &[0.0, 0.0], Curvature::Diag(&[1.0, 2.0])).is_err());
        assert!(optimize_prior_precision(0.0, &[1.0, 1.0], Curvature::Diag(&[0.0, 0.0])).is_err());
        assert!(optimize_prior_precision(0.0, &[1.0], Curvature::Diag(&[1.0, 2.0])).is_err());
        assert!(optimize_prior_precision(f64::NAN, &[1.0], Curvature::Diag(&[1.0])).is_err());
        assert!(
            optimize_prior_precision_and_noise(1, 1.0, &[1.0], Curvature::Diag(&[1.0])).is_err()
        );
        assert!(
            optimize_prior_precision_and_noise(5, 0.0, &[1.0], Curvature::Diag(&[1.0])).is_err()
        );
        // A diagonal curvature: the fixed point by hand for one parameter, λ = 4, θ = 1:
        // δ = 4/(4 + δ) → δ² + 4δ − 4 = 0 → δ = 2(√2 − 1).
        let e = optimize_prior_precision(-3.0, &[1.0], Curvature::Diag(&[4.0])).unwrap();
        assert!((e.prior_precision - 2.0 * (2f64.sqrt() - 1.0)).abs() < 1e-10);
    }
}
