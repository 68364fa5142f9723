//! MCMC convergence diagnostics: autocorrelation, effective sample size,
//! R-hat, Monte Carlo standard errors and the kernelised Stein discrepancy.
//!
//! Every function is pure. The chain diagnostics take the draws of **one
//! scalar quantity** as `chains: &[&[f64]]`, one slice per chain, all of the
//! same length (at least [`MIN_DRAWS`] draws, all finite). Bad input is an
//! [`Error::Data`] (empty input, too few draws, a non-finite draw) or an
//! [`Error::DimensionMismatch`] (chains of unequal length), never a panic.
//!
//! The estimators follow Vehtari, Gelman, Simpson, Carpenter and Bürkner
//! (2021), "Rank-normalization, folding, and localization: an improved R-hat
//! for assessing convergence of MCMC", *Bayesian Analysis* 16(2), and match
//! ArviZ 0.22 (`arviz.ess`, `arviz.rhat`, `arviz.mcse`) number for number
//! (see the reference test at the bottom of this file):
//!
//! * chains are **split** in halves (first `n/2` and last `n/2` draws, the
//!   middle draw of an odd-length chain is dropped), so `m` chains become `2m`;
//! * the multi-chain autocorrelation at lag `t` is
//!   `rho_t = 1 - (W - mean_c acov_c(t)) / var_plus`, with `W` the mean
//!   within-chain variance and `var_plus = W (n-1)/n + B/n`;
//! * Geyer's initial positive sequence truncates the sum of `rho_t`, the
//!   initial monotone sequence smooths it, `tau = -1 + 2 sum rho_t`, and
//!   `ESS = m n / max(tau, 1/log10(m n))` (so `ESS <= m n log10(m n)`);
//! * **rank normalisation** replaces every draw by
//!   `Phi^-1((r - 3/8) / (S + 1/4))` where `r` is its average (fractional) rank
//!   among all `S` draws of all chains.
//!
//! | function | what |
//! |---|---|
//! | [`ess_basic`] | ESS of the mean: split chains, no rank normalisation (posterior's `ess_basic`, ArviZ `method="mean"`) |
//! | [`ess_bulk`] | split, rank-normalised ESS |
//! | [`ess_tail`] | min of the ESS of `I(x <= q05)` and `I(x <= q95)` on split chains |
//! | [`ess_quantile`] | ESS of `I(x <= q_p)` on split chains |
//! | [`rhat`] | rank-normalised split R-hat, max of bulk and folded (`|x - median|`) |
//! | [`rhat_basic`] | classic split R-hat (Gelman-Rubin on split chains) |
//! | [`mcse_mean`], [`mcse_sd`], [`mcse_quantile`] | Monte Carlo standard errors |
//! | [`summarize`] | all of the above in one [`Summary`] |
//! | [`ksd_imq`] | kernelised Stein discrepancy with the IMQ kernel (multivariate samples) |
//!
//! **Constant chains.** The ESS of constant draws is the number of draws (as
//! ArviZ). R-hat of draws that are all equal is `0/0`: [`rhat`] and
//! [`rhat_basic`] return `Ok(f64::NAN)` (not an error, as ArviZ). Chains that
//! are each constant but differ from each other give `R-hat = +inf`.
//! [`mcse_sd`] of constant draws is `0` (ArviZ gives NaN).
//!
//! A single chain is accepted everywhere: split, it gives two chains, so
//! split R-hat still measures the drift between its halves (Stan does the
//! same; ArviZ returns NaN for R-hat of one chain).

use crate::{Error, Result};
use rustfft::{num_complex::Complex, FftPlanner};
use serde::{Deserialize, Serialize};

/// The fewest draws per chain the chain diagnostics accept.
pub const MIN_DRAWS: usize = 4;

// ---------------------------------------------------------------------------
// Autocorrelation
// ---------------------------------------------------------------------------

/// Biased autocovariance of `x` at lags `0..n` (divided by `n`, the mean
/// removed), computed with a zero-padded FFT in O(n log n).
///
/// `acov[t] = (1/n) sum_{i < n-t} (x_i - xbar)(x_{i+t} - xbar)`.
/// An empty input gives an empty vector.
pub fn autocovariance(x: &[f64]) -> Vec<f64> {
    let n = x.len();
    if n == 0 {
        return Vec::new();
    }
    let mean = x.iter().sum::<f64>() / n as f64;
    // Zero-padding to >= 2n removes the circular wrap-around.
    let m = (2 * n).next_power_of_two();
    let mut buf: Vec<Complex<f64>> = Vec::with_capacity(m);
    buf.extend(x.iter().map(|&v| Complex::new(v - mean, 0.0)));
    buf.resize(m, Complex::new(0.0, 0.0));
    let mut planner = FftPlanner::<f64>::new();
    planner.plan_fft_forward(m).process(&mut buf);
    for z in buf.iter_mut() {
        *z = Complex::new(z.norm_sqr(), 0.0);
    }
    planner.plan_fft_inverse(m).process(&mut buf);
    // rustfft does not normalise: inverse(forward(y)) = m y.
    let scale = 1.0 / (m as f64 * n as f64);
    buf[..n].iter().map(|z| z.re * scale).collect()
}

/// Autocorrelation of `x` at lags `0..n` (`acov[t] / acov[0]`), by FFT in
/// O(n log n). An empty input gives an empty vector; a constant input has
/// zero variance and gives NaN at every lag.
pub fn autocorrelation(x: &[f64]) -> Vec<f64> {
    let mut acov = autocovariance(x);
    if let Some(&c0) = acov.first() {
        for a in acov.iter_mut() {
            *a /= c0;
        }
    }
    acov
}

// ---------------------------------------------------------------------------
// Input handling
// ---------------------------------------------------------------------------

/// Checks the chains; returns `(n_chains, n_draws)`.
fn validate(chains: &[&[f64]]) -> Result<(usize, usize)> {
    let Some(first) = chains.first() else {
        return Err(Error::Data("no chains given".into()));
    };
    let n = first.len();
    for (c, ch) in chains.iter().enumerate() {
        if ch.len() != n {
            return Err(Error::DimensionMismatch {
                what: "draws per chain",
                expected: n,
                got: ch.len(),
            });
        }
        if let Some(i) = ch.iter().position(|v| !v.is_finite()) {
            return Err(Error::Data(format!(
                "draw {i} of chain {c} is not finite ({})",
                ch[i]
            )));
        }
    }
    if n < MIN_DRAWS {
        return Err(Error::Data(format!(
            "need at least {MIN_DRAWS} draws per chain, got {n}"
        )));
    }
    Ok((chains.len(), n))
}

/// First `n/2` and last `n/2` draws of every chain, as separate chains.
fn split_chains(chains: &[&[f64]]) -> Vec<Vec<f64>> {
    let n = chains[0].len();
    let half = n / 2;
    let mut out = Vec::with_capacity(2 * chains.len());
    for ch in chains {
        out.push(ch[..half].to_vec());
    }
    for ch in chains {
        out.push(ch[n - half..].to_vec());
    }
    out
}

fn map_chains(chains: &[Vec<f64>], f: impl Fn(f64) -> f64) -> Vec<Vec<f64>> {
    chains
        .iter()
        .map(|c| c.iter().map(|&v| f(v)).collect())
        .collect()
}

fn all_draws(chains: &[&[f64]]) -> Vec<f64> {
    chains.iter().flat_map(|c| c.iter().copied()).collect()
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Sample variance with `ddof = 1`.
fn var1(x: &[f64]) -> f64 {
    let m = mean(x);
    x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() as f64 - 1.0)
}

/// Quantile of sorted data, linear interpolation (R type 7, NumPy default).
fn quantile_sorted(sorted: &[f64], p: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * p;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

fn sorted_copy(x: &[f64]) -> Vec<f64> {
    let mut s = x.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// Rank-normalises all draws jointly: average ranks `r` over all `S` draws,
/// then `Phi^-1((r - 3/8) / (S + 1/4))`.
fn z_scale(chains: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let flat: Vec<f64> = chains.iter().flatten().copied().collect();
    let s = flat.len();
    let mut idx: Vec<usize> = (0..s).collect();
    idx.sort_by(|&a, &b| flat[a].total_cmp(&flat[b]));
    let mut z = vec![0.0; s];
    let mut start = 0;
    while start < s {
        let mut end = start;
        while end + 1 < s && flat[idx[end + 1]] == flat[idx[start]] {
            end += 1;
        }
        // 1-based ranks start+1 ..= end+1 share their average.
        let rank = (start + end + 2) as f64 / 2.0;
        let zv = inverse_normal_cdf((rank - 0.375) / (s as f64 + 0.25));
        for &i in &idx[start..=end] {
            z[i] = zv;
        }
        start = end + 1;
    }
    let n = chains[0].len();
    z.chunks(n).map(|c| c.to_vec()).collect()
}

// ---------------------------------------------------------------------------
// ESS and R-hat kernels (on already split / transformed chains)
// ---------------------------------------------------------------------------

/// Geyer's initial monotone sequence ESS over chains of equal length >= 2
/// (ArviZ `_ess`).
fn ess_raw(chains: &[Vec<f64>]) -> f64 {
    let m = chains.len();
    let n = chains[0].len();
    let total = (m * n) as f64;
    let (lo, hi) = chains
        .iter()
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if hi - lo < 1e-15 {
        return total;
    }
    let acov: Vec<Vec<f64>> = chains.iter().map(|c| autocovariance(c)).collect();
    let chain_means: Vec<f64> = chains.iter().map(|c| mean(c)).collect();
    let nf = n as f64;
    let mean_acov = |t: usize| acov.iter().map(|a| a[t]).sum::<f64>() / m as f64;
    let mean_var = mean_acov(0) * nf / (nf - 1.0);
    let mut var_plus = mean_var * (nf - 1.0) / nf;
    if m > 1 {
        var_plus += var1(&chain_means);
    }
    let rho = |t: usize| 1.0 - (mean_var - mean_acov(t)) / var_plus;

    let mut rho_hat = vec![0.0; n];
    let mut even = 1.0;
    rho_hat[0] = even;
    let mut odd = rho(1);
    rho_hat[1] = odd;
    // Geyer's initial positive sequence.
    let mut t = 1usize;
    while t + 3 < n && even + odd > 0.0 {
        even = rho(t + 1);
        odd = rho(t + 2);
        if even + odd >= 0.0 {
            rho_hat[t + 1] = even;
            rho_hat[t + 2] = odd;
        }
        t += 2;
    }
    // max_t may be -1 when the loop never ran (as in ArviZ).
    let max_t = t as isize - 2;
    if even > 0.0 {
        rho_hat[(max_t + 1) as usize] = even;
    }
    // Geyer's initial monotone sequence.
    let mut t = 1isize;
    while t <= max_t - 2 {
        let (a, b) = (t as usize - 1, t as usize);
        if rho_hat[b + 1] + rho_hat[b + 2] > rho_hat[a] + rho_hat[b] {
            rho_hat[b + 1] = (rho_hat[a] + rho_hat[b]) / 2.0;
            rho_hat[b + 2] = rho_hat[b + 1];
        }
        t += 2;
    }
    let upto = (max_t + 1) as usize; // exclusive end of the doubled sum
    let tau = -1.0 + 2.0 * rho_hat[..upto].iter().sum::<f64>() + rho_hat[upto];
    let tau = tau.max(1.0 / total.log10());
    if rho_hat.iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    total / tau
}

/// Classic R-hat of chains of equal length (ArviZ `_rhat`).
fn rhat_raw(chains: &[Vec<f64>]) -> f64 {
    let n = chains[0].len() as f64;
    let means: Vec<f64> = chains.iter().map(|c| mean(c)).collect();
    let vars: Vec<f64> = chains.iter().map(|c| var1(c)).collect();
    let b = n * var1(&means);
    let w = mean(&vars);
    ((b / w + n - 1.0) / n).sqrt()
}

fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn indicator_chains(chains: &[&[f64]], threshold: f64) -> Vec<Vec<f64>> {
    chains
        .iter()
        .map(|c| {
            c.iter()
                .map(|&v| if v <= threshold { 1.0 } else { 0.0 })
                .collect()
        })
        .collect()
}

fn ess_quantile_validated(chains: &[&[f64]], sorted_all: &[f64], p: f64) -> f64 {
    let q = quantile_sorted(sorted_all, p);
    let ind = indicator_chains(chains, q);
    let refs: Vec<&[f64]> = ind.iter().map(|c| c.as_slice()).collect();
    ess_raw(&split_chains(&refs))
}

fn check_prob(p: f64) -> Result<()> {
    if p.is_finite() && p > 0.0 && p < 1.0 {
        Ok(())
    } else {
        Err(Error::config("p", format!("must lie in (0, 1), got {p}")))
    }
}

// ---------------------------------------------------------------------------
// Public chain diagnostics
// ---------------------------------------------------------------------------

/// Geyer's initial monotone sequence ESS of the chains **as given** (no
/// splitting, no rank normalisation). Prefer [`ess_basic`] or [`ess_bulk`];
/// this is the building block they share.
pub fn ess_geyer(chains: &[&[f64]]) -> Result<f64> {
    validate(chains)?;
    let owned: Vec<Vec<f64>> = chains.iter().map(|c| c.to_vec()).collect();
    Ok(ess_raw(&owned))
}

/// ESS for the mean: Geyer's estimator on split chains, without rank
/// normalisation (posterior's `ess_basic`, ArviZ `ess(method="mean")`).
pub fn ess_basic(chains: &[&[f64]]) -> Result<f64> {
    validate(chains)?;
    Ok(ess_raw(&split_chains(chains)))
}

/// Bulk ESS: Geyer's estimator on split, rank-normalised chains.
pub fn ess_bulk(chains: &[&[f64]]) -> Result<f64> {
    validate(chains)?;
    Ok(ess_raw(&z_scale(&split_chains(chains))))
}

/// ESS of the `p`-quantile: ESS of the indicator `I(x <= q_p)` on split
/// chains, `q_p` the (type 7) quantile of all draws. `p` must lie in (0, 1).
pub fn ess_quantile(chains: &[&[f64]], p: f64) -> Result<f64> {
    validate(chains)?;
    check_prob(p)?;
    Ok(ess_quantile_validated(
        chains,
        &sorted_copy(&all_draws(chains)),
        p,
    ))
}

/// Tail ESS: the smaller of the 5% and 95% quantile ESS.
pub fn ess_tail(chains: &[&[f64]]) -> Result<f64> {
    validate(chains)?;
    Ok(ess_tail_validated(chains, &sorted_copy(&all_draws(chains))))
}

fn ess_tail_validated(chains: &[&[f64]], sorted_all: &[f64]) -> f64 {
    let lo = ess_quantile_validated(chains, sorted_all, 0.05);
    let hi = ess_quantile_validated(chains, sorted_all, 0.95);
    if lo.is_nan() || hi.is_nan() {
        f64::NAN
    } else {
        lo.min(hi)
    }
}

/// Rank-normalised split R-hat (Vehtari et al. 2021): the larger of the
/// R-hat of the rank-normalised split chains and of the rank-normalised
/// folded split chains `|x - median|`. Well-mixed chains give values below
/// 1.01. Draws that are all equal give `Ok(NaN)`.
pub fn rhat(chains: &[&[f64]]) -> Result<f64> {
    validate(chains)?;
    let split = split_chains(chains);
    let bulk = rhat_raw(&z_scale(&split));
    let flat: Vec<f64> = split.iter().flatten().copied().collect();
    let med = quantile_sorted(&sorted_copy(&flat), 0.5);
    let folded = map_chains(&split, |v| (v - med).abs());
    let tail = rhat_raw(&z_scale(&folded));
    Ok(nan_max(bulk, tail))
}

/// Classic split R-hat (Gelman-Rubin on split chains, no rank
/// normalisation). Draws that are all equal give `Ok(NaN)`.
pub fn rhat_basic(chains: &[&[f64]]) -> Result<f64> {
    validate(chains)?;
    Ok(rhat_raw(&split_chains(chains)))
}

/// Monte Carlo standard error of the mean: `sd / sqrt(ess_basic)`, `sd` the
/// standard deviation (ddof 1) of all draws.
pub fn mcse_mean(chains: &[&[f64]]) -> Result<f64> {
    validate(chains)?;
    let sd = var1(&all_draws(chains)).sqrt();
    Ok(sd / ess_raw(&split_chains(chains)).sqrt())
}

/// Monte Carlo standard error of the standard deviation (posterior /
/// ArviZ 0.22): with `c_i = (x_i - xbar)^2`, `E = mean c`,
/// `var(E) = (mean c^2 - E^2) / ess_basic(c)` and, by the delta method,
/// `mcse_sd = sqrt(var(E) / (4 E))`. Constant draws give 0.
pub fn mcse_sd(chains: &[&[f64]]) -> Result<f64> {
    validate(chains)?;
    let all = all_draws(chains);
    let xbar = mean(&all);
    let sq: Vec<Vec<f64>> = chains
        .iter()
        .map(|c| c.iter().map(|v| (v - xbar) * (v - xbar)).collect())
        .collect();
    let refs: Vec<&[f64]> = sq.iter().map(|c| c.as_slice()).collect();
    let ess = ess_raw(&split_chains(&refs));
    let flat: Vec<f64> = sq.iter().flatten().copied().collect();
    let evar = mean(&flat);
    if evar == 0.0 {
        return Ok(0.0);
    }
    let varvar = (flat.iter().map(|v| v * v).sum::<f64>() / flat.len() as f64 - evar * evar) / ess;
    Ok((varvar / evar / 4.0).sqrt())
}

/// Monte Carlo standard error of the `p`-quantile (ArviZ 0.22 / posterior):
/// with `ess = ess_quantile(p)`, take the Beta(`ess p + 1`,
/// `ess (1-p) + 1`) quantiles at `Phi(-1)` and `Phi(1)`, map them to order
/// statistics of all `S` draws (`floor`/`ceil` of `ppf S - 1`) and return
/// half the distance between those two draws. `p` must lie in (0, 1).
pub fn mcse_quantile(chains: &[&[f64]], p: f64) -> Result<f64> {
    validate(chains)?;
    check_prob(p)?;
    let sorted = sorted_copy(&all_draws(chains));
    let ess = ess_quantile_validated(chains, &sorted, p);
    let (a, b) = (ess * p + 1.0, ess * (1.0 - p) + 1.0);
    let size = sorted.len();
    let lo = beta_ppf(0.158_655_3, a, b) * size as f64 - 1.0;
    let hi = beta_ppf(0.841_344_7, a, b) * size as f64 - 1.0;
    let i1 = lo.max(0.0).floor() as usize;
    let i2 = (hi.min(size as f64 - 1.0).ceil().max(0.0) as usize).min(size - 1);
    Ok((sorted[i2] - sorted[i1.min(size - 1)]) / 2.0)
}

/// Posterior summary of one scalar quantity.
///
/// Serialised with serde; a NaN field (for example `rhat` of constant draws)
/// is written as `null` and read back as NaN.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Mean of all draws.
    #[serde(with = "nan_as_null")]
    pub mean: f64,
    /// Standard deviation of all draws (ddof 1).
    #[serde(with = "nan_as_null")]
    pub sd: f64,
    /// [`ess_bulk`].
    #[serde(with = "nan_as_null")]
    pub ess_bulk: f64,
    /// [`ess_tail`].
    #[serde(with = "nan_as_null")]
    pub ess_tail: f64,
    /// [`rhat`] (rank-normalised split R-hat).
    #[serde(with = "nan_as_null")]
    pub rhat: f64,
    /// [`mcse_mean`].
    #[serde(with = "nan_as_null")]
    pub mcse_mean: f64,
    /// [`mcse_sd`].
    #[serde(with = "nan_as_null")]
    pub mcse_sd: f64,
    /// 5% quantile of all draws (linear interpolation).
    #[serde(with = "nan_as_null")]
    pub q05: f64,
    /// Median of all draws.
    #[serde(with = "nan_as_null")]
    pub q50: f64,
    /// 95% quantile of all draws.
    #[serde(with = "nan_as_null")]
    pub q95: f64,
}

mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_nan() {
            s.serialize_none()
        } else {
            s.serialize_some(v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// All the chain diagnostics of one scalar quantity at once.
pub fn summarize(chains: &[&[f64]]) -> Result<Summary> {
    validate(chains)?;
    let all = all_draws(chains);
    let sorted = sorted_copy(&all);
    Ok(Summary {
        mean: mean(&all),
        sd: var1(&all).sqrt(),
        ess_bulk: ess_raw(&z_scale(&split_chains(chains))),
        ess_tail: ess_tail_validated(chains, &sorted),
        rhat: rhat(chains)?,
        mcse_mean: mcse_mean(chains)?,
        mcse_sd: mcse_sd(chains)?,
        q05: quantile_sorted(&sorted, 0.05),
        q50: quantile_sorted(&sorted, 0.5),
        q95: quantile_sorted(&sorted, 0.95),
    })
}

// ---------------------------------------------------------------------------
// Kernelised Stein discrepancy
// ---------------------------------------------------------------------------

/// Stein kernel of the IMQ base kernel `k(x, y) = (c^2 + |x - y|^2)^beta`
/// for a target with score `s = grad log p`:
///
/// `k_p(x, y) = <s_x, s_y> k + <s_x, grad_y k> + <s_y, grad_x k> + tr(grad_x grad_y k)`
///
/// which for IMQ, with `r = x - y` and `u = c^2 + |r|^2`, is
///
/// `k_p = <s_x, s_y> u^beta - 2 beta u^(beta-1) <s_x - s_y, r>
///        - 4 beta (beta - 1) u^(beta-2) |r|^2 - 2 beta d u^(beta-1)`.
///
/// Inputs are not checked here (all four slices must have the same length);
/// [`ksd_imq`] validates.
pub fn stein_kernel_imq(x: &[f64], sx: &[f64], y: &[f64], sy: &[f64], c: f64, beta: f64) -> f64 {
    let d = x.len();
    let (mut r2, mut ss, mut dsr) = (0.0, 0.0, 0.0);
    for k in 0..d {
        let r = x[k] - y[k];
        r2 += r * r;
        ss += sx[k] * sy[k];
        dsr += (sx[k] - sy[k]) * r;
    }
    let u = c * c + r2;
    let ub1 = u.powf(beta - 1.0);
    let ub = ub1 * u;
    let ub2 = ub1 / u;
    ss * ub
        - 2.0 * beta * ub1 * dsr
        - 4.0 * beta * (beta - 1.0) * ub2 * r2
        - 2.0 * beta * d as f64 * ub1
}

/// Kernelised Stein discrepancy (Gorham & Mackey 2017; Liu, Lee & Jordan
/// 2016) of the samples `x_1..x_n` (rows of `samples`, dimension `d`) from
/// the target whose score `grad log p(x_i)` is row `i` of `grad_log_p`,
/// with the IMQ kernel `(c^2 + |x - y|^2)^beta`.
///
/// Returns the V-statistic `sqrt((1/n^2) sum_{i,j} k_p(x_i, x_j))`
/// (see [`stein_kernel_imq`]), which is >= 0 and tends to 0 as `n` grows
/// exactly when the samples come from `p` (for `beta` in (-1, 0)). Usual
/// choice: `c = 1`, `beta = -0.5`. Cost O(n^2 d), parallel over rows with
/// rayon and deterministic.
///
/// Errors: no samples, rows of different dimension, `grad_log_p` of a
/// different shape, non-finite entries, `c <= 0` or `beta >= 0`.
pub fn ksd_imq(samples: &[Vec<f64>], grad_log_p: &[Vec<f64>], c: f64, beta: f64) -> Result<f64> {
    use rayon::prelude::*;
    let n = samples.len();
    if n == 0 {
        return Err(Error::Data("ksd_imq: no samples".into()));
    }
    if grad_log_p.len() != n {
        return Err(Error::DimensionMismatch {
            what: "ksd_imq: rows of grad_log_p",
            expected: n,
            got: grad_log_p.len(),
        });
    }
    let d = samples[0].len();
    if d == 0 {
        return Err(Error::Data("ksd_imq: samples have dimension 0".into()));
    }
    for (i, (x, s)) in samples.iter().zip(grad_log_p).enumerate() {
        for (what, row) in [
            ("ksd_imq: sample dimension", x),
            ("ksd_imq: score dimension", s),
        ] {
            if row.len() != d {
                return Err(Error::DimensionMismatch {
                    what,
                    expected: d,
                    got: row.len(),
                });
            }
        }
        if x.iter().chain(s).any(|v| !v.is_finite()) {
            return Err(Error::Data(format!(
                "ksd_imq: row {i} has a non-finite sample or score"
            )));
        }
    }
    if !(c.is_finite() && c > 0.0) {
        return Err(Error::config(
            "c",
            format!("must be finite and > 0, got {c}"),
        ));
    }
    if !(beta.is_finite() && beta < 0.0) {
        return Err(Error::config(
            "beta",
            format!("must be finite and < 0, got {beta}"),
        ));
    }
    // Row sums over j >= i (symmetric kernel), then a fixed-order total.
    let rows: Vec<f64> = (0..n)
        .into_par_iter()
        .map(|i| {
            let (xi, si) = (&samples[i], &grad_log_p[i]);
            let diag = stein_kernel_imq(xi, si, xi, si, c, beta);
            let off: f64 = (i + 1..n)
                .map(|j| stein_kernel_imq(xi, si, &samples[j], &grad_log_p[j], c, beta))
                .sum();
            diag + 2.0 * off
        })
        .collect();
    let v = rows.iter().sum::<f64>() / (n as f64 * n as f64);
    // The V-statistic is a PSD quadratic form; clip round-off below zero.
    Ok(v.max(0.0).sqrt())
}

// ---------------------------------------------------------------------------
// Special functions
// ---------------------------------------------------------------------------

/// Inverse of the standard normal CDF (Wichura 1988, AS 241 `PPND16`,
/// relative accuracy about 1e-16). `p` outside (0, 1) gives `-inf`, `+inf`
/// or NaN.
#[allow(clippy::excessive_precision)] // the published coefficients, verbatim
pub fn inverse_normal_cdf(p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    fn poly(c: &[f64], x: f64) -> f64 {
        c.iter().rev().fold(0.0, |acc, &v| acc * x + v)
    }
    const A: [f64; 8] = [
        3.387_132_872_796_366_608,
        1.331_416_678_917_843_774_5e2,
        1.971_590_950_306_551_442_7e3,
        1.373_169_376_550_946_112_5e4,
        4.592_195_393_154_987_145_7e4,
        6.726_577_092_700_870_085_3e4,
        3.343_057_558_358_812_810_5e4,
        2.509_080_928_730_122_672_7e3,
    ];
    const B: [f64; 8] = [
        1.0,
        4.231_333_070_160_091_125_2e1,
        6.871_870_074_920_579_083e2,
        5.394_196_021_424_751_107_7e3,
        2.121_379_430_158_659_586_7e4,
        3.930_789_580_009_271_061e4,
        2.872_908_573_572_194_267_4e4,
        5.226_495_278_852_854_561e3,
    ];
    const C: [f64; 8] = [
        1.423_437_110_749_683_577_34,
        4.630_337_846_156_545_295_9,
        5.769_497_221_460_691_405_5,
        3.647_848_324_763_204_605_04,
        1.270_458_252_452_368_382_58,
        2.417_807_251_774_506_117_7e-1,
        2.272_384_498_926_918_458_33e-2,
        7.745_450_142_783_414_076_4e-4,
    ];
    const D: [f64; 8] = [
        1.0,
        2.053_191_626_637_758_821_87,
        1.676_384_830_183_803_849_4,
        6.897_673_349_851_000_045_5e-1,
        1.481_039_764_274_800_745_9e-1,
        1.519_866_656_361_645_719_66e-2,
        5.475_938_084_995_344_946e-4,
        1.050_750_071_644_416_843_24e-9,
    ];
    const E: [f64; 8] = [
        6.657_904_643_501_103_777_2,
        5.463_784_911_164_114_369_9,
        1.784_826_539_917_291_335_8,
        2.965_605_718_285_048_912_3e-1,
        2.653_218_952_657_612_309_3e-2,
        1.242_660_947_388_078_438_6e-3,
        2.711_555_568_743_487_578_15e-5,
        2.010_334_399_292_288_132_65e-7,
    ];
    const F: [f64; 8] = [
        1.0,
        5.998_322_065_558_879_376_9e-1,
        1.369_298_809_227_358_053_1e-1,
        1.487_536_129_085_061_485_25e-2,
        7.868_691_311_456_132_591e-4,
        1.846_318_317_510_054_681_8e-5,
        1.421_511_758_316_445_888_7e-7,
        2.044_263_103_389_939_785_64e-15,
    ];
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q * poly(&A, r) / poly(&B, r);
    }
    let r = if q < 0.0 { p } else { 1.0 - p };
    let r = (-r.ln()).sqrt();
    let x = if r <= 5.0 {
        let r = r - 1.6;
        poly(&C, r) / poly(&D, r)
    } else {
        let r = r - 5.0;
        poly(&E, r) / poly(&F, r)
    };
    if q < 0.0 {
        -x
    } else {
        x
    }
}

/// ln Gamma(x) for x > 0 (Lanczos, g = 7, n = 9; relative error ~1e-15).
#[allow(clippy::excessive_precision)] // the published coefficients, verbatim
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_93,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_13,
        -176.615_029_162_140_59,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_571_6e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = COEF[0];
    let t = x + G + 0.5;
    for (i, &c) in COEF.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Continued fraction of the incomplete beta function (modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..20_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// Regularised incomplete beta function I_x(a, b).
fn beta_cdf(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

/// Quantile of Beta(a, b) by bisection on the CDF (a, b > 0).
fn beta_ppf(p: f64, a: f64, b: f64) -> f64 {
    if !(a > 0.0 && b > 0.0) {
        return f64::NAN;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if beta_cdf(mid, a, b) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-16 {
            break;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain_rng;
    use proptest::prelude::*;
    use rand::Rng;
    use rand_distr::StandardNormal;

    fn refs(v: &[Vec<f64>]) -> Vec<&[f64]> {
        v.iter().map(|c| c.as_slice()).collect()
    }

    /// AR(1) chains x_t = rho x_{t-1} + sqrt(1 - rho^2) e_t, started in the
    /// stationary N(0, 1).
    fn ar1(seed: u64, n_chains: usize, n: usize, rho: f64) -> Vec<Vec<f64>> {
        let s = (1.0 - rho * rho).sqrt();
        (0..n_chains)
            .map(|c| {
                let mut rng = chain_rng(seed, c as u64);
                let mut x: f64 = rng.sample(StandardNormal);
                (0..n)
                    .map(|_| {
                        let e: f64 = rng.sample(StandardNormal);
                        x = rho * x + s * e;
                        x
                    })
                    .collect()
            })
            .collect()
    }

    fn naive_autocorrelation(x: &[f64]) -> Vec<f64> {
        let n = x.len();
        let m = x.iter().sum::<f64>() / n as f64;
        let acov: Vec<f64> = (0..n)
            .map(|t| (0..n - t).map(|i| (x[i] - m) * (x[i + t] - m)).sum::<f64>() / n as f64)
            .collect();
        acov.iter().map(|a| a / acov[0]).collect()
    }

    // The same deterministic inputs as the ArviZ script quoted in
    // `matches_arviz_reference_values`.
    fn make(kind: &str) -> Vec<Vec<f64>> {
        (0..4)
            .map(|c| {
                let cf = c as f64;
                let mut y = 0.1 * cf;
                (0..20)
                    .map(|i| {
                        let fi = i as f64;
                        match kind {
                            "smooth" => {
                                (0.7 * fi + 1.3 * cf).sin()
                                    + 0.1 * cf
                                    + 0.05 * ((7 * i + 3 * c) % 5) as f64
                            }
                            "tied" => {
                                (4.0 * ((0.7 * fi + 1.3 * cf).sin() + 0.1 * cf)).round() / 4.0
                            }
                            _ => {
                                y = 0.8 * y + (1.7 * fi + cf).sin();
                                y
                            }
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// Reference values from ArviZ 0.22.0 (NumPy 2, SciPy 1.x), produced by
    ///
    /// ```python
    /// import numpy as np, arviz as az
    /// from scipy import stats
    /// def make(kind, m=4, n=20):
    ///     x = np.zeros((m, n))
    ///     for c in range(m):
    ///         y = 0.1 * c
    ///         for i in range(n):
    ///             if kind == "smooth":
    ///                 x[c, i] = np.sin(0.7 * i + 1.3 * c) + 0.1 * c + 0.05 * ((7 * i + 3 * c) % 5)
    ///             elif kind == "tied":
    ///                 x[c, i] = np.round(4.0 * (np.sin(0.7 * i + 1.3 * c) + 0.1 * c)) / 4.0
    ///             else:  # "ar"
    ///                 y = 0.8 * y + np.sin(1.7 * i + c)
    ///                 x[c, i] = y
    ///     return x
    /// for kind in ["smooth", "tied", "ar"]:
    ///     x = make(kind)
    ///     vals = [az.ess(x, method="mean"), az.ess(x, method="bulk"), az.ess(x, method="tail"),
    ///             az.ess(x, method="quantile", prob=0.3), az.rhat(x, method="rank"),
    ///             az.rhat(x, method="split"), az.mcse(x, method="mean"), az.mcse(x, method="sd"),
    ///             az.mcse(x, method="quantile", prob=0.3)]
    ///     print(kind, [float(v) for v in vals])
    /// ```
    #[test]
    fn matches_arviz_reference_values() {
        let cases: [(&str, [f64; 9]); 3] = [
            (
                "smooth",
                [
                    35.733108847326136,
                    37.61814380860101,
                    45.808383233532936,
                    46.557175478658,
                    0.9668401416712717,
                    0.9555956912763538,
                    0.11989439345153753,
                    0.0343039897645322,
                    0.2217625423885612,
                ],
            ),
            (
                "tied",
                [
                    35.44479460246411,
                    36.520038951211816,
                    73.91922815263777,
                    46.350960934555964,
                    0.965571870567264,
                    0.9566847045611611,
                    0.12206527422857313,
                    0.03642763016951712,
                    0.125,
                ],
            ),
            (
                "ar",
                [
                    101.88477174148323,
                    89.22800854866236,
                    58.266394916676646,
                    123.79298367488708,
                    1.0101601370883804,
                    0.9897215408749152,
                    0.05427731634039664,
                    0.01879070640312664,
                    0.12430569268804151,
                ],
            ),
        ];
        for (kind, want) in cases {
            let x = make(kind);
            let c = refs(&x);
            let got = [
                ess_basic(&c).unwrap(),
                ess_bulk(&c).unwrap(),
                ess_tail(&c).unwrap(),
                ess_quantile(&c, 0.3).unwrap(),
                rhat(&c).unwrap(),
                rhat_basic(&c).unwrap(),
                mcse_mean(&c).unwrap(),
                mcse_sd(&c).unwrap(),
                mcse_quantile(&c, 0.3).unwrap(),
            ];
            for (k, (g, w)) in got.iter().zip(want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-9 * w.abs().max(1.0),
                    "{kind} #{k}: got {g}, ArviZ {w}"
                );
            }
        }
    }

    #[test]
    fn inverse_normal_cdf_matches_scipy() {
        // scipy.stats.norm.ppf at these points.
        let cases = [
            (1e-300, -37.0470962993612),
            (1e-10, -6.361340902404056),
            (0.02, -2.053748910631823),
            (0.3, -0.5244005127080409),
            (0.5, 0.0),
            (0.7, 0.5244005127080407),
            (0.975, 1.959963984540054),
            (1.0 - 1e-12, 7.0344869100478356),
        ];
        for (p, want) in cases {
            let got = inverse_normal_cdf(p);
            assert!(
                (got - want).abs() <= 1e-13 * want.abs().max(1.0),
                "{p}: {got} vs {want}"
            );
        }
        assert_eq!(inverse_normal_cdf(0.0), f64::NEG_INFINITY);
        assert_eq!(inverse_normal_cdf(1.0), f64::INFINITY);
        assert!(inverse_normal_cdf(1.5).is_nan());
    }

    #[test]
    fn beta_ppf_matches_scipy() {
        // scipy.stats.beta.ppf(p, a, b).
        let cases = [
            (0.1586553, 7.2, 13.1, 0.24901067175233813),
            (0.8413447, 30.5, 4.25, 0.9316692762805041),
            (0.1586553, 2000.0, 8000.0, 0.19600015207037327),
        ];
        for (p, a, b, want) in cases {
            let got = beta_ppf(p, a, b);
            assert!(
                (got - want).abs() < 1e-12,
                "beta({a},{b}) ppf {p}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn autocorrelation_hand_example() {
        // x = [1, 2, 3, 4]: mean 2.5, centred [-1.5, -0.5, 0.5, 1.5];
        // n acov = [5, 1.25, -1.5, -2.25].
        let r = autocorrelation(&[1.0, 2.0, 3.0, 4.0]);
        let want = [1.0, 0.25, -0.3, -0.45];
        for (g, w) in r.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{r:?}");
        }
        assert!(autocorrelation(&[]).is_empty());
        assert!(autocorrelation(&[2.0; 5]).iter().all(|v| v.is_nan()));
    }

    #[test]
    fn autocorrelation_of_100k_draws_matches_ar1() {
        let x = &ar1(3, 1, 100_000, 0.9)[0];
        let t0 = std::time::Instant::now();
        let r = autocorrelation(x);
        let dt = t0.elapsed();
        assert_eq!(r.len(), 100_000);
        // rho^t; the sd of the sample autocorrelation at these lags is about
        // sqrt((1 + rho^2) / (1 - rho^2) / n) ~ 0.014.
        for t in [1usize, 2, 5, 10] {
            assert!(
                (r[t] - 0.9f64.powi(t as i32)).abs() < 0.06,
                "lag {t}: {}",
                r[t]
            );
        }
        assert!(dt.as_secs_f64() < 2.0, "FFT autocorrelation took {dt:?}");
    }

    /// ESS of AR(1) chains against the exact N (1 - rho) / (1 + rho)
    /// (4 chains x 25 000 draws, N = 100 000).
    ///
    /// Tolerance. The ESS estimate is N / tau_hat and tau_hat sums about 2M
    /// autocorrelations (M the Geyer truncation lag, a few tau). Its relative
    /// sd is roughly sqrt(2 (2M + 1) / N) (Sokal 1997): with N = 100 000 that
    /// is ~2% at rho = 0.5 (tau = 3, M ~ 10) and ~5% at rho = 0.9 (tau = 19,
    /// M ~ 60). Measured over 200 seeds (`ess_ar1_spread`, ignored): relative
    /// error mean -0.35%, sd 1.84%, worst 9.2% at rho = 0.5; mean -0.8%, sd
    /// 4.6%, worst 15.8% at rho = 0.9 (basic and bulk alike). So each seed
    /// must be within about 5 sd (10% and 23%), and the mean relative error
    /// over the five seeds (sd 0.8% and 2.1%) within about 4 of its sds
    /// (3.5% and 8.5%): a bias of a few percent in the estimator fails.
    #[test]
    fn ess_of_ar1_chains() {
        for (rho, tol_one, tol_mean) in [(0.5, 0.10, 0.035), (0.9, 0.23, 0.085)] {
            let truth = 100_000.0 * (1.0 - rho) / (1.0 + rho);
            let (mut sum_basic, mut sum_bulk) = (0.0, 0.0);
            for seed in 0..5 {
                let x = ar1(100 + seed, 4, 25_000, rho);
                let c = refs(&x);
                let basic = ess_basic(&c).unwrap() / truth - 1.0;
                let bulk = ess_bulk(&c).unwrap() / truth - 1.0;
                for (name, rel) in [("basic", basic), ("bulk", bulk)] {
                    assert!(
                        rel.abs() < tol_one,
                        "rho {rho} seed {seed} {name}: rel err {rel}"
                    );
                }
                sum_basic += basic;
                sum_bulk += bulk;
            }
            for (name, sum) in [("basic", sum_basic), ("bulk", sum_bulk)] {
                let m = sum / 5.0;
                assert!(m.abs() < tol_mean, "rho {rho} {name}: mean rel err {m}");
            }
        }
    }

    #[test]
    #[ignore = "measures the spread of the ESS estimator (slow); run with --ignored --nocapture"]
    fn ess_ar1_spread() {
        for rho in [0.5, 0.9] {
            let truth = 100_000.0 * (1.0 - rho) / (1.0 + rho);
            for name in ["basic", "bulk"] {
                let rel: Vec<f64> = (0..200)
                    .map(|seed| {
                        let x = ar1(10_000 + seed, 4, 25_000, rho);
                        let c = refs(&x);
                        let e = if name == "basic" {
                            ess_basic(&c)
                        } else {
                            ess_bulk(&c)
                        };
                        e.unwrap() / truth - 1.0
                    })
                    .collect();
                let m = mean(&rel);
                let sd = var1(&rel).sqrt();
                let worst = rel.iter().fold(0.0f64, |a, v| a.max(v.abs()));
                println!("rho {rho} {name}: mean rel err {m:.4}, sd {sd:.4}, worst {worst:.4}");
            }
        }
    }

    #[test]
    fn ess_of_iid_draws_is_about_n() {
        // For iid draws the relative sd of the ESS estimate is ~ sqrt(2 (2M+1) / N)
        // with M ~ 2 or 3: ~2.5% at N = 40 000; tolerance 10%.
        for seed in 0..3 {
            let x = ar1(seed, 4, 10_000, 0.0);
            let c = refs(&x);
            for ess in [
                ess_basic(&c).unwrap(),
                ess_bulk(&c).unwrap(),
                ess_tail(&c).unwrap(),
            ] {
                assert!((ess / 40_000.0 - 1.0).abs() < 0.1, "seed {seed}: {ess}");
            }
        }
    }

    #[test]
    fn rhat_of_mixed_and_shifted_chains() {
        for seed in 0..3 {
            let x = ar1(seed, 4, 2_000, 0.0);
            let c = refs(&x);
            let r = rhat(&c).unwrap();
            assert!(r < 1.01, "seed {seed}: well mixed rhat {r}");
            assert!(rhat_basic(&c).unwrap() < 1.01);
            // Means 0, 0, 0, delta. On the 8 split chains the variance of the
            // chain means is delta^2 * 0.214 (two of eight at delta), so the
            // population split R-hat is sqrt(1 + 0.214 delta^2): 1.10 for a
            // one-sd shift (rank normalisation shrinks it slightly) and 1.36
            // for a two-sd shift.
            for (delta, above) in [(1.0, 1.05), (2.0, 1.2)] {
                let mut shifted = x.clone();
                shifted[3].iter_mut().for_each(|v| *v += delta);
                let c = refs(&shifted);
                let r = rhat(&c).unwrap();
                assert!(r > above, "seed {seed}: shift {delta} rhat {r}");
                let rb = rhat_basic(&c).unwrap();
                assert!(rb > above, "seed {seed}: shift {delta} rhat_basic {rb}");
            }
        }
        // One chain drifting from -1 to 1: split R-hat sees it.
        let drift: Vec<f64> = (0..1000).map(|i| -1.0 + 2.0 * i as f64 / 999.0).collect();
        assert!(rhat(&[&drift]).unwrap() > 1.5);
    }

    #[test]
    fn constant_chains_are_defined() {
        let a = vec![2.0; 10];
        let c = [a.as_slice(), a.as_slice()];
        assert!(rhat(&c).unwrap().is_nan());
        assert!(rhat_basic(&c).unwrap().is_nan());
        assert_eq!(ess_basic(&c).unwrap(), 20.0);
        assert_eq!(ess_bulk(&c).unwrap(), 20.0);
        assert_eq!(ess_tail(&c).unwrap(), 20.0);
        assert_eq!(mcse_mean(&c).unwrap(), 0.0);
        assert_eq!(mcse_sd(&c).unwrap(), 0.0);
        let s = summarize(&c).unwrap();
        assert!(s.rhat.is_nan());
        assert_eq!(s.q50, 2.0);
        // Serde: NaN goes out as null and comes back as NaN.
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"rhat\":null"), "{json}");
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert!(back.rhat.is_nan());
        assert_eq!(back.mean, 2.0);
        // Each chain constant, chains different: infinitely bad mixing.
        let b = vec![3.0; 10];
        assert_eq!(rhat_basic(&[&a, &b]).unwrap(), f64::INFINITY);
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        assert!(matches!(ess_bulk(&[]), Err(Error::Data(_))));
        assert!(matches!(rhat(&[&[1.0, 2.0, 3.0]]), Err(Error::Data(_))));
        let r = ess_basic(&[&[1.0, 2.0, 3.0, 4.0], &[1.0, 2.0, 3.0]]);
        assert!(matches!(
            r,
            Err(Error::DimensionMismatch {
                expected: 4,
                got: 3,
                ..
            })
        ));
        assert!(matches!(
            summarize(&[&[1.0, f64::NAN, 3.0, 4.0]]),
            Err(Error::Data(_))
        ));
        let ok = [1.0, 2.0, 4.0, 3.0];
        assert!(matches!(
            ess_quantile(&[&ok], 1.0),
            Err(Error::InvalidConfig { .. })
        ));
        assert!(matches!(
            mcse_quantile(&[&ok], -0.1),
            Err(Error::InvalidConfig { .. })
        ));
        assert!(mcse_quantile(&[&ok], 0.5).unwrap().is_finite());
    }

    #[test]
    fn summary_of_normal_draws() {
        let x = ar1(7, 4, 5_000, 0.5);
        let s = summarize(&refs(&x)).unwrap();
        // N = 20 000 draws of N(0, 1) with ESS ~ 6 700: mcse of the mean ~ 0.012.
        assert!(s.mean.abs() < 0.05, "{s:?}");
        assert!((s.sd - 1.0).abs() < 0.05, "{s:?}");
        assert!(
            (s.q05 + 1.645).abs() < 0.1 && (s.q95 - 1.645).abs() < 0.1,
            "{s:?}"
        );
        assert!(s.q50.abs() < 0.06, "{s:?}");
        assert!(
            (s.mcse_mean - 1.0 / (20_000.0f64 / 3.0).sqrt()).abs() < 0.002,
            "{s:?}"
        );
        assert!(
            s.rhat < 1.01 && s.ess_tail > 1_000.0 && s.ess_bulk > 5_000.0,
            "{s:?}"
        );
        // mcse of the sd of an AR(1) with rho = 0.5 (squared process has
        // autocorrelation rho^(2t)): sqrt((1 + rho^2)/(1 - rho^2) / (2 N)) ~ 0.0065.
        assert!((s.mcse_sd - 0.0065).abs() < 0.002, "{s:?}");
        let q = mcse_quantile(&refs(&x), 0.5).unwrap();
        // sqrt(p (1 - p) / ess) / density(0) ~ 0.5 / 0.399 / sqrt(~7000) ~ 0.015
        assert!(q > 0.008 && q < 0.03, "mcse median {q}");
    }

    // ----- KSD -----

    fn normal_samples(seed: u64, n: usize, d: usize) -> Vec<Vec<f64>> {
        let mut rng = chain_rng(seed, 0);
        (0..n)
            .map(|_| (0..d).map(|_| rng.sample(StandardNormal)).collect())
            .collect()
    }

    fn score_normal(x: &[Vec<f64>], mu: f64) -> Vec<Vec<f64>> {
        x.iter()
            .map(|r| r.iter().map(|v| mu - v).collect())
            .collect()
    }

    #[test]
    fn ksd_small_for_true_target_and_shrinks_with_n() {
        for seed in 0..3 {
            let small = normal_samples(seed, 100, 2);
            let big = normal_samples(seed + 50, 1600, 2);
            let k_small = ksd_imq(&small, &score_normal(&small, 0.0), 1.0, -0.5).unwrap();
            let k_big = ksd_imq(&big, &score_normal(&big, 0.0), 1.0, -0.5).unwrap();
            // E[KSD^2] = E[k_p(x, x)] / n = 2 d / n for c = 1, beta = -1/2
            // (the off-diagonal terms have mean 0): ~0.2 at n = 100, ~0.05 at 1600.
            assert!(k_small < 0.4, "seed {seed}: {k_small}");
            assert!(k_big < 0.1, "seed {seed}: {k_big}");
            assert!(k_big < 0.6 * k_small, "seed {seed}: {k_big} vs {k_small}");
            // Scored against N(1, I): the population KSD is a constant > 0.
            let k_wrong = ksd_imq(&big, &score_normal(&big, 1.0), 1.0, -0.5).unwrap();
            assert!(k_wrong > 5.0 * k_big, "seed {seed}: {k_wrong} vs {k_big}");
        }
    }

    #[test]
    fn ksd_hand_example() {
        // One point: KSD^2 = k_p(x, x) = |s|^2 c^(2 beta) - 2 beta d c^(2 beta - 2).
        let x = vec![vec![0.3, -1.0]];
        let s = vec![vec![1.0, 2.0]];
        let got = ksd_imq(&x, &s, 2.0, -0.5).unwrap();
        let want = (5.0f64 * 0.5 + 2.0 * 0.125).sqrt();
        assert!((got - want).abs() < 1e-14, "{got} vs {want}");
    }

    #[test]
    fn stein_kernel_matches_finite_differences_and_is_psd() {
        let (c, beta) = (1.3, -0.4);
        let k = |x: &[f64], y: &[f64]| {
            let r2: f64 = x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum();
            (c * c + r2).powf(beta)
        };
        let mut rng = chain_rng(11, 0);
        let d = 3;
        let pts: Vec<Vec<f64>> = (0..12)
            .map(|_| {
                (0..d)
                    .map(|_| rng.sample::<f64, _>(StandardNormal))
                    .collect()
            })
            .collect();
        let scores: Vec<Vec<f64>> = (0..12)
            .map(|_| {
                (0..d)
                    .map(|_| rng.sample::<f64, _>(StandardNormal))
                    .collect()
            })
            .collect();
        let h = 1e-4;
        let bump = |v: &[f64], i: usize, e: f64| {
            let mut w = v.to_vec();
            w[i] += e;
            w
        };
        for a in 0..4 {
            for b in 0..4 {
                let (x, y, sx, sy) = (&pts[a], &pts[b], &scores[a], &scores[b]);
                let mut fd = 0.0;
                for i in 0..d {
                    let gx = (k(&bump(x, i, h), y) - k(&bump(x, i, -h), y)) / (2.0 * h);
                    let gy = (k(x, &bump(y, i, h)) - k(x, &bump(y, i, -h))) / (2.0 * h);
                    let gxy = (k(&bump(x, i, h), &bump(y, i, h))
                        - k(&bump(x, i, h), &bump(y, i, -h))
                        - k(&bump(x, i, -h), &bump(y, i, h))
                        + k(&bump(x, i, -h), &bump(y, i, -h)))
                        / (4.0 * h * h);
                    fd += sx[i] * sy[i] * k(x, y) + sx[i] * gy + sy[i] * gx + gxy;
                }
                let an = stein_kernel_imq(x, sx, y, sy, c, beta);
                assert!(
                    (an - fd).abs() < 1e-6 * an.abs().max(1.0),
                    "({a},{b}): {an} vs {fd}"
                );
            }
        }
        // Symmetric and positive semi-definite Gram matrix.
        let n = pts.len();
        let gram = faer::Mat::<f64>::from_fn(n, n, |i, j| {
            stein_kernel_imq(&pts[i], &scores[i], &pts[j], &scores[j], c, beta)
        });
        for i in 0..n {
            for j in 0..n {
                assert!((gram[(i, j)] - gram[(j, i)]).abs() < 1e-14);
            }
        }
        let eig = gram.self_adjoint_eigenvalues(faer::Side::Lower).unwrap();
        let top = eig.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        assert!(eig.iter().all(|&e| e > -1e-12 * top), "{eig:?}");
    }

    #[test]
    fn ksd_bad_input() {
        let x = vec![vec![0.0, 1.0], vec![1.0, 0.0]];
        assert!(matches!(ksd_imq(&[], &[], 1.0, -0.5), Err(Error::Data(_))));
        assert!(matches!(
            ksd_imq(&x, &x[..1], 1.0, -0.5),
            Err(Error::DimensionMismatch { .. })
        ));
        let ragged = vec![vec![0.0, 1.0], vec![1.0]];
        assert!(matches!(
            ksd_imq(&ragged, &x, 1.0, -0.5),
            Err(Error::DimensionMismatch { .. })
        ));
        assert!(matches!(
            ksd_imq(&x, &x, 0.0, -0.5),
            Err(Error::InvalidConfig { .. })
        ));
        assert!(matches!(
            ksd_imq(&x, &x, 1.0, 0.5),
            Err(Error::InvalidConfig { .. })
        ));
        let bad = vec![vec![0.0, f64::INFINITY], vec![1.0, 0.0]];
        assert!(matches!(ksd_imq(&x, &bad, 1.0, -0.5), Err(Error::Data(_))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn fft_autocorrelation_equals_naive(x in prop::collection::vec(-10.0f64..10.0, 2..200)) {
            let fast = autocorrelation(&x);
            let slow = naive_autocorrelation(&x);
            prop_assume!(slow[0].is_finite());
            for (f, s) in fast.iter().zip(&slow) {
                prop_assert!((f - s).abs() < 1e-9, "{} vs {}", f, s);
            }
        }

        #[test]
        fn ess_is_finite_positive_and_bounded(
            m in 1usize..5,
            n in 4usize..60,
            seed in 0u64..1_000_000,
            rho in -0.95f64..0.95,
        ) {
            let x = ar1(seed, m, n, rho);
            let c = refs(&x);
            let total = (m * n) as f64;
            for ess in [ess_basic(&c).unwrap(), ess_bulk(&c).unwrap(), ess_tail(&c).unwrap()] {
                // Geyer's estimator caps at N log10(N) (antithetic chains exceed N).
                prop_assert!(ess.is_finite() && ess > 0.0, "{}", ess);
                prop_assert!(ess <= total * total.log10() + 1e-9, "{} > bound for N = {}", ess, total);
            }
            let r = rhat(&c).unwrap();
            prop_assert!(r.is_finite() && r > 0.0);
        }
    }
}
