//! Thermodynamic linear algebra (Aifer et al. 2023, "Thermodynamic linear algebra").
//!
//! A thermodynamic device lets an OU process relax and reads its state out at a
//! fixed sampling interval; time averages of simple functions of the state give
//! linear-algebra answers. Here the device is simulated *exactly* at the sampling
//! instants with [`crate::ou`], so the only errors are the physical ones: finite
//! analog time (Monte Carlo error, correlated samples) and burn-in bias.
//!
//! All times are in units of the device time constant (RC); [`HardwareModel`]
//! converts them into seconds and joules. With `A` symmetric positive definite and
//! inverse temperature `β` (noise `D = 2/β I` unless stated):
//!
//! | function | process | estimator |
//! |---|---|---|
//! | [`solve`] | `dx = -(A x - b) dt + N(0, 2/β dt)` | time average of `x` → `A⁻¹ b` |
//! | [`inv`] | `dx = -A x dt + N(0, 2/β dt)` | `β` × time average of `x xᵀ` → `A⁻¹` |
//! | [`expnegm`] | `dx = -A x dt + N(0, (A + Aᵀ) dt)`, `A` with `(A + Aᵀ)/2` positive definite (stationary covariance `I`) | lag-1 cross-covariance `E[x(t+1) x(t)ᵀ]` → `e^{-A}` |
//! | [`expm`] | as `expnegm` for `cI − A`, `c` = largest eigenvalue of `(A + Aᵀ)/2` + 1 | `e^{c}` × that → `e^{A}` |
//! | [`logdet`] / [`det`] | as `inv` | `−log det(β Ŝ)` from the sample second moment `Ŝ`, jackknife bias-corrected (digital Cholesky of `Ŝ`: the reference) |
//! | [`logdet_jarzynski`] | potential switched from `α xᵀx/2` to `xᵀAx/2` ([`JarzynskiConfig`]) | `d log α − 2 log ⟨e^{-βW}⟩` (Jarzynski's equality) |
//!
//! The device starts at `x = 0`, runs for `analog_time`, is read out every
//! `sampling_interval`; readouts at times `≤ burn_in` are discarded. The
//! forcing term of `solve` is simulated without forming `A⁻¹ b`: the exact step is
//! `x' = e^{-A h} x + (∫_0^h e^{-A s} ds) b + η`, the integral taken from the
//! exponential of the augmented matrix `[[-A, b], [0, 0]] h`.
//!
//! # Error estimates
//! Batch means: the `N` readouts are cut into `batches` contiguous batches; the
//! standard error of each entry is the standard deviation of its batch means over
//! `√batches`. `error_estimate` is the norm of the standard errors (2-norm for
//! vectors, Frobenius for matrices), i.e. an estimate of the root-mean-square error
//! norm. It is reliable when each batch is much longer than the relaxation time
//! `1/λ_min(A)`; with short runs it underestimates, without bound ([`Mixing`] tells
//! whether a run is long enough for the estimate to be trusted). For `logdet` the standard error is
//! the delete-one-batch jackknife standard error, and the estimate is jackknife
//! bias-corrected (log det of a sample covariance is biased by about
//! `-d(d+1)/(2 N_eff)`).

use faer::linalg::matmul::matmul;
use faer::prelude::*;
use faer::{Accum, Mat, MatRef, Side};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, ThermoError};
use crate::ou::{self, check_len, check_square, check_symmetric, gemv_acc, symmetrize, OuProcess};
use langevin_core::rng::{chain_rng, fill_standard_normal};

/// Readouts simulated per block (noise drawn with one matrix product per block).
const BLOCK: usize = 256;

/// Settings of one thermodynamic computation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ThermoConfig {
    /// Total analog run time, in units of the device time constant.
    pub analog_time: f64,
    /// Time between two readouts.
    pub sampling_interval: f64,
    /// Readouts at times `≤ burn_in` are discarded.
    pub burn_in: f64,
    /// Inverse temperature `β` of the noise (`D = 2/β I`).
    pub beta: f64,
    /// Number of batches for the batch-means error estimate (≥ 2).
    pub batches: usize,
    /// Seed of the device noise.
    pub seed: u64,
}

impl Default for ThermoConfig {
    fn default() -> Self {
        Self {
            analog_time: 1000.0,
            sampling_interval: 0.1,
            burn_in: 20.0,
            beta: 1.0,
            batches: 20,
            seed: 0,
        }
    }
}

impl ThermoConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |field: &'static str, reason: String| Err(ThermoError::InvalidConfig { field, reason });
        if !(self.analog_time > 0.0 && self.analog_time.is_finite()) {
            return bad(
                "analog_time",
                format!("must be positive and finite, got {}", self.analog_time),
            );
        }
        if !(self.sampling_interval > 0.0 && self.sampling_interval <= self.analog_time) {
            return bad(
                "sampling_interval",
                format!(
                    "must be in (0, analog_time], got {}",
                    self.sampling_interval
                ),
            );
        }
        if !(self.burn_in >= 0.0 && self.burn_in < self.analog_time) {
            return bad(
                "burn_in",
                format!("must be in [0, analog_time), got {}", self.burn_in),
            );
        }
        if !(self.beta > 0.0 && self.beta.is_finite()) {
            return bad(
                "beta",
                format!("must be positive and finite, got {}", self.beta),
            );
        }
        if self.batches < 2 {
            return bad(
                "batches",
                format!("must be at least 2, got {}", self.batches),
            );
        }
        let n = self.readouts();
        if n < 2 * self.batches {
            return bad(
                "analog_time",
                format!(
                    "gives {n} readouts after burn-in, fewer than 2 per batch ({} batches)",
                    self.batches
                ),
            );
        }
        Ok(())
    }

    fn total_steps(&self) -> usize {
        (self.analog_time / self.sampling_interval + 1e-9).floor() as usize
    }
    fn burn_steps(&self) -> usize {
        (self.burn_in / self.sampling_interval + 1e-9).floor() as usize
    }
    /// Readouts used by the estimators (after burn-in).
    pub fn readouts(&self) -> usize {
        self.total_steps().saturating_sub(self.burn_steps())
    }
}

/// An estimate with its error estimate.
#[derive(Debug, Clone)]
pub struct Estimate<T> {
    /// The estimate.
    pub value: T,
    /// Standard error of each entry (batch means; jackknife for `logdet`).
    pub std_error: T,
    /// Norm of `std_error`: estimated root-mean-square error (absolute).
    pub error_estimate: f64,
    /// Analog time used (device time constants).
    pub analog_time: f64,
    /// Readouts averaged.
    pub readouts: usize,
}

/// Checks that `a` is square, finite, symmetric and positive definite.
pub fn check_spd(what: &'static str, a: MatRef<'_, f64>) -> Result<usize> {
    let n = check_square(what, a)?;
    check_symmetric(what, a)?;
    if n > 0 && a.llt(Side::Lower).is_err() {
        return Err(ThermoError::NotPositiveDefinite {
            what,
            semi: false,
            detail: Some("Cholesky factorisation failed".into()),
        });
    }
    Ok(n)
}

/// Each batch must span at least this many relaxation times of the slowest mode for
/// the batch-means (and jackknife) error estimates to be trusted (see [`Mixing`]).
pub const MIN_BATCH_RELAXATIONS: f64 = 10.0;

/// How well a run samples the slowest mode of the device `dx = -A x dt + ...`.
///
/// The batch-means standard error assumes batch means that are nearly independent,
/// i.e. batches much longer than the integrated autocorrelation time of the readouts
/// (`2/λ_min(A)` for the state itself). With shorter batches the error estimate is
/// too small, without bound: a mode that relaxes in `10¹⁵⁰` RC is frozen at its start
/// over any run, every batch agrees with every other, and the estimate claims a tiny
/// error while the answer is off by 100%. [`Mixing::trusted`] is the rule used by the
/// CLI: every batch spans at least [`MIN_BATCH_RELAXATIONS`] relaxation times. (The
/// start-up transient from `x = 0` then biases a second moment by at most
/// `1 / (2 · batches · MIN_BATCH_RELAXATIONS)` relative, far below the standard error.)
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mixing {
    /// `1 / λ_min(A)`, in device time constants (RC); infinite if `λ_min ≤ 0`.
    pub relaxation_time: f64,
    /// Analog time covered by one batch: `(analog_time − burn_in) / batches`.
    pub batch_time: f64,
}

impl Mixing {
    /// Relaxation time of `a` (symmetric) and the batch length of `cfg`.
    pub fn of(a: MatRef<'_, f64>, cfg: &ThermoConfig) -> Result<Self> {
        check_square("matrix A", a)?;
        let lambda_min = if a.nrows() == 0 {
            f64::INFINITY
        } else {
            a.self_adjoint_eigenvalues(Side::Lower)
                .map_err(|e| ThermoError::Numerical(format!("eigenvalues of A: {e:?}")))?[0]
        };
        Ok(Self::from_lambda_min(lambda_min, cfg))
    }

    /// As [`Mixing::of`], from a known smallest eigenvalue.
    pub fn from_lambda_min(lambda_min: f64, cfg: &ThermoConfig) -> Self {
        let relaxation_time = if lambda_min > 0.0 {
            1.0 / lambda_min
        } else {
            f64::INFINITY
        };
        Self {
            relaxation_time,
            batch_time: (cfg.analog_time - cfg.burn_in) / cfg.batches.max(1) as f64,
        }
    }

    /// Batch length in relaxation times.
    pub fn batch_relaxations(&self) -> f64 {
        self.batch_time / self.relaxation_time
    }

    /// Whether the error estimate can be trusted: every batch spans at least
    /// [`MIN_BATCH_RELAXATIONS`] relaxation times.
    pub fn trusted(&self) -> bool {
        // (The tolerance lets the run of [`Mixing::min_analog_time`] pass after rounding.)
        self.batch_relaxations() >= MIN_BATCH_RELAXATIONS * (1.0 - 1e-9)
    }

    /// The smallest `analog_time` that [`Mixing::trusted`] accepts for `cfg`'s burn-in
    /// and batches (infinite when the relaxation time is).
    pub fn min_analog_time(&self, cfg: &ThermoConfig) -> f64 {
        cfg.burn_in + MIN_BATCH_RELAXATIONS * self.relaxation_time * cfg.batches as f64
    }
}

/// A Wishart matrix `G Gᵀ / dof` with `G` a `d × dof` standard normal matrix
/// (positive definite when `dof ≥ d`; the eigenvalues lie in about
/// `[(1 - √(d/dof))², (1 + √(d/dof))²]`).
pub fn wishart<R: Rng + ?Sized>(d: usize, dof: usize, rng: &mut R) -> Mat<f64> {
    let mut g = Mat::<f64>::zeros(d, dof);
    for j in 0..dof {
        fill_standard_normal(rng, g.col_as_slice_mut(j));
    }
    let mut w = Mat::<f64>::zeros(d, d);
    matmul(
        w.as_mut(),
        Accum::Replace,
        g.as_ref(),
        g.transpose(),
        1.0 / dof as f64,
        Par::Seq,
    );
    symmetrize(&mut w);
    w
}

/// The simulated device: the exact readout-to-readout map `x' = E x + f + L z`.
struct Device {
    e: Mat<f64>,
    factor: Mat<f64>,
    forcing: Vec<f64>,
}

impl Device {
    fn new(a: MatRef<'_, f64>, drive: &[f64], noise: MatRef<'_, f64>, h: f64) -> Result<Self> {
        let n = a.nrows();
        let proc = OuProcess::new(a, &vec![0.0; n], noise)?;
        let tr = proc.compute_transition(h)?;
        // ∫_0^h e^{-A s} ds b: top-right column of exp([[-A, b], [0, 0]] h).
        let forcing = if drive.iter().any(|&v| v != 0.0) {
            let aug = Mat::from_fn(n + 1, n + 1, |i, j| match (i < n, j < n) {
                (true, true) => -a[(i, j)] * h,
                (true, false) => drive[i] * h,
                _ => 0.0,
            });
            let f = ou::expm(aug.as_ref());
            (0..n).map(|i| f[(i, n)]).collect()
        } else {
            vec![0.0; n]
        };
        Ok(Self {
            e: tr.e,
            factor: tr.factor,
            forcing,
        })
    }

    /// Runs the device and hands each block of post-burn-in readouts (`n × k`,
    /// columns in time order) with the global index of its first readout to `sink`.
    fn run(&self, cfg: &ThermoConfig, mut sink: impl FnMut(usize, MatRef<'_, f64>)) {
        let n = self.e.nrows();
        let total = cfg.total_steps();
        let burn = cfg.burn_steps();
        let mut rng = chain_rng(cfg.seed, 0);
        let mut x = vec![0.0; n];
        let mut z = Mat::<f64>::zeros(n, BLOCK);
        let mut w = Mat::<f64>::zeros(n, BLOCK);
        let mut step = 0;
        while step < total {
            let len = BLOCK.min(total - step);
            for j in 0..len {
                fill_standard_normal(&mut rng, z.col_as_slice_mut(j));
            }
            matmul(
                w.as_mut().submatrix_mut(0, 0, n, len),
                Accum::Replace,
                self.factor.as_ref(),
                z.as_ref().submatrix(0, 0, n, len),
                1.0,
                Par::Seq,
            );
            for j in 0..len {
                let col = w.col_as_slice_mut(j);
                for (c, f) in col.iter_mut().zip(&self.forcing) {
                    *c += f;
                }
                gemv_acc(self.e.as_ref(), &x, col);
                x.copy_from_slice(col);
            }
            // Readout index r = step + j + 1; keep r > burn.
            let first = (step + 1).max(burn + 1);
            let end = step + len;
            if first <= end {
                let off = first - (step + 1);
                sink(
                    first - burn - 1,
                    w.as_ref().submatrix(0, off, n, end + 1 - first),
                );
            }
            step += len;
        }
    }
}

/// Splits readouts `[i0, i0 + k)` into the parts belonging to each batch.
fn for_batches(
    i0: usize,
    k: usize,
    total: usize,
    batches: usize,
    mut f: impl FnMut(usize, usize, usize),
) {
    let batch_of = |i: usize| i * batches / total;
    let mut start = 0;
    while start < k {
        let b = batch_of(i0 + start);
        let mut end = start + 1;
        while end < k && batch_of(i0 + end) == b {
            end += 1;
        }
        f(b, start, end - start);
        start = end;
    }
}

fn batch_counts(total: usize, batches: usize) -> Vec<usize> {
    let mut c = vec![0; batches];
    for i in 0..total {
        c[i * batches / total] += 1;
    }
    c
}

/// Mean and standard error from batch sums (`sums[b][e]`, `counts[b]`).
fn batch_stats(sums: &[Vec<f64>], counts: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let m = sums[0].len();
    let nb = sums.len() as f64;
    let total: usize = counts.iter().sum();
    let mut mean = vec![0.0; m];
    for s in sums {
        for (o, v) in mean.iter_mut().zip(s) {
            *o += v;
        }
    }
    mean.iter_mut().for_each(|v| *v /= total as f64);
    let mut var = vec![0.0; m];
    for (s, &c) in sums.iter().zip(counts) {
        for e in 0..m {
            let d = s[e] / c as f64 - mean[e];
            var[e] += d * d;
        }
    }
    let se = var.iter().map(|v| (v / (nb - 1.0) / nb).sqrt()).collect();
    (mean, se)
}

fn norm2(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn to_mat(n: usize, v: &[f64]) -> Mat<f64> {
    Mat::from_fn(n, n, |i, j| v[i + j * n])
}

fn scaled_identity(n: usize, s: f64) -> Mat<f64> {
    Mat::from_fn(n, n, |i, j| if i == j { s } else { 0.0 })
}

/// Solves `A x = b` for symmetric positive definite `A` by the time average of
/// `dx = -(A x - b) dt + N(0, 2/β dt)`.
pub fn solve(a: MatRef<'_, f64>, b: &[f64], cfg: &ThermoConfig) -> Result<Estimate<Vec<f64>>> {
    let n = check_spd("matrix A", a)?;
    check_len("vector b", n, b.len())?;
    ou::check_finite("vector b", b)?;
    cfg.validate()?;
    let dev = Device::new(
        a,
        b,
        scaled_identity(n, 2.0 / cfg.beta).as_ref(),
        cfg.sampling_interval,
    )?;
    let total = cfg.readouts();
    let mut sums = vec![vec![0.0; n]; cfg.batches];
    dev.run(cfg, |i0, xs| {
        for_batches(i0, xs.ncols(), total, cfg.batches, |bt, s, k| {
            for j in s..s + k {
                for (o, v) in sums[bt].iter_mut().zip(xs.col(j).iter()) {
                    *o += v;
                }
            }
        })
    });
    let (value, std_error) = batch_stats(&sums, &batch_counts(total, cfg.batches));
    Ok(Estimate {
        error_estimate: norm2(&std_error),
        value,
        std_error,
        analog_time: cfg.analog_time,
        readouts: total,
    })
}

/// Per-batch second moments `Σ x xᵀ` (flattened column-major) and counts.
fn second_moments(dev: &Device, cfg: &ThermoConfig, n: usize) -> (Vec<Vec<f64>>, Vec<usize>) {
    let total = cfg.readouts();
    let mut mats: Vec<Mat<f64>> = (0..cfg.batches).map(|_| Mat::zeros(n, n)).collect();
    dev.run(cfg, |i0, xs| {
        for_batches(i0, xs.ncols(), total, cfg.batches, |bt, s, k| {
            let blk = xs.submatrix(0, s, n, k);
            matmul(
                mats[bt].as_mut(),
                Accum::Add,
                blk,
                blk.transpose(),
                1.0,
                Par::Seq,
            );
        })
    });
    let sums = mats
        .iter()
        .map(|m| (0..n * n).map(|e| m[(e % n, e / n)]).collect())
        .collect();
    (sums, batch_counts(total, cfg.batches))
}

/// Inverts a symmetric positive definite `A`: `β` times the time-averaged second
/// moment of `dx = -A x dt + N(0, 2/β dt)` (stationary covariance `A⁻¹/β`).
pub fn inv(a: MatRef<'_, f64>, cfg: &ThermoConfig) -> Result<Estimate<Mat<f64>>> {
    let n = check_spd("matrix A", a)?;
    cfg.validate()?;
    let dev = Device::new(
        a,
        &vec![0.0; n],
        scaled_identity(n, 2.0 / cfg.beta).as_ref(),
        cfg.sampling_interval,
    )?;
    let (sums, counts) = second_moments(&dev, cfg, n);
    let (mean, se) = batch_stats(&sums, &counts);
    let value: Vec<f64> = mean.iter().map(|v| v * cfg.beta).collect();
    let se: Vec<f64> = se.iter().map(|v| v * cfg.beta).collect();
    let mut value = to_mat(n, &value);
    symmetrize(&mut value);
    Ok(Estimate {
        error_estimate: norm2(&se),
        value,
        std_error: to_mat(n, &se),
        analog_time: cfg.analog_time,
        readouts: counts.iter().sum(),
    })
}

fn log_det_spd(m: MatRef<'_, f64>) -> Option<f64> {
    let llt = m.llt(Side::Lower).ok()?;
    Some(2.0 * (0..m.nrows()).map(|i| llt.L()[(i, i)].ln()).sum::<f64>())
}

/// `log det A` for symmetric positive definite `A`: `−log det(β Ŝ)` with `Ŝ` the
/// time-averaged second moment of the `inv` process, jackknife bias-corrected over
/// batches; `std_error` is the jackknife standard error.
pub fn logdet(a: MatRef<'_, f64>, cfg: &ThermoConfig) -> Result<Estimate<f64>> {
    let n = check_spd("matrix A", a)?;
    cfg.validate()?;
    let dev = Device::new(
        a,
        &vec![0.0; n],
        scaled_identity(n, 2.0 / cfg.beta).as_ref(),
        cfg.sampling_interval,
    )?;
    let (sums, counts) = second_moments(&dev, cfg, n);
    let total: usize = counts.iter().sum();
    let mut all = vec![0.0; n * n];
    for s in &sums {
        for (o, v) in all.iter_mut().zip(s) {
            *o += v;
        }
    }
    let est = |sum: &[f64], cnt: usize| -> Result<f64> {
        let m = Mat::from_fn(n, n, |i, j| {
            0.5 * (sum[i + j * n] + sum[j + i * n]) * cfg.beta / cnt as f64
        });
        log_det_spd(m.as_ref())
            .map(|v| -v)
            .ok_or(ThermoError::Numerical(
                "sample second moment is singular: analog time too short for this dimension".into(),
            ))
    };
    let theta = est(&all, total)?;
    let nb = cfg.batches as f64;
    let mut loo = Vec::with_capacity(cfg.batches);
    for (s, &c) in sums.iter().zip(&counts) {
        let rest: Vec<f64> = all.iter().zip(s).map(|(a, b)| a - b).collect();
        loo.push(est(&rest, total - c)?);
    }
    let mean_loo = loo.iter().sum::<f64>() / nb;
    let se = ((nb - 1.0) / nb * loo.iter().map(|t| (t - mean_loo).powi(2)).sum::<f64>()).sqrt();
    let value = nb * theta - (nb - 1.0) * mean_loo;
    Ok(Estimate {
        value,
        std_error: se,
        error_estimate: se,
        analog_time: cfg.analog_time,
        readouts: total,
    })
}

/// Settings of the Jarzynski log-determinant protocol ([`logdet_jarzynski`]).
///
/// One *run*: the device relaxes under the reference potential
/// `U₀(x) = α xᵀx / 2` for `equilibration_time`, then the potential is switched
/// to `U₁(x) = xᵀ A x / 2` in `steps` equal increments of
/// `A_λ = (1 − λ) α I + λ A`, the device relaxing for `switching_time / steps`
/// after each increment. All times are in device time constants.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JarzynskiConfig {
    /// Independent protocol runs (work measurements), at least 2.
    pub runs: usize,
    /// Duration of one switching protocol (> 0).
    pub switching_time: f64,
    /// Increments in which the potential is switched (≥ 1; `1` is an instantaneous
    /// quench, i.e. free-energy perturbation).
    pub steps: usize,
    /// Relaxation under the reference potential before each run (≥ 0). The start
    /// of a run deviates from the reference equilibrium by a covariance factor
    /// `e^{-2 α t}`, which biases the estimate by about as much.
    pub equilibration_time: f64,
    /// Scale `α` of the reference `A₀ = α I`; `None` takes `tr(A)/d`.
    pub reference_scale: Option<f64>,
    /// Inverse temperature `β` of the noise (`D = 2/β I`).
    pub beta: f64,
    /// Seed of the device noise.
    pub seed: u64,
}

impl Default for JarzynskiConfig {
    fn default() -> Self {
        Self {
            runs: 1000,
            switching_time: 5.0,
            steps: 50,
            equilibration_time: 5.0,
            reference_scale: None,
            beta: 1.0,
            seed: 0,
        }
    }
}

impl JarzynskiConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |field: &'static str, reason: String| Err(ThermoError::InvalidConfig { field, reason });
        if self.runs < 2 {
            return bad("runs", format!("must be at least 2, got {}", self.runs));
        }
        if !(self.switching_time > 0.0 && self.switching_time.is_finite()) {
            return bad(
                "switching_time",
                format!("must be positive and finite, got {}", self.switching_time),
            );
        }
        if self.steps == 0 {
            return bad("steps", "must be at least 1".into());
        }
        if !(self.equilibration_time >= 0.0 && self.equilibration_time.is_finite()) {
            return bad(
                "equilibration_time",
                format!(
                    "must be non-negative and finite, got {}",
                    self.equilibration_time
                ),
            );
        }
        if let Some(alpha) = self.reference_scale {
            if !(alpha > 0.0 && alpha.is_finite()) {
                return bad(
                    "reference_scale",
                    format!("must be positive and finite, got {alpha}"),
                );
            }
        }
        if !(self.beta > 0.0 && self.beta.is_finite()) {
            return bad(
                "beta",
                format!("must be positive and finite, got {}", self.beta),
            );
        }
        Ok(())
    }

    /// Analog time of the whole computation: `runs × (equilibration_time + switching_time)`.
    pub fn analog_time(&self) -> f64 {
        self.runs as f64 * (self.equilibration_time + self.switching_time)
    }
}

/// `log det A` for symmetric positive definite `A` by a thermodynamic protocol
/// (Aifer et al. 2023, "Thermodynamic linear algebra", §determinant): the
/// free-energy difference between the potentials `U₀ = α xᵀx / 2` and
/// `U₁ = xᵀ A x / 2` is measured from the work done while the device's potential
/// is switched from one to the other ([`JarzynskiConfig`]), through Jarzynski's
/// equality `e^{-β ΔF} = ⟨e^{-β W}⟩`. With `Z = ∫ e^{-β U}`,
/// `β ΔF = (log det A − d log α) / 2`, so
/// `log det A = d log α − 2 log ⟨e^{-β W}⟩`.
///
/// The work of a run is `W = Σ_k (λ_k − λ_{k−1}) xᵀ (A − α I) x / 2`, the state
/// `x` read out just before each increment; between increments the device is
/// simulated exactly ([`crate::ou`]), and each relaxation leaves the equilibrium of
/// the current potential invariant, so Jarzynski's equality holds exactly for any
/// number of steps and any switching time: slow protocols only lower the variance.
/// The only bias is that of the logarithm of a sample mean, about
/// `−Var(e^{-βW}) / (2 N ⟨e^{-βW}⟩²)`, which is subtracted (second-order delta
/// method); `std_error` is the delta-method standard error
/// `2 sd(e^{-βW}) / (√N mean(e^{-βW}))`. Both rely on the work distribution not
/// being dominated by rare runs: the error estimate is trustworthy when the
/// dissipated work `β(⟨W⟩ − ΔF)` is of order 1 or less (choose a longer
/// `switching_time` or more `steps` otherwise).
///
/// `analog_time` is `runs × (equilibration_time + switching_time)`; `readouts` is
/// `runs × steps` state readouts. The digital reference is a Cholesky
/// factorisation of `A` (what [`logdet`] does with the sampled covariance).
pub fn logdet_jarzynski(a: MatRef<'_, f64>, cfg: &JarzynskiConfig) -> Result<Estimate<f64>> {
    let n = check_spd("matrix A", a)?;
    cfg.validate()?;
    let alpha = match cfg.reference_scale {
        Some(alpha) => alpha,
        None => (0..n).map(|i| a[(i, i)]).sum::<f64>() / n.max(1) as f64,
    };
    let k_steps = cfg.steps;
    let dt = cfg.switching_time / k_steps as f64;
    let noise = scaled_identity(n, 2.0 / cfg.beta);
    // Exact relaxation of each intermediate potential over dt (digital set-up of
    // the simulator, not of the device).
    let devices: Vec<Device> = (1..=k_steps)
        .map(|k| {
            let lam = k as f64 / k_steps as f64;
            let ak = Mat::from_fn(n, n, |i, j| {
                lam * a[(i, j)] + if i == j { (1.0 - lam) * alpha } else { 0.0 }
            });
            Device::new(ak.as_ref(), &vec![0.0; n], noise.as_ref(), dt)
        })
        .collect::<Result<_>>()?;
    // Relaxation under the reference α I over the equilibration time (exact, scalar).
    let decay = (-alpha * cfg.equilibration_time).exp();
    let eq_sd = ((1.0 - decay * decay) / (cfg.beta * alpha)).sqrt();
    let diff = Mat::from_fn(n, n, |i, j| a[(i, j)] - if i == j { alpha } else { 0.0 });
    let mut rng = chain_rng(cfg.seed, 0);
    let mut x = vec![0.0; n];
    let mut z = vec![0.0; n];
    let mut y = vec![0.0; n];
    let mut dx = vec![0.0; n];
    let mut work = Vec::with_capacity(cfg.runs);
    for _ in 0..cfg.runs {
        fill_standard_normal(&mut rng, &mut z);
        for (xi, zi) in x.iter_mut().zip(&z) {
            *xi = decay * *xi + eq_sd * zi;
        }
        let mut w = 0.0;
        for dev in &devices {
            dx.iter_mut().for_each(|v| *v = 0.0);
            gemv_acc(diff.as_ref(), &x, &mut dx);
            let quad: f64 = x.iter().zip(&dx).map(|(u, v)| u * v).sum();
            w += 0.5 * quad / k_steps as f64;
            fill_standard_normal(&mut rng, &mut z);
            y.iter_mut().for_each(|v| *v = 0.0);
            gemv_acc(dev.factor.as_ref(), &z, &mut y);
            gemv_acc(dev.e.as_ref(), &x, &mut y);
            x.copy_from_slice(&y);
        }
        work.push(cfg.beta * w);
    }
    let nr = work.len() as f64;
    let c = work.iter().copied().fold(f64::INFINITY, f64::min);
    let u: Vec<f64> = work.iter().map(|w| (-(w - c)).exp()).collect();
    let mean = u.iter().sum::<f64>() / nr;
    let var = u.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (nr - 1.0);
    let rel_var = var / (mean * mean);
    // log ⟨e^{-βW}⟩ with the O(1/N) bias of the log of a sample mean removed.
    let log_mean = mean.ln() - c + 0.5 * rel_var / nr;
    let value = n as f64 * alpha.ln() - 2.0 * log_mean;
    let se = 2.0 * (rel_var / nr).sqrt();
    if !(value.is_finite() && se.is_finite()) {
        return Err(ThermoError::Numerical(
            "non-finite Jarzynski estimate (work values overflow)".into(),
        ));
    }
    Ok(Estimate {
        value,
        std_error: se,
        error_estimate: se,
        analog_time: cfg.analog_time(),
        readouts: cfg.runs * k_steps,
    })
}

/// `det A = exp(logdet A)`; the error estimate is `det · se(logdet)` (delta method).
pub fn det(a: MatRef<'_, f64>, cfg: &ThermoConfig) -> Result<Estimate<f64>> {
    let l = logdet(a, cfg)?;
    let v = l.value.exp();
    Ok(Estimate {
        value: v,
        std_error: v * l.std_error,
        error_estimate: v * l.std_error,
        analog_time: l.analog_time,
        readouts: l.readouts,
    })
}

/// Checks that `a` is square and finite with a positive definite symmetric part
/// `(A + Aᵀ)/2` (so every eigenvalue of `A` has positive real part and
/// `dx = -A x dt + N(0, (A + Aᵀ) dt)` has stationary covariance `I`); returns
/// the dimension and whether `a` is symmetric (to a relative `1e-10`).
fn check_positive_symmetric_part(what: &'static str, a: MatRef<'_, f64>) -> Result<(usize, bool)> {
    let n = check_square(what, a)?;
    let sym = Mat::from_fn(n, n, |i, j| 0.5 * (a[(i, j)] + a[(j, i)]));
    if n > 0 && sym.llt(Side::Lower).is_err() {
        return Err(ThermoError::NotPositiveDefinite {
            what,
            semi: false,
            detail: Some("its symmetric part (A + Aᵀ)/2 must be positive definite".into()),
        });
    }
    Ok((n, check_symmetric(what, a).is_ok()))
}

/// `e^{-A}` for square `A` whose symmetric part `(A + Aᵀ)/2` is positive definite
/// (as thermox accepts; symmetric positive definite `A` is the special case): the
/// lag-1 cross-covariance `E[x(t+1) x(t)ᵀ] = e^{-A} Σ` of
/// `dx = -A x dt + N(0, (A + Aᵀ) dt)`, whose stationary covariance `Σ` solves
/// `A Σ + Σ Aᵀ = A + Aᵀ`, i.e. `Σ = I`. This holds for non-symmetric (also
/// non-normal) `A`: `E[x(t+1) | x(t)] = e^{-A} x(t)`. For symmetric `A` the
/// estimate is symmetrised (lower variance); otherwise each entry `(i, j)` is the
/// time average of `x_i(t+1) x_j(t)`. The lag 1 must be a whole number of
/// sampling intervals.
pub fn expnegm(a: MatRef<'_, f64>, cfg: &ThermoConfig) -> Result<Estimate<Mat<f64>>> {
    let (n, symmetric) = check_positive_symmetric_part("matrix A", a)?;
    cfg.validate()?;
    let m = (1.0 / cfg.sampling_interval).round() as usize;
    if m == 0 || (m as f64 * cfg.sampling_interval - 1.0).abs() > 1e-9 {
        return Err(ThermoError::InvalidConfig {
            field: "sampling_interval",
            reason: format!(
                "must divide the lag 1 exactly, got {}",
                cfg.sampling_interval
            ),
        });
    }
    let total = cfg.readouts();
    if total < m + 2 * cfg.batches {
        return Err(ThermoError::InvalidConfig {
            field: "analog_time",
            reason: "too short for lag-1 products in every batch".into(),
        });
    }
    let noise = Mat::from_fn(n, n, |i, j| a[(i, j)] + a[(j, i)]);
    let dev = Device::new(a, &vec![0.0; n], noise.as_ref(), cfg.sampling_interval)?;
    // Products x_{r} x_{r-m}ᵀ for readouts r ≥ m (pair index p = r - m).
    let pairs = total - m;
    let mut mats: Vec<Mat<f64>> = (0..cfg.batches).map(|_| Mat::zeros(n, n)).collect();
    // History buffer: columns [0, m) are the last m readouts before the block.
    let mut hist = Mat::<f64>::zeros(n, m + BLOCK);
    let mut seen = 0usize;
    dev.run(cfg, |_, xs| {
        let k = xs.ncols();
        for j in 0..k {
            hist.col_as_slice_mut(m + j)
                .copy_from_slice(xs.col(j).try_as_col_major().unwrap().as_slice());
        }
        // Readout seen + j pairs with hist column j (readout seen + j - m).
        let first_j = m.saturating_sub(seen);
        if first_j < k {
            let p0 = seen + first_j - m;
            for_batches(p0, k - first_j, pairs, cfg.batches, |bt, s, kk| {
                let cur = hist.as_ref().submatrix(0, m + first_j + s, n, kk);
                let lag = hist.as_ref().submatrix(0, first_j + s, n, kk);
                matmul(
                    mats[bt].as_mut(),
                    Accum::Add,
                    cur,
                    lag.transpose(),
                    1.0,
                    Par::Seq,
                );
            });
        }
        // Keep the last m readouts as history.
        let tail = Mat::from_fn(n, m, |i, j| hist[(i, k + j)]);
        hist.as_mut().submatrix_mut(0, 0, n, m).copy_from(&tail);
        seen += k;
    });
    let sums: Vec<Vec<f64>> = mats
        .iter()
        .map(|mt| {
            (0..n * n)
                .map(|e| {
                    let (i, j) = (e % n, e / n);
                    if symmetric {
                        0.5 * (mt[(i, j)] + mt[(j, i)])
                    } else {
                        mt[(i, j)]
                    }
                })
                .collect()
        })
        .collect();
    let (mean, se) = batch_stats(&sums, &batch_counts(pairs, cfg.batches));
    Ok(Estimate {
        error_estimate: norm2(&se),
        value: to_mat(n, &mean),
        std_error: to_mat(n, &se),
        analog_time: cfg.analog_time,
        readouts: total,
    })
}

/// `e^{A}` for square `A` (symmetric or not): `e^{c} · expnegm(cI − A)` with `c`
/// one above the largest eigenvalue of the symmetric part `(A + Aᵀ)/2` (so the
/// symmetric part of `cI − A` has eigenvalues ≥ 1, as [`expnegm`] needs; `cI`
/// commutes with `A`, so `e^{c} e^{-(cI − A)} = e^{A}` also for non-normal `A`).
/// `λ_max` comes from a short power iteration, with the Gershgorin upper bound as
/// fallback. The error grows like `e^{c}`: fine for matrices of modest norm only.
pub fn expm(a: MatRef<'_, f64>, cfg: &ThermoConfig) -> Result<Estimate<Mat<f64>>> {
    let n = check_square("matrix A", a)?;
    let sym = Mat::from_fn(n, n, |i, j| 0.5 * (a[(i, j)] + a[(j, i)]));
    let gersh = (0..n)
        .map(|i| {
            sym[(i, i)]
                + (0..n)
                    .filter(|&j| j != i)
                    .map(|j| sym[(i, j)].abs())
                    .sum::<f64>()
        })
        .fold(f64::NEG_INFINITY, f64::max)
        + 1.0;
    // The error scales like e^{c}: take c = λ_max + 1 with λ_max from a short power
    // iteration (digital O(d²) per iteration), falling back to the Gershgorin bound
    // when the shifted symmetric part is not positive definite.
    let shift_of = |c: f64| Mat::from_fn(n, n, |i, j| if i == j { c } else { 0.0 } - a[(i, j)]);
    let shift_sym = |c: f64| Mat::from_fn(n, n, |i, j| if i == j { c } else { 0.0 } - sym[(i, j)]);
    let c = match lambda_max_estimate(sym.as_ref()) {
        Some(l) if l + 1.0 < gersh && check_spd("shifted", shift_sym(l + 1.0).as_ref()).is_ok() => {
            l + 1.0
        }
        _ => gersh,
    };
    let shifted = shift_of(c);
    let est = expnegm(shifted.as_ref(), cfg)?;
    let s = c.exp();
    Ok(Estimate {
        value: Mat::from_fn(n, n, |i, j| s * est.value[(i, j)]),
        std_error: Mat::from_fn(n, n, |i, j| s * est.std_error[(i, j)]),
        error_estimate: s * est.error_estimate,
        analog_time: est.analog_time,
        readouts: est.readouts,
    })
}

/// Largest eigenvalue of a symmetric matrix by 200 power iterations on `A − g I`
/// (`g` the Gershgorin lower bound, so the shifted matrix is positive semi-definite
/// and the dominant eigenvalue is the algebraically largest); plus the residual
/// norm, so the value is an upper bound of the eigenvalue it converged to.
fn lambda_max_estimate(a: MatRef<'_, f64>) -> Option<f64> {
    let n = a.nrows();
    if n == 0 {
        return None;
    }
    let g = (0..n)
        .map(|i| {
            a[(i, i)]
                - (0..n)
                    .filter(|&j| j != i)
                    .map(|j| a[(i, j)].abs())
                    .sum::<f64>()
        })
        .fold(f64::INFINITY, f64::min);
    let mut v: Vec<f64> = (0..n).map(|i| 1.0 + 0.01 * i as f64).collect();
    let mut rho = 0.0;
    let mut resid = f64::INFINITY;
    for _ in 0..200 {
        let nv = norm2(&v);
        v.iter_mut().for_each(|x| *x /= nv);
        let mut w = vec![0.0; n];
        gemv_acc(a, &v, &mut w);
        rho = v.iter().zip(&w).map(|(x, y)| x * y).sum::<f64>();
        resid = w
            .iter()
            .zip(&v)
            .map(|(wi, vi)| (wi - rho * vi).powi(2))
            .sum::<f64>()
            .sqrt();
        for (wi, vi) in w.iter_mut().zip(&v) {
            *wi -= g * vi;
        }
        v = w;
        if resid <= 1e-10 * rho.abs().max(1.0) {
            break;
        }
    }
    (rho.is_finite() && resid.is_finite()).then_some(rho + resid)
}

/// A first-order model of an analog thermodynamic device's wall-clock time and energy
/// (assumptions, not measurements; every constant is a public field).
///
/// * Time: load `d²` matrix entries (and `d` vector entries) through `dacs` parallel
///   DACs at `dac_rate` values/s each; run for `analog_time × rc` seconds; read
///   `readouts × d` values through `adcs` parallel ADCs at `adc_rate` values/s
///   (readout overlaps the run, so the run phase takes the longer of the two).
/// * Energy: `dac_energy` per loaded value, `adc_energy` per read value, and
///   `cell_power` per coupled cell (`d²` of them) during the run.
///
/// Defaults: RC = 1 µs (the paper's time constant), 1 GS/s DAC/ADC channels with
/// `d` channels each, 1 pJ per conversion, 1 µW per cell.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct HardwareModel {
    pub rc: f64,
    pub dac_rate: f64,
    pub adc_rate: f64,
    /// Parallel DAC channels; 0 means `d`.
    pub dacs: usize,
    /// Parallel ADC channels; 0 means `d`.
    pub adcs: usize,
    pub dac_energy: f64,
    pub adc_energy: f64,
    pub cell_power: f64,
}

impl Default for HardwareModel {
    fn default() -> Self {
        Self {
            rc: 1e-6,
            dac_rate: 1e9,
            adc_rate: 1e9,
            dacs: 0,
            adcs: 0,
            dac_energy: 1e-12,
            adc_energy: 1e-12,
            cell_power: 1e-6,
        }
    }
}

/// Modelled device cost of one computation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct HardwareCost {
    pub load_seconds: f64,
    pub run_seconds: f64,
    pub total_seconds: f64,
    pub energy_joules: f64,
}

impl HardwareModel {
    /// Cost of a run in dimension `d` with `readouts` readouts over `analog_time`.
    pub fn cost(&self, d: usize, analog_time: f64, readouts: usize) -> HardwareCost {
        let dacs = if self.dacs == 0 { d.max(1) } else { self.dacs } as f64;
        let adcs = if self.adcs == 0 { d.max(1) } else { self.adcs } as f64;
        let loaded = (d * d + d) as f64;
        let read = (readouts * d) as f64;
        let load_seconds = loaded / (dacs * self.dac_rate);
        let run_seconds = (analog_time * self.rc).max(read / (adcs * self.adc_rate));
        let energy_joules = loaded * self.dac_energy
            + read * self.adc_energy
            + (d * d) as f64 * self.cell_power * run_seconds;
        HardwareCost {
            load_seconds,
            run_seconds,
            total_seconds: load_seconds + run_seconds,
            energy_joules,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trust rule of [`Mixing`]: on a well-conditioned matrix (trusted at the
    /// defaults) the jackknife error of `logdet` covers the actual error within 3.5
    /// standard errors on every seed (|t| > 3.5 at 19 degrees of freedom: probability
    /// 0.002 per seed); a matrix with a mode that relaxes in 1e6 time constants is not
    /// trusted at the defaults, and there the claimed error is far too small.
    #[test]
    fn mixing_rule_separates_honest_from_dishonest_error_estimates() {
        let cfg = ThermoConfig::default();
        let good = Mat::from_fn(2, 2, |i, j| [[2.0, 0.5], [0.5, 1.0]][i][j]);
        let m = Mixing::of(good.as_ref(), &cfg).unwrap();
        assert!(m.trusted(), "{m:?}");
        let exact = log_det_spd(good.as_ref()).unwrap();
        for seed in 0..5 {
            let c = ThermoConfig {
                seed,
                ..cfg.clone()
            };
            let e = logdet(good.as_ref(), &c).unwrap();
            let err = (e.value - exact).abs();
            assert!(
                err <= 3.5 * e.error_estimate,
                "seed {seed}: {err} vs {}",
                e.error_estimate
            );
        }
        let ill = Mat::from_fn(2, 2, |i, j| [[1e-6, 0.0], [0.0, 1.0]][i][j]);
        let m = Mixing::of(ill.as_ref(), &cfg).unwrap();
        assert!(!m.trusted());
        assert!((m.relaxation_time - 1e6).abs() < 1.0);
        let need = m.min_analog_time(&cfg);
        assert!((need - (20.0 + 10.0 * 1e6 * 20.0)).abs() < 1e-3 * need);
        let longer = ThermoConfig {
            analog_time: need,
            ..cfg.clone()
        };
        assert!(Mixing::of(ill.as_ref(), &longer).unwrap().trusted());
        let e = logdet(ill.as_ref(), &cfg).unwrap();
        let exact = log_det_spd(ill.as_ref()).unwrap();
        assert!((e.value - exact).abs() > 10.0 * e.error_estimate);
    }

    #[test]
    fn batches_partition_readouts() {
        let c = batch_counts(103, 5);
        assert_eq!(c.iter().sum::<usize>(), 103);
        let mut seen = vec![0; 5];
        for_batches(0, 50, 103, 5, |b, _, k| seen[b] += k);
        for_batches(50, 53, 103, 5, |b, _, k| seen[b] += k);
        assert_eq!(seen, c);
    }

    #[test]
    fn config_rejects_bad_values() {
        let cfg = ThermoConfig {
            sampling_interval: -1.0,
            ..Default::default()
        };
        assert!(matches!(
            cfg.validate(),
            Err(ThermoError::InvalidConfig {
                field: "sampling_interval",
                ..
            })
        ));
        let cfg = ThermoConfig {
            analog_time: 1.0,
            burn_in: 0.0,
            ..Default::default()
        };
        assert!(cfg.validate().is_err());
    }
}
