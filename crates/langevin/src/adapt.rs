//! Warm-up adaptation of the SGMCMC samplers: a step size and a
//! preconditioner (mass matrix) per chain, set during the burn-in of a run
//! ([`crate::run::run_adaptive`]).
//!
//! # The preconditioner
//!
//! A chain's [`Tuning`](langevin_core::Tuning) holds a factor `L` of the inverse mass matrix; the
//! sampler runs in the whitened coordinates `z = L⁻¹ θ`
//! ([`langevin_core::metric`]). The warm-up estimates the posterior
//! covariance `Σ` of θ and sets `L Lᵀ = Σ / T`: the tempered target then has
//! covariance `T I` in `z`, so the curvature of the batch-averaged negative
//! log posterior is about 1 in every direction the metric captures, and one
//! friction and step size suit them all. The diagonal metric uses the
//! variances, the dense one the full covariance (shrunk towards its
//! diagonal when the window holds few draws: weight `m / (m + d)` on the
//! off-diagonal part, with `m` the window's steps over 10 as a rough count of
//! its independent draws). Both are regularised like Stan's:
//! `(n / (n + 5)) Σ + (5 / (n + 5)) 10⁻³ mean(diag Σ) I`.
//!
//! # The step size
//!
//! SGMCMC has no accept/reject step to adapt to, so the step size is set
//! from the two things that bias a chain, measured at the chain's current
//! point in the current metric:
//!
//! * the largest curvature `λ` of the whitened target (power iteration on
//!   finite differences of gradients, [`AdaptConfig::power_iterations`]);
//! * the variance `V` of the whitened minibatch gradient across batches (the
//!   largest over coordinates, from [`AdaptConfig::noise_batches`] batches of
//!   the run's batch source; exactly 0 for full batches).
//!
//! Each algorithm turns them into the step with a relative variance bias of
//! about `δ` = [`AdaptConfig::target_bias`] ([`Adaptive::step_size_for`]):
//! on a Gaussian the Euler-type updates inflate the variance by about
//! `ε λ / α` (SGHMC, SGNHT) or `ε λ / 2` (SGLD), BAOA's configurational bias
//! is second order, and gradient noise adds `ε V / (2 α T)` to the
//! variance in relative terms (`ε V / (2 T)` for SGLD).
//!
//! # Windows
//!
//! Stan's windows, as fractions of the warm-up `W`: the step size is set at
//! step 0, the metric is estimated in doubling windows after an initial
//! 7.5 % (the first 2.5 % of `W` long, the last stretched to end 5 % before
//! the end), and the step size is re-estimated after the initial part and
//! after every window. The step of the initial 7.5 % follows the curvature
//! alone: that part only brings the chain to the typical set. With fewer
//! than 20 warm-up steps only the step size is set, once. At temperature 0 (an optimiser) nothing is adapted.

use serde::{Deserialize, Serialize};

use langevin_core::{
    check_finite, BatchSource, ChainRng, Error, LogDensity, Metric, Params, Result, Transform,
    TransformState,
};

use crate::sgmcmc::{Baoa, Sghmc, Sgld, Sgnht};

/// Which preconditioner the warm-up estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// None (the identity).
    Identity,
    /// The posterior variances.
    #[default]
    Diagonal,
    /// The posterior covariance (`d × d` work per step; for d up to a few thousand).
    Dense,
}

/// Settings of the warm-up adaptation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptConfig {
    /// The preconditioner to estimate.
    pub metric: MetricKind,
    /// Set the step size (`false`: the configured schedule is used as given).
    pub step_size: bool,
    /// δ: the relative variance bias the step size aims at.
    pub target_bias: f64,
    /// Power iterations of a curvature estimate (two gradients each).
    pub power_iterations: usize,
    /// Batches of a gradient-noise estimate (0: assume none).
    pub noise_batches: usize,
}

impl Default for AdaptConfig {
    fn default() -> Self {
        Self {
            metric: MetricKind::Diagonal,
            step_size: true,
            target_bias: 0.05,
            power_iterations: 20,
            noise_batches: 16,
        }
    }
}

impl AdaptConfig {
    /// Check the settings.
    pub fn validate(&self) -> Result<()> {
        if !(self.target_bias.is_finite() && self.target_bias > 0.0 && self.target_bias < 1.0) {
            return Err(Error::config(
                "target_bias",
                format!("must be in (0, 1), got {}", self.target_bias),
            ));
        }
        if self.step_size && self.power_iterations == 0 {
            return Err(Error::config(
                "power_iterations",
                "must be >= 1 to set the step size",
            ));
        }
        if self.noise_batches == 1 {
            return Err(Error::config(
                "noise_batches",
                "must be 0 (no estimate) or >= 2",
            ));
        }
        Ok(())
    }
}

/// What the step-size rule is given (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Largest curvature of the whitened, batch-averaged negative log posterior.
    pub curvature: f64,
    /// Largest variance over coordinates of the whitened minibatch gradient.
    pub gradient_noise: f64,
}

/// A sampler whose step size and preconditioner the warm-up can set: its
/// state carries a [`Tuning`](langevin_core::Tuning) ([`TransformState::tuning`]).
pub trait Adaptive: Transform {
    /// The log density it samples.
    type Density: LogDensity<Batch = Self::Batch>;
    /// The log density.
    fn log_density(&self) -> &Self::Density;
    /// The configured step size and temperature at `step` (before the tuning's factor).
    fn schedule_at(&self, step: u64) -> Result<(f64, f64)>;
    /// The step size whose relative variance bias is about `delta`, for what
    /// was measured, at `temperature` (> 0).
    fn step_size_for(&self, m: &Measured, temperature: f64, delta: f64) -> f64;
}

fn min_positive(a: f64, b: f64) -> f64 {
    let ok = |x: f64| x.is_finite() && x > 0.0;
    match (ok(a), ok(b)) {
        (true, true) => a.min(b),
        (true, false) => a,
        (false, true) => b,
        (false, false) => f64::NAN,
    }
}

/// SGHMC/SGNHT-type (Euler) rule: bias `ε λ / α + ε V / (2 α T)`, each ≤ δ.
fn euler_momentum_rule(m: &Measured, alpha: f64, t: f64, delta: f64) -> f64 {
    min_positive(
        delta * alpha / m.curvature,
        2.0 * delta * alpha * t / m.gradient_noise,
    )
}

impl<D: LogDensity> Adaptive for Sghmc<D> {
    type Density = D;
    fn log_density(&self) -> &D {
        self.density()
    }
    fn schedule_at(&self, step: u64) -> Result<(f64, f64)> {
        let c = self.config();
        crate::sgmcmc::schedules_at(&c.step_size, &c.temperature, step)
    }
    fn step_size_for(&self, m: &Measured, t: f64, delta: f64) -> f64 {
        let c = self.config();
        // In σ-free form (ε/σ, α/σ²) the bias ε λ / α does not involve σ.
        euler_momentum_rule(m, c.friction, t, delta)
    }
}

impl<D: LogDensity> Adaptive for Sgnht<D> {
    type Density = D;
    fn log_density(&self) -> &D {
        self.density()
    }
    fn schedule_at(&self, step: u64) -> Result<(f64, f64)> {
        let c = self.config();
        crate::sgmcmc::schedules_at(&c.step_size, &c.temperature, step)
    }
    fn step_size_for(&self, m: &Measured, t: f64, delta: f64) -> f64 {
        // The thermostat settles near α's scale; the injected noise is set by α.
        euler_momentum_rule(m, self.config().friction, t, delta)
    }
}

impl<D: LogDensity> Adaptive for Sgld<D> {
    type Density = D;
    fn log_density(&self) -> &D {
        self.density()
    }
    fn schedule_at(&self, step: u64) -> Result<(f64, f64)> {
        let c = self.config();
        crate::sgmcmc::schedules_at(&c.step_size, &c.temperature, step)
    }
    fn step_size_for(&self, m: &Measured, t: f64, delta: f64) -> f64 {
        // Euler–Maruyama: bias ε λ / 2; gradient noise ε V / (2 T).
        min_positive(
            2.0 * delta / m.curvature,
            2.0 * delta * t / m.gradient_noise,
        )
    }
}

impl<D: LogDensity> Adaptive for Baoa<D> {
    type Density = D;
    fn log_density(&self) -> &D {
        self.density()
    }
    fn schedule_at(&self, step: u64) -> Result<(f64, f64)> {
        let c = self.config();
        crate::sgmcmc::schedules_at(&c.step_size, &c.temperature, step)
    }
    fn step_size_for(&self, m: &Measured, t: f64, delta: f64) -> f64 {
        // Second-order configurational bias, about (ε² λ / 4) per unit
        // curvature: ε = 2 sqrt(δ / λ); gradient noise as for SGHMC with
        // friction γ = α σ⁻².
        let c = self.config();
        let gamma = c.friction / (c.sigma * c.sigma);
        min_positive(
            2.0 * (delta / m.curvature).sqrt(),
            2.0 * delta * gamma * t / m.gradient_noise,
        )
    }
}

/// The warm-up plan of `warmup` steps: the step boundaries at which the step
/// size is set and at which a metric window ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows {
    /// Boundaries (steps completed) where the step size is re-estimated.
    pub step_size_at: Vec<u64>,
    /// Ends of the metric windows (steps completed); the first starts at `start`.
    pub metric_ends: Vec<u64>,
    /// First step of the first metric window.
    pub start: u64,
}

impl Windows {
    /// Stan's windows scaled to `warmup` steps (module docs).
    pub fn new(warmup: u64) -> Self {
        if warmup < 20 {
            return Self {
                step_size_at: vec![0],
                metric_ends: vec![],
                start: 0,
            };
        }
        let init = (warmup * 3 / 40).max(1);
        let term = (warmup / 20).max(1);
        let base = (warmup / 40).max(1);
        let slow_end = warmup - term;
        let mut ends = Vec::new();
        let mut start = init;
        let mut size = base;
        while start < slow_end {
            let mut end = start + size;
            if end + 2 * size > slow_end {
                end = slow_end;
            }
            ends.push(end);
            start = end;
            size *= 2;
        }
        let mut at = vec![0, init];
        at.extend(&ends);
        Self {
            step_size_at: at,
            metric_ends: ends,
            start: init,
        }
    }

    /// Whether the state after `completed` steps is part of a metric window.
    pub fn in_window(&self, completed: u64) -> bool {
        completed > self.start && self.metric_ends.last().is_some_and(|&e| completed <= e)
    }
}

/// Running mean and sums of squared deviations (Welford) of vectors: `d`
/// sums (diagonal) or the lower triangle of the `d × d` matrix, row-major
/// (dense).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Moments {
    pub count: u64,
    pub mean: Vec<f64>,
    pub m2: Vec<f64>,
}

impl Moments {
    /// Add `x`.
    pub fn push(&mut self, x: &[f64], dense: bool) {
        let d = x.len();
        if self.mean.len() != d || self.count == 0 {
            self.mean = vec![0.0; d];
            self.m2 = vec![0.0; if dense { d * d } else { d }];
            self.count = 0;
        }
        self.count += 1;
        let n = self.count as f64;
        if dense {
            let delta: Vec<f64> = x.iter().zip(&self.mean).map(|(a, m)| a - m).collect();
            for (m, dl) in self.mean.iter_mut().zip(&delta) {
                *m += dl / n;
            }
            for (i, (xi, mi)) in x.iter().zip(&self.mean).enumerate() {
                let after = xi - mi;
                let row = &mut self.m2[i * d..i * d + i + 1];
                for (r, dj) in row.iter_mut().zip(&delta) {
                    *r += after * dj;
                }
            }
        } else {
            for ((m, s), xi) in self.mean.iter_mut().zip(self.m2.iter_mut()).zip(x) {
                let dl = xi - *m;
                *m += dl / n;
                *s += dl * (xi - *m);
            }
        }
    }

    /// The regularised covariance (dense, full `d × d`) or variances
    /// (diagonal) (module docs), or `None` with fewer than 3 vectors or no
    /// spread.
    fn regularised(&self, dense: bool) -> Option<Vec<f64>> {
        let n = self.count;
        let d = self.mean.len();
        if n < 3 || d == 0 {
            return None;
        }
        let nf = n as f64;
        let w = nf / (nf + 5.0);
        let var = |i: usize| {
            if dense {
                self.m2[i * d + i] / (nf - 1.0)
            } else {
                self.m2[i] / (nf - 1.0)
            }
        };
        let mean_var = (0..d).map(var).sum::<f64>() / d as f64;
        if !(mean_var.is_finite() && mean_var > 0.0) {
            return None;
        }
        let reg = (1.0 - w) * 1e-3 * mean_var;
        if !dense {
            return Some((0..d).map(|i| w * var(i) + reg).collect());
        }
        let m_eff = nf / 10.0;
        let shrink = m_eff / (m_eff + d as f64);
        let mut cov = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..=i {
                let c = self.m2[i * d + j] / (nf - 1.0);
                let v = if i == j { w * c + reg } else { w * shrink * c };
                cov[i * d + j] = v;
                cov[j * d + i] = v;
            }
        }
        Some(cov)
    }
}

/// A chain's warm-up accumulators (saved in checkpoints, so a resumed warm-up
/// continues bit-identically).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct WarmupState {
    /// The states of the current metric window.
    pub draws: Moments,
    /// Their gradients (with exact gradients only).
    pub grads: Moments,
    /// Whether the batches give exact gradients (no noise between two
    /// batches at the first measurement); `None` before it.
    pub exact_gradients: Option<bool>,
    /// The last measurement the step size was set from.
    pub measured: Option<Measured>,
}

impl WarmupState {
    /// The metric of the accumulated window at temperature `t`, then an
    /// empty window; `None` when the window cannot give one.
    ///
    /// With gradients (exact ones), nutpie's estimator: the inverse mass
    /// that maps the gradients' covariance `B` to the draws' covariance `A`,
    /// `X B X = A`, i.e. `X = A # B⁻¹` (the matrix geometric mean; for the
    /// diagonal metric `sqrt(A_ii / B_ii)`). On a Gaussian `B = H A H` for
    /// any `A`, so `X = H⁻¹` even from a window that explored the posterior
    /// only partly. Without: `X = A / T`.
    pub fn take_metric(&mut self, kind: MetricKind, t: f64) -> Result<Option<Metric>> {
        let draws = std::mem::take(&mut self.draws);
        let grads = std::mem::take(&mut self.grads);
        if kind == MetricKind::Identity || t.is_nan() || t <= 0.0 {
            return Ok(None);
        }
        let dense = kind == MetricKind::Dense;
        let Some(a) = draws.regularised(dense) else {
            return Ok(None);
        };
        let d = draws.mean.len();
        let b = grads.regularised(dense).filter(|_| grads.mean.len() == d);
        if !dense {
            let scale: Vec<f64> = match &b {
                Some(b) => a
                    .iter()
                    .zip(b)
                    .map(|(a, b)| (a / b).sqrt().sqrt())
                    .collect(),
                None => a.iter().map(|a| (a / t).sqrt()).collect(),
            };
            if scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                return Ok(None);
            }
            return Ok(Some(Metric::Diagonal { scale }));
        }
        let x = match &b {
            Some(b) => match geometric_mean_inverse(&a, b, d) {
                Some(x) => x,
                None => return Ok(None),
            },
            None => a.iter().map(|v| v / t).collect(),
        };
        match crate::curvature::cholesky(&x, d, "dense metric") {
            Ok(factor) => Ok(Some(Metric::Dense { dim: d, factor })),
            Err(_) => Ok(None),
        }
    }
}

/// `A # B⁻¹ = A^{1/2} (A^{1/2} B A^{1/2})^{-1/2} A^{1/2}` for symmetric
/// positive definite row-major `A`, `B` (`None` if either is not).
fn geometric_mean_inverse(a: &[f64], b: &[f64], d: usize) -> Option<Vec<f64>> {
    use faer::{Mat, Side};
    let am = Mat::<f64>::from_fn(d, d, |i, j| a[i * d + j]);
    let bm = Mat::<f64>::from_fn(d, d, |i, j| b[i * d + j]);
    let pow = |m: &Mat<f64>, p: f64| -> Option<Mat<f64>> {
        let e = m.self_adjoint_eigen(Side::Lower).ok()?;
        let s = e.S().column_vector();
        let u = e.U();
        let mut scaled = u.to_owned();
        for j in 0..d {
            let l = s[j];
            if !(l.is_finite() && l > 0.0) {
                return None;
            }
            let f = l.powf(p);
            for i in 0..d {
                scaled[(i, j)] *= f;
            }
        }
        Some(&scaled * u.transpose())
    };
    let ah = pow(&am, 0.5)?;
    let c = &ah * &bm * &ah;
    let c = Mat::<f64>::from_fn(d, d, |i, j| 0.5 * (c[(i, j)] + c[(j, i)]));
    let cm = pow(&c, -0.5)?;
    let x = &ah * &cm * &ah;
    let out: Vec<f64> = (0..d * d)
        .map(|k| {
            let (i, j) = (k / d, k % d);
            0.5 * (x[(i, j)] + x[(j, i)])
        })
        .collect();
    out.iter().all(|v| v.is_finite()).then_some(out)
}

/// The curvature and gradient noise at `theta` in `metric` (module docs):
/// `iters` power iterations from a normal start vector of `rng`, and the
/// variance of the whitened gradients of `batches.len()` batches. `Ok(None)`
/// when an evaluation is not finite (the caller keeps its tuning).
#[allow(clippy::too_many_arguments)]
pub fn measure<D: LogDensity>(
    density: &D,
    theta: &Params,
    metric: &Metric,
    curvature_batch: &D::Batch,
    noise_batches: &[&D::Batch],
    iters: usize,
    temperature: f64,
    rng: &mut ChainRng,
) -> Result<Option<Measured>> {
    let d = theta.len();
    let layout = theta.layout().clone();
    // Finite-difference step in the whitened coordinates: a tenth of the
    // posterior sd there (sqrt(T)) once a metric is known; 1e-4 in θ before.
    let h = if metric.is_identity() {
        1e-4
    } else {
        (0.1 * temperature.sqrt()).clamp(1e-7, 1e-2)
    };
    let mut v = vec![0.0; d];
    langevin_core::rng::fill_standard_normal(rng, &mut v);
    let mut u = vec![0.0; d];
    let mut gp = vec![0.0; d];
    let mut gm = vec![0.0; d];
    let mut tmp = vec![0.0; d];
    let mut lambda = f64::NAN;
    let grad = |x: Vec<f64>, g: &mut [f64]| -> Result<bool> {
        let p = Params::new(layout.clone(), x)?;
        match density.value_and_grad(&p, curvature_batch, g) {
            Ok((value, _)) => Ok(check_finite(value, g, 0).is_ok()),
            Err(e) if e.is_recoverable() => Ok(false),
            Err(e) => Err(e),
        }
    };
    for _ in 0..iters {
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if !(norm.is_finite() && norm > 0.0) {
            return Ok(None);
        }
        v.iter_mut().for_each(|x| *x /= norm);
        metric.apply(&v, &mut u);
        let plus = theta
            .values()
            .iter()
            .zip(&u)
            .map(|(t, s)| t + h * s)
            .collect();
        let minus = theta
            .values()
            .iter()
            .zip(&u)
            .map(|(t, s)| t - h * s)
            .collect();
        if !grad(plus, &mut gp)? || !grad(minus, &mut gm)? {
            return Ok(None);
        }
        for i in 0..d {
            v[i] = -(gp[i] - gm[i]) / (2.0 * h);
        }
        metric.whiten_gradient(&mut v, &mut tmp);
        lambda = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    }
    if !(lambda.is_finite() && lambda > 0.0) {
        return Ok(None);
    }
    let mut noise = 0.0;
    if noise_batches.len() >= 2 {
        // Shifted variance (deviations from the first batch's gradient), so
        // that identical batches give exactly 0.
        let k = noise_batches.len() as f64;
        let mut first = vec![0.0; d];
        let mut s1 = vec![0.0; d];
        let mut s2 = vec![0.0; d];
        for (b, batch) in noise_batches.iter().enumerate() {
            let g = if b == 0 { &mut first } else { &mut gp };
            match density.value_and_grad(theta, batch, g) {
                Ok((value, _)) if check_finite(value, g, 0).is_ok() => {}
                Ok(_) => return Ok(None),
                Err(e) if e.is_recoverable() => return Ok(None),
                Err(e) => return Err(e),
            }
            metric.whiten_gradient(g, &mut tmp);
            if b > 0 {
                for i in 0..d {
                    let dev = gp[i] - first[i];
                    s1[i] += dev;
                    s2[i] += dev * dev;
                }
            }
        }
        noise = (0..d)
            .map(|i| ((s2[i] - s1[i] * s1[i] / k) / (k - 1.0)).max(0.0))
            .fold(0.0, f64::max);
    }
    Ok(Some(Measured {
        curvature: lambda,
        gradient_noise: noise,
    }))
}

/// Carry out the warm-up's work due at the boundary `completed` (steps
/// completed, before the next step) of chain `k`: a metric from the window
/// that ends here, a step size. Called by the run loop before each step of
/// the warm-up and, with `after_step`, after each step to accumulate.
pub(crate) struct Warmup<'a> {
    pub config: &'a AdaptConfig,
    pub windows: Windows,
    pub warmup: u64,
}

impl Warmup<'_> {
    /// Before the step that follows `completed` steps.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn before_step<T, B>(
        &self,
        transform: &T,
        batches: &B,
        k: usize,
        completed: u64,
        state: &mut T::State,
        warm: &mut WarmupState,
        cursor: &mut B::Cursor,
        rng: &mut ChainRng,
    ) -> Result<()>
    where
        T: Adaptive<Batch = B::Batch>,
        B: BatchSource,
    {
        if completed >= self.warmup {
            return Ok(());
        }
        let metric_end = self.windows.metric_ends.contains(&completed);
        let step_now = self.windows.step_size_at.contains(&completed);
        if !metric_end && !step_now {
            return Ok(());
        }
        let (eps0, temp) = transform.schedule_at(completed)?;
        if temp.is_nan() || temp <= 0.0 {
            return Ok(());
        }
        if metric_end && self.config.metric != MetricKind::Identity {
            if let Some(metric) = warm.take_metric(self.config.metric, temp)? {
                if let Some(t) = state.tuning_mut() {
                    t.metric = metric;
                }
            }
        }
        let first = warm.exact_gradients.is_none();
        if !(step_now && (self.config.step_size || first)) {
            return Ok(());
        }
        let Some(tuning) = state.tuning().cloned() else {
            return Ok(());
        };
        let curv = batches.next(k, completed, cursor, rng)?;
        let mut noise = Vec::new();
        for _ in 0..self.config.noise_batches {
            noise.push(batches.next(k, completed, cursor, rng)?);
        }
        let noise_refs: Vec<&B::Batch> = noise.iter().map(|b| &**b).collect();
        let measured = measure(
            transform.log_density(),
            state.params(),
            &tuning.metric,
            &curv,
            &noise_refs,
            self.config.power_iterations,
            temp,
            rng,
        )?;
        if first {
            warm.exact_gradients = Some(measured.is_some_and(|m| m.gradient_noise == 0.0));
        }
        if !self.config.step_size {
            return Ok(());
        }
        if let Some(m) = measured {
            // The initial buffer only has to bring the chain to the typical
            // set (its draws are discarded): its step is set by the curvature
            // alone. Far from the mode the minibatch noise is large, and a
            // step set by it there left chains short of the posterior, with
            // windows of drifting draws that froze the metric.
            let rule = if completed < self.windows.start {
                Measured {
                    gradient_noise: 0.0,
                    ..m
                }
            } else {
                m
            };
            let eps = transform.step_size_for(&rule, temp, self.config.target_bias);
            if eps.is_finite() && eps > 0.0 {
                if let Some(t) = state.tuning_mut() {
                    t.step_scale = eps / eps0;
                }
                warm.measured = Some(m);
            }
        }
        Ok(())
    }

    /// After a step on `batch`: add the new state to the metric window,
    /// with its gradient on that batch when the gradients are exact.
    pub(crate) fn after_step<T: Adaptive>(
        &self,
        transform: &T,
        batch: &T::Batch,
        completed: u64,
        state: &T::State,
        warm: &mut WarmupState,
    ) -> Result<()> {
        if self.config.metric == MetricKind::Identity || !self.windows.in_window(completed) {
            return Ok(());
        }
        let dense = self.config.metric == MetricKind::Dense;
        let theta = state.params();
        if !theta.values().iter().all(|v| v.is_finite()) {
            return Ok(());
        }
        if warm.exact_gradients == Some(true) {
            let mut g = vec![0.0; theta.len()];
            match transform.log_density().value_and_grad(theta, batch, &mut g) {
                Ok((v, _)) if check_finite(v, &g, completed).is_ok() => {
                    warm.grads.push(&g, dense);
                }
                // A state whose gradient is not finite is left out of both.
                Ok(_) => return Ok(()),
                Err(e) if e.is_recoverable() => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        warm.draws.push(theta.values(), dense);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_stan_proportions() {
        let w = Windows::new(1000);
        assert_eq!(w.start, 75);
        assert_eq!(w.metric_ends, vec![100, 150, 250, 450, 950]);
        assert_eq!(w.step_size_at, vec![0, 75, 100, 150, 250, 450, 950]);
        assert!(w.in_window(76) && w.in_window(950) && !w.in_window(75) && !w.in_window(951));
        let short = Windows::new(10);
        assert!(short.metric_ends.is_empty());
        assert_eq!(short.step_size_at, vec![0]);
    }

    #[test]
    fn welford_matches_two_pass() {
        let xs: Vec<Vec<f64>> = (0..50)
            .map(|i| {
                let t = i as f64;
                vec![t.sin(), (0.3 * t).cos() * 2.0 + t.sin()]
            })
            .collect();
        for dense in [false, true] {
            let mut w = Moments::default();
            xs.iter().for_each(|x| w.push(x, dense));
            let n = xs.len() as f64;
            let mean: Vec<f64> = (0..2)
                .map(|j| xs.iter().map(|x| x[j]).sum::<f64>() / n)
                .collect();
            let c = |a: usize, b: usize| {
                xs.iter()
                    .map(|x| (x[a] - mean[a]) * (x[b] - mean[b]))
                    .sum::<f64>()
            };
            if dense {
                assert!((w.m2[0] - c(0, 0)).abs() < 1e-12);
                assert!((w.m2[2] - c(1, 0)).abs() < 1e-12);
                assert!((w.m2[3] - c(1, 1)).abs() < 1e-12);
            } else {
                assert!((w.m2[0] - c(0, 0)).abs() < 1e-12 && (w.m2[1] - c(1, 1)).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn config_is_validated() {
        assert!(AdaptConfig::default().validate().is_ok());
        for bad in [0.0, 1.0, f64::NAN] {
            let c = AdaptConfig {
                target_bias: bad,
                ..Default::default()
            };
            assert!(c.validate().is_err());
        }
        let c = AdaptConfig {
            noise_batches: 1,
            ..Default::default()
        };
        assert!(c.validate().is_err());
    }
}
