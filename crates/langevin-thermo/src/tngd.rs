//! Thermodynamic natural gradient descent (TNGD).
//!
//! Natural gradient descent preconditions the gradient `g` with the inverse of
//! a curvature matrix, here the generalised Gauss-Newton (GGN)
//! `F = (1/B) Σ_b J_bᵀ H_b J_b + λ I` of a batch (for softmax cross-entropy
//! `H_b = diag(p_b) - p_b p_bᵀ`). TNGD (Donatella et al., "Thermodynamic
//! natural gradient descent", 2024) leaves the solve `F⁻¹ g` to an analog
//! device whose state follows the Ornstein-Uhlenbeck process
//!
//! ```text
//!     dg̃ = -(F g̃ - g) dt + sqrt(2 κ₀) dW,        t in units of τ = RC,
//! ```
//!
//! whose mean relaxes from its start to `F⁻¹ g` (`E g̃(t) = F⁻¹g + e^{-Ft}(g̃(0) - F⁻¹g)`)
//! and whose stationary covariance is `κ₀ F⁻¹`. Each step:
//!
//! 1. compute `g` and `F` on a batch (digital);
//! 2. (optional delay `t_d`: the device keeps running on the previous `(F, g)`
//!    while the new one is uploaded);
//! 3. run the OU process for analog time `t` *starting from the previous g̃*
//!    (the device is not reset, so at `t = 0` TNGD is SGD on the stale
//!    preconditioned direction and for `t → ∞` it is NGD plus noise of
//!    covariance `κ₀ F⁻¹`);
//! 4. update θ with SGD or Adam using g̃.
//!
//! The OU step is simulated exactly (eigendecomposition of the symmetric
//! `F`; [`Integrator::Exact`]) or with Euler-Maruyama with a stated step
//! ([`Integrator::EulerMaruyama`], the "simulation step" of the paper; it
//! must satisfy `dt λ_max(F) < 2`).
//!
//! The model is a self-contained tanh MLP with one hidden layer ([`Mlp`]):
//! explicit forward, backward and per-example output Jacobians (tested
//! against finite differences). Parameter ravel order: `W1` (hidden × d_in,
//! row-major), `b1`, `W2` (k × hidden, row-major), `b2`.
//!
//! **Modelled wall time.** Digital work (gradient, GGN build, Cholesky
//! solve, CG iterations) is *measured* with a monotonic clock on the host;
//! analog work is *modelled* as `(t + t_d) τ` seconds with `τ = RC`
//! ([`TrainConfig::tau_seconds`], default 1 µs: R = 1 kΩ, C = 1 nF, the
//! order of magnitude of the SPU's RC constant). Upload of `F` to the device
//! is not modelled (stated in the results).

#![allow(clippy::needless_range_loop)] // dense numerical kernels index several arrays at once

use faer::prelude::*;
use faer::{Accum, Mat, Par, Side};
use langevin_core::rng::{chain_rng, fill_standard_normal, ChainRng};
use langevin_core::Error;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::Instant;

type Result<T> = std::result::Result<T, Error>;

// ---------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------

/// A classification data set: `x` is `n × d` row-major, labels in `0..k`.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub x: Vec<f64>,
    pub y: Vec<usize>,
    pub n: usize,
    pub d: usize,
    pub k: usize,
}

impl Dataset {
    /// Build a data set, checking sizes and labels.
    pub fn new(x: Vec<f64>, y: Vec<usize>, d: usize, k: usize) -> Result<Self> {
        let n = y.len();
        if d == 0 || k < 2 {
            return Err(Error::Data(format!(
                "need d >= 1 and k >= 2 classes, got d = {d}, k = {k}"
            )));
        }
        if x.len() != n * d {
            return Err(Error::DimensionMismatch {
                what: "dataset features",
                expected: n * d,
                got: x.len(),
            });
        }
        if let Some(bad) = y.iter().find(|&&c| c >= k) {
            return Err(Error::Data(format!("label {bad} out of range 0..{k}")));
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(Error::Data("non-finite feature value".into()));
        }
        Ok(Self { x, y, n, d, k })
    }

    /// Read a CSV with a header whose last column is the integer class label
    /// (the layout of `data/digits.csv`). Features are multiplied by `scale`.
    pub fn from_csv(path: &std::path::Path, scale: f64) -> Result<Self> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: p.clone(),
            line: None,
            message: e.to_string(),
        })?;
        let mut lines = text.lines();
        let header = lines.next().ok_or_else(|| Error::Io {
            path: p.clone(),
            line: Some(1),
            message: "empty file".into(),
        })?;
        let ncol = header.split(',').count();
        if ncol < 2 {
            return Err(Error::Io {
                path: p,
                line: Some(1),
                message: "need at least one feature and a label column".into(),
            });
        }
        let d = ncol - 1;
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for (i, line) in lines.enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split(',').collect();
            if fields.len() != ncol {
                return Err(Error::Io {
                    path: p,
                    line: Some(i + 2),
                    message: format!("expected {ncol} fields, got {}", fields.len()),
                });
            }
            for f in &fields[..d] {
                let v: f64 = f.trim().parse().map_err(|_| Error::Io {
                    path: p.clone(),
                    line: Some(i + 2),
                    message: format!("not a number: {f:?}"),
                })?;
                x.push(v * scale);
            }
            let lab = fields[d].trim();
            let c: usize = lab
                .parse()
                .or_else(|_| lab.parse::<f64>().map(|v| v as usize))
                .map_err(|_| Error::Io {
                    path: p.clone(),
                    line: Some(i + 2),
                    message: format!("bad label {lab:?}"),
                })?;
            y.push(c);
        }
        let k = y.iter().copied().max().map_or(0, |m| m + 1);
        Self::new(x, y, d, k.max(2))
    }

    /// Deterministic shuffled split into (train, test) with `test_fraction` of the rows in test.
    pub fn split(&self, test_fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        if !(0.0..1.0).contains(&test_fraction) {
            return Err(Error::InvalidConfig {
                field: "test_fraction",
                reason: format!("must be in [0, 1), got {test_fraction}"),
            });
        }
        let mut idx: Vec<usize> = (0..self.n).collect();
        let mut rng = chain_rng(seed, 0);
        for i in (1..idx.len()).rev() {
            let j = rng.random_range(0..=i);
            idx.swap(i, j);
        }
        let n_test = (self.n as f64 * test_fraction).round() as usize;
        let take = |rows: &[usize]| {
            let mut x = Vec::with_capacity(rows.len() * self.d);
            let mut y = Vec::with_capacity(rows.len());
            for &r in rows {
                x.extend_from_slice(&self.x[r * self.d..(r + 1) * self.d]);
                y.push(self.y[r]);
            }
            Dataset {
                x,
                y,
                n: rows.len(),
                d: self.d,
                k: self.k,
            }
        };
        Ok((take(&idx[n_test..]), take(&idx[..n_test])))
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.d..(i + 1) * self.d]
    }
}

// ---------------------------------------------------------------------------
// MLP
// ---------------------------------------------------------------------------

/// One-hidden-layer tanh MLP with softmax cross-entropy loss.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Mlp {
    pub d_in: usize,
    pub hidden: usize,
    pub k: usize,
}

/// Per-batch curvature: mean loss, mean gradient and the damped GGN.
pub struct Curvature {
    pub loss: f64,
    pub grad: Vec<f64>,
    /// Factor `G` (B·k × P) with `F = GᵀG + λI`.
    pub factor: Mat<f64>,
    pub damping: f64,
}

impl Curvature {
    /// The dense damped GGN `GᵀG + λI`.
    pub fn dense(&self) -> Mat<f64> {
        let pn = self.factor.ncols();
        let mut f = Mat::<f64>::zeros(pn, pn);
        faer::linalg::matmul::matmul(
            f.as_mut(),
            Accum::Replace,
            self.factor.transpose(),
            self.factor.as_ref(),
            1.0,
            Par::Seq,
        );
        for i in 0..pn {
            f[(i, i)] += self.damping;
        }
        f
    }

    /// `F v` without forming `F`.
    pub fn matvec(&self, v: &[f64]) -> Vec<f64> {
        let gv = mat_vec(&self.factor, v);
        let mut out = mat_t_vec(&self.factor, &gv);
        for (o, x) in out.iter_mut().zip(v) {
            *o += self.damping * x;
        }
        out
    }
}

impl Mlp {
    /// Number of parameters.
    pub fn n_params(&self) -> usize {
        self.hidden * self.d_in + self.hidden + self.k * self.hidden + self.k
    }

    /// Glorot-style initialisation (biases zero).
    pub fn init(&self, rng: &mut ChainRng) -> Vec<f64> {
        let mut th = vec![0.0; self.n_params()];
        let (o1, o2, o3) = self.offsets();
        let s1 = (1.0 / self.d_in as f64).sqrt();
        let s2 = (1.0 / self.hidden as f64).sqrt();
        fill_standard_normal(rng, &mut th[..o1]);
        th[..o1].iter_mut().for_each(|v| *v *= s1);
        fill_standard_normal(rng, &mut th[o2..o3]);
        th[o2..o3].iter_mut().for_each(|v| *v *= s2);
        th
    }

    /// Offsets of b1, W2, b2 in the ravelled parameter vector.
    fn offsets(&self) -> (usize, usize, usize) {
        let o1 = self.hidden * self.d_in;
        let o2 = o1 + self.hidden;
        let o3 = o2 + self.k * self.hidden;
        (o1, o2, o3)
    }

    /// Forward pass for one input: hidden activations `z` and softmax probabilities `p`.
    fn forward_one(&self, th: &[f64], x: &[f64], z: &mut [f64], p: &mut [f64]) {
        let (o1, o2, o3) = self.offsets();
        for j in 0..self.hidden {
            let w = &th[j * self.d_in..(j + 1) * self.d_in];
            let a: f64 = w.iter().zip(x).map(|(a, b)| a * b).sum::<f64>() + th[o1 + j];
            z[j] = a.tanh();
        }
        let mut m = f64::NEG_INFINITY;
        for c in 0..self.k {
            let w = &th[o2 + c * self.hidden..o2 + (c + 1) * self.hidden];
            p[c] = w.iter().zip(z.iter()).map(|(a, b)| a * b).sum::<f64>() + th[o3 + c];
            m = m.max(p[c]);
        }
        let mut s = 0.0;
        for v in p.iter_mut() {
            *v = (*v - m).exp();
            s += *v;
        }
        p.iter_mut().for_each(|v| *v /= s);
    }

    /// Raw outputs (logits) for one input (used by the finite-difference tests).
    pub fn logits_one(&self, th: &[f64], x: &[f64]) -> Vec<f64> {
        let (_, o2, o3) = self.offsets();
        let mut z = vec![0.0; self.hidden];
        let mut p = vec![0.0; self.k];
        self.forward_one(th, x, &mut z, &mut p);
        (0..self.k)
            .map(|c| {
                th[o2 + c * self.hidden..o2 + (c + 1) * self.hidden]
                    .iter()
                    .zip(&z)
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
                    + th[o3 + c]
            })
            .collect()
    }

    /// Output Jacobian `∂o/∂θ` (k × P, row-major) for one input, given its hidden activations.
    pub fn jacobian_one(&self, th: &[f64], x: &[f64], jac: &mut [f64]) {
        let p_n = self.n_params();
        let (o1, o2, o3) = self.offsets();
        let mut z = vec![0.0; self.hidden];
        let mut p = vec![0.0; self.k];
        self.forward_one(th, x, &mut z, &mut p);
        jac.iter_mut().for_each(|v| *v = 0.0);
        for c in 0..self.k {
            let row = &mut jac[c * p_n..(c + 1) * p_n];
            for j in 0..self.hidden {
                let w2 = th[o2 + c * self.hidden + j];
                let dz = w2 * (1.0 - z[j] * z[j]);
                for (r, xi) in row[j * self.d_in..(j + 1) * self.d_in].iter_mut().zip(x) {
                    *r = dz * xi;
                }
                row[o1 + j] = dz;
                row[o2 + c * self.hidden + j] = z[j];
            }
            row[o3 + c] = 1.0;
        }
    }

    /// Mean cross-entropy and its gradient over `rows` of `data` (backprop).
    pub fn loss_grad(&self, th: &[f64], data: &Dataset, rows: &[usize]) -> (f64, Vec<f64>) {
        let (o1, o2, o3) = self.offsets();
        let mut g = vec![0.0; self.n_params()];
        let mut z = vec![0.0; self.hidden];
        let mut p = vec![0.0; self.k];
        let mut dz = vec![0.0; self.hidden];
        let mut loss = 0.0;
        let inv = 1.0 / rows.len().max(1) as f64;
        for &r in rows {
            let x = data.row(r);
            self.forward_one(th, x, &mut z, &mut p);
            let y = data.y[r];
            loss -= p[y].max(1e-300).ln();
            dz.iter_mut().for_each(|v| *v = 0.0);
            for c in 0..self.k {
                let e = (p[c] - if c == y { 1.0 } else { 0.0 }) * inv;
                for j in 0..self.hidden {
                    g[o2 + c * self.hidden + j] += e * z[j];
                    dz[j] += e * th[o2 + c * self.hidden + j];
                }
                g[o3 + c] += e;
            }
            for j in 0..self.hidden {
                let da = dz[j] * (1.0 - z[j] * z[j]);
                for (gi, xi) in g[j * self.d_in..(j + 1) * self.d_in].iter_mut().zip(x) {
                    *gi += da * xi;
                }
                g[o1 + j] += da;
            }
        }
        (loss * inv, g)
    }

    /// Mean cross-entropy over the whole data set.
    pub fn loss(&self, th: &[f64], data: &Dataset) -> f64 {
        let mut z = vec![0.0; self.hidden];
        let mut p = vec![0.0; self.k];
        let mut l = 0.0;
        for i in 0..data.n {
            self.forward_one(th, data.row(i), &mut z, &mut p);
            l -= p[data.y[i]].max(1e-300).ln();
        }
        l / data.n.max(1) as f64
    }

    /// Classification accuracy over the whole data set.
    pub fn accuracy(&self, th: &[f64], data: &Dataset) -> f64 {
        let mut z = vec![0.0; self.hidden];
        let mut p = vec![0.0; self.k];
        let mut ok = 0usize;
        for i in 0..data.n {
            self.forward_one(th, data.row(i), &mut z, &mut p);
            let arg = (0..self.k)
                .max_by(|&a, &b| p[a].total_cmp(&p[b]))
                .unwrap_or(0);
            ok += usize::from(arg == data.y[i]);
        }
        ok as f64 / data.n.max(1) as f64
    }

    /// Loss, gradient and damped GGN `F = (1/B) Σ J_bᵀ H_b J_b + λ I` on `rows`.
    ///
    /// Built as `F = GᵀG + λI` with `G` stacking `S_bᵀ J_b / sqrt(B)`, where
    /// `H_b = S_b S_bᵀ`, `S = (I - p 1ᵀ) diag(sqrt p)`.
    pub fn curvature(&self, th: &[f64], data: &Dataset, rows: &[usize], damping: f64) -> Curvature {
        let pn = self.n_params();
        let b = rows.len().max(1);
        let mut gmat = Mat::<f64>::zeros(b * self.k, pn);
        let mut jac = vec![0.0; self.k * pn];
        let mut z = vec![0.0; self.hidden];
        let mut p = vec![0.0; self.k];
        let mut grad = vec![0.0; pn];
        let mut loss = 0.0;
        let sb = 1.0 / (b as f64).sqrt();
        for (bi, &r) in rows.iter().enumerate() {
            let x = data.row(r);
            self.forward_one(th, x, &mut z, &mut p);
            self.jacobian_one(th, x, &mut jac);
            let y = data.y[r];
            loss -= p[y].max(1e-300).ln();
            for c in 0..self.k {
                let e = (p[c] - if c == y { 1.0 } else { 0.0 }) / b as f64;
                for (gi, ji) in grad.iter_mut().zip(&jac[c * pn..(c + 1) * pn]) {
                    *gi += e * ji;
                }
            }
            // Row j of S_bᵀ J_b: sqrt(p_j) (J_j - Σ_c p_c J_c).
            let mut pj = vec![0.0; pn];
            for c in 0..self.k {
                for (a, ji) in pj.iter_mut().zip(&jac[c * pn..(c + 1) * pn]) {
                    *a += p[c] * ji;
                }
            }
            for j in 0..self.k {
                let s = p[j].sqrt() * sb;
                let jr = &jac[j * pn..(j + 1) * pn];
                let mut row = gmat.row_mut(bi * self.k + j);
                for q in 0..pn {
                    row[q] = s * (jr[q] - pj[q]);
                }
            }
        }
        Curvature {
            loss: loss / b as f64,
            grad,
            factor: gmat,
            damping,
        }
    }
}

// ---------------------------------------------------------------------------
// The analog OU solver
// ---------------------------------------------------------------------------

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
fn sym_eig(f: &Mat<f64>) -> Result<(Vec<f64>, Mat<f64>)> {
    let e = f
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| Error::NotPositiveDefinite {
            context: Some("eigendecomposition of F failed".into()),
        })?;
    let n = f.nrows();
    let lam: Vec<f64> = (0..n).map(|i| e.S().column_vector()[i]).collect();
    if lam.iter().any(|&l| l.is_nan() || l <= 0.0) {
        return Err(Error::NotPositiveDefinite {
            context: Some("the OU drift F must be symmetric positive definite".into()),
        });
    }
    Ok((lam, e.U().to_owned()))
}

fn mat_t_vec(u: &Mat<f64>, v: &[f64]) -> Vec<f64> {
    (0..u.ncols())
        .map(|j| (0..u.nrows()).map(|i| u[(i, j)] * v[i]).sum())
        .collect()
}

fn mat_vec(u: &Mat<f64>, v: &[f64]) -> Vec<f64> {
    (0..u.nrows())
        .map(|i| (0..u.ncols()).map(|j| u[(i, j)] * v[j]).sum())
        .collect()
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
    let gy = mat_t_vec(&u, g);
    let y0 = mat_t_vec(&u, x0);
    let y: Vec<f64> = (0..lam.len())
        .map(|i| {
            let ys = gy[i] / lam[i];
            ys + (-lam[i] * t).exp() * (y0[i] - ys)
        })
        .collect();
    Ok(mat_vec(&u, &y))
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
            let gy = mat_t_vec(&u, g);
            let y0 = mat_t_vec(&u, x0);
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
            Ok(mat_vec(&u, &y))
        }
        Integrator::EulerMaruyama { dt } => {
            let steps = (t / dt).ceil().max(1.0) as usize;
            let h = t / steps as f64;
            let sq = (2.0 * kappa * h).sqrt();
            let mut x = x0.to_vec();
            let mut xi = vec![0.0; n];
            for _ in 0..steps {
                let fx = mat_vec(f, &x);
                if kappa > 0.0 {
                    fill_standard_normal(rng, &mut xi);
                }
                for i in 0..n {
                    x[i] += -(fx[i] - g[i]) * h + sq * xi[i];
                }
                if x.iter().any(|v| !v.is_finite()) {
                    return Err(Error::InvalidConfig {
                        field: "dt",
                        reason: format!(
                            "Euler-Maruyama diverged (dt = {dt} too large for λ_max(F))"
                        ),
                    });
                }
            }
            Ok(x)
        }
    }
}

/// Conjugate gradients on SPD `F x = g`, `iters` iterations from `x0`.
pub fn conjugate_gradient(f: &Mat<f64>, g: &[f64], x0: &[f64], iters: usize) -> Vec<f64> {
    cg_with(|v| mat_vec(f, v), g, x0, iters)
}

/// Conjugate gradients with a matrix-vector product closure.
pub fn cg_with(fmul: impl Fn(&[f64]) -> Vec<f64>, g: &[f64], x0: &[f64], iters: usize) -> Vec<f64> {
    let mut x = x0.to_vec();
    let fx = fmul(&x);
    let mut r: Vec<f64> = g.iter().zip(&fx).map(|(a, b)| a - b).collect();
    let mut p = r.clone();
    let mut rr: f64 = r.iter().map(|v| v * v).sum();
    for _ in 0..iters {
        if rr <= 1e-30 {
            break;
        }
        let fp = fmul(&p);
        let pfp: f64 = p.iter().zip(&fp).map(|(a, b)| a * b).sum();
        if pfp <= 0.0 {
            break;
        }
        let a = rr / pfp;
        for i in 0..x.len() {
            x[i] += a * p[i];
            r[i] -= a * fp[i];
        }
        let rr2: f64 = r.iter().map(|v| v * v).sum();
        let beta = rr2 / rr;
        rr = rr2;
        for i in 0..p.len() {
            p[i] = r[i] + beta * p[i];
        }
    }
    x
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

/// Run the OU process for `F = GᵀG + λI` given by its factor (the GGN of
/// [`Mlp::curvature`]) without forming `F`: the exact transition uses the
/// eigendecomposition of the small Gram matrix `GGᵀ` (rank ≤ B·k), the
/// complement of `G`'s row space relaxing at rate λ. Same law as
/// [`ou_evolve`] on [`Curvature::dense`].
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
            let steps = (t / dt).ceil().max(1.0) as usize;
            let h = t / steps as f64;
            let sq = (2.0 * kappa * h).sqrt();
            let mut x = x0.to_vec();
            let mut xi = vec![0.0; pn];
            for _ in 0..steps {
                let fx = c.matvec(&x);
                if kappa > 0.0 {
                    fill_standard_normal(rng, &mut xi);
                }
                for i in 0..pn {
                    x[i] += -(fx[i] - c.grad[i]) * h + sq * xi[i];
                }
                if x.iter().any(|v| !v.is_finite()) {
                    return Err(Error::InvalidConfig {
                        field: "dt",
                        reason: format!(
                            "Euler-Maruyama diverged (dt = {dt} too large for λ_max(F))"
                        ),
                    });
                }
            }
            Ok(x)
        }
        Integrator::Exact => {
            let r = c.factor.nrows();
            let mut k = Mat::<f64>::zeros(r, r);
            faer::linalg::matmul::matmul(
                k.as_mut(),
                Accum::Replace,
                c.factor.as_ref(),
                c.factor.transpose(),
                1.0,
                Par::Seq,
            );
            let e = k
                .self_adjoint_eigen(Side::Lower)
                .map_err(|_| Error::NotPositiveDefinite {
                    context: Some("Gram eigendecomposition failed".into()),
                })?;
            let s: Vec<f64> = (0..r).map(|i| e.S().column_vector()[i]).collect();
            let smax = s.iter().cloned().fold(0.0, f64::max);
            let keep: Vec<usize> = (0..r)
                .filter(|&i| s[i] > 1e-12 * smax.max(1e-300))
                .collect();
            let mut w = Mat::<f64>::zeros(pn, r);
            faer::linalg::matmul::matmul(
                w.as_mut(),
                Accum::Replace,
                c.factor.transpose(),
                e.U(),
                1.0,
                Par::Seq,
            );
            let v = Mat::from_fn(pn, keep.len(), |i, j| w[(i, keep[j])] / s[keep[j]].sqrt());
            let mu: Vec<f64> = keep.iter().map(|&i| s[i] + c.damping).collect();
            let lam = c.damping;
            let apply = |f: &dyn Fn(f64) -> f64, x: &[f64]| -> Vec<f64> {
                let coef = mat_t_vec(&v, x);
                let scaled: Vec<f64> = coef
                    .iter()
                    .zip(&mu)
                    .map(|(a, m)| (f(*m) - f(lam)) * a)
                    .collect();
                let back = mat_vec(&v, &scaled);
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

fn cholesky_solve(f: &Mat<f64>, g: &[f64]) -> Result<Vec<f64>> {
    let llt = f.llt(Side::Lower).map_err(|_| Error::NotPositiveDefinite {
        context: Some("GGN Cholesky".into()),
    })?;
    let rhs = Mat::from_fn(g.len(), 1, |i, _| g[i]);
    let sol = llt.solve(&rhs);
    Ok((0..g.len()).map(|i| sol[(i, 0)]).collect())
}

// ---------------------------------------------------------------------------
// Optimisers and training
// ---------------------------------------------------------------------------

/// The update rule applied to the (preconditioned) direction.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub enum Optimizer {
    Sgd {
        lr: f64,
    },
    Adam {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
    },
}

impl Optimizer {
    /// Adam with the usual β's.
    pub fn adam(lr: f64) -> Self {
        Optimizer::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
    fn validate(&self) -> Result<()> {
        let lr = match *self {
            Optimizer::Sgd { lr } => lr,
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                if !((0.0..1.0).contains(&beta1) && (0.0..1.0).contains(&beta2) && eps > 0.0) {
                    return Err(Error::InvalidConfig {
                        field: "adam",
                        reason: "need 0 <= beta < 1 and eps > 0".into(),
                    });
                }
                lr
            }
        };
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::InvalidConfig {
                field: "lr",
                reason: format!("must be finite and > 0, got {lr}"),
            });
        }
        Ok(())
    }
}

/// Which direction is fed to the optimiser.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub enum Method {
    /// The plain gradient.
    Gradient,
    /// Exact NGD: `F⁻¹ g` by Cholesky.
    Ngd,
    /// NGD with `iters` conjugate-gradient iterations warm-started at the previous direction.
    NgdCg { iters: usize },
    /// Thermodynamic NGD.
    Tngd(OuConfig),
}

impl Method {
    /// A short label for tables and plots.
    pub fn label(&self, opt: &Optimizer) -> String {
        let o = match opt {
            Optimizer::Sgd { .. } => "SGD",
            Optimizer::Adam { .. } => "Adam",
        };
        match self {
            Method::Gradient => o.to_string(),
            Method::Ngd => format!("NGD-{o}"),
            Method::NgdCg { iters } => format!("NGD-CG{iters}-{o}"),
            Method::Tngd(c) => format!("TNGD(t={},k0={})-{o}", c.time, c.kappa),
        }
    }
}

/// Training configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    pub hidden: usize,
    pub batch: usize,
    pub iters: usize,
    pub eval_every: usize,
    /// GGN damping λ.
    pub damping: f64,
    pub optimizer: Optimizer,
    pub method: Method,
    pub seed: u64,
    /// τ = RC of the analog device in seconds (modelled time).
    pub tau_seconds: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            hidden: 16,
            batch: 64,
            iters: 200,
            eval_every: 10,
            damping: 0.1,
            optimizer: Optimizer::adam(1e-2),
            method: Method::Gradient,
            seed: 0,
            tau_seconds: 1e-6,
        }
    }
}

impl TrainConfig {
    /// Validate.
    pub fn validate(&self) -> Result<()> {
        if self.hidden == 0 || self.batch == 0 || self.eval_every == 0 {
            return Err(Error::InvalidConfig {
                field: "hidden/batch/eval_every",
                reason: "must be >= 1".into(),
            });
        }
        if !(self.damping.is_finite() && self.damping >= 0.0) {
            return Err(Error::InvalidConfig {
                field: "damping",
                reason: format!("must be >= 0, got {}", self.damping),
            });
        }
        if !(self.tau_seconds.is_finite() && self.tau_seconds > 0.0) {
            return Err(Error::InvalidConfig {
                field: "tau_seconds",
                reason: "must be > 0".into(),
            });
        }
        self.optimizer.validate()?;
        match self.method {
            Method::Tngd(c) => {
                c.validate()?;
                if self.damping == 0.0 && c.kappa > 0.0 {
                    return Err(Error::InvalidConfig {
                        field: "damping",
                        reason: "noisy TNGD needs damping > 0 (F must be positive definite)".into(),
                    });
                }
            }
            Method::NgdCg { iters: 0 } => {
                return Err(Error::InvalidConfig {
                    field: "cg_iters",
                    reason: "must be >= 1".into(),
                });
            }
            _ => {}
        }
        Ok(())
    }
}

/// One evaluation point of a training run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TracePoint {
    pub iter: usize,
    /// Full training-set loss.
    pub train_loss: f64,
    pub test_accuracy: f64,
    /// Measured digital seconds + modelled analog seconds so far.
    pub wall_seconds: f64,
    /// Modelled analog seconds so far (part of `wall_seconds`).
    pub analog_seconds: f64,
}

/// A training run's trace and final parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainResult {
    pub label: String,
    pub trace: Vec<TracePoint>,
    pub params: Vec<f64>,
}

/// Train the MLP on `train` with `cfg`, evaluating on `test`. Same seed, same losses.
pub fn train(train: &Dataset, test: &Dataset, cfg: &TrainConfig) -> Result<TrainResult> {
    cfg.validate()?;
    if train.n == 0 || test.d != train.d {
        return Err(Error::Data(
            "empty training set or train/test feature sizes differ".into(),
        ));
    }
    let mlp = Mlp {
        d_in: train.d,
        hidden: cfg.hidden,
        k: train.k.max(test.k),
    };
    let pn = mlp.n_params();
    let mut rng = chain_rng(cfg.seed, 0);
    let mut noise_rng = chain_rng(cfg.seed, 1);
    let mut th = mlp.init(&mut rng);
    let mut m = vec![0.0; pn];
    let mut v = vec![0.0; pn];
    let mut dir_prev = vec![0.0; pn];
    let mut prev_c: Option<Curvature> = None;
    let mut trace = Vec::new();
    let (mut digital, mut analog) = (0.0f64, 0.0f64);
    let batch = cfg.batch.min(train.n);
    let mut perm: Vec<usize> = (0..train.n).collect();
    let mut pos = train.n;
    let eval = |it: usize, th: &[f64], digital: f64, analog: f64, trace: &mut Vec<TracePoint>| {
        trace.push(TracePoint {
            iter: it,
            train_loss: mlp.loss(th, train),
            test_accuracy: mlp.accuracy(th, test),
            wall_seconds: digital + analog,
            analog_seconds: analog,
        });
    };
    eval(0, &th, 0.0, 0.0, &mut trace);
    for it in 1..=cfg.iters {
        if pos + batch > train.n {
            for i in (1..perm.len()).rev() {
                let j = rng.random_range(0..=i);
                perm.swap(i, j);
            }
            pos = 0;
        }
        let rows = &perm[pos..pos + batch];
        pos += batch;
        let t0 = Instant::now();
        let dir = match cfg.method {
            Method::Gradient => {
                let (_, g) = mlp.loss_grad(&th, train, rows);
                digital += t0.elapsed().as_secs_f64();
                g
            }
            Method::Ngd => {
                let c = mlp.curvature(&th, train, rows, cfg.damping);
                let d = cholesky_solve(&c.dense(), &c.grad)?;
                digital += t0.elapsed().as_secs_f64();
                d
            }
            Method::NgdCg { iters } => {
                let c = mlp.curvature(&th, train, rows, cfg.damping);
                let d = cg_with(|v| c.matvec(v), &c.grad, &dir_prev, iters);
                digital += t0.elapsed().as_secs_f64();
                d
            }
            Method::Tngd(ou) => {
                let c = mlp.curvature(&th, train, rows, cfg.damping);
                digital += t0.elapsed().as_secs_f64();
                let mut x = dir_prev.clone();
                if ou.delay > 0.0 {
                    if let Some(cp) = &prev_c {
                        x = ou_evolve_factored(
                            cp,
                            &x,
                            ou.delay,
                            ou.kappa,
                            ou.integrator,
                            &mut noise_rng,
                        )?;
                    }
                }
                let x =
                    ou_evolve_factored(&c, &x, ou.time, ou.kappa, ou.integrator, &mut noise_rng)?;
                analog += (ou.time + ou.delay) * cfg.tau_seconds;
                if ou.delay > 0.0 {
                    prev_c = Some(c);
                }
                x
            }
        };
        if dir.iter().any(|x| !x.is_finite()) {
            return Err(Error::NonFiniteLogDensity {
                step: it as u64,
                value: f64::NAN,
                bad_grad: dir.iter().filter(|x| !x.is_finite()).count(),
            });
        }
        let t1 = Instant::now();
        match cfg.optimizer {
            Optimizer::Sgd { lr } => th.iter_mut().zip(&dir).for_each(|(t, d)| *t -= lr * d),
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                let b1c = 1.0 - beta1.powi(it as i32);
                let b2c = 1.0 - beta2.powi(it as i32);
                for i in 0..pn {
                    m[i] = beta1 * m[i] + (1.0 - beta1) * dir[i];
                    v[i] = beta2 * v[i] + (1.0 - beta2) * dir[i] * dir[i];
                    th[i] -= lr * (m[i] / b1c) / ((v[i] / b2c).sqrt() + eps);
                }
            }
        }
        digital += t1.elapsed().as_secs_f64();
        dir_prev = dir;
        if it % cfg.eval_every == 0 || it == cfg.iters {
            eval(it, &th, digital, analog, &mut trace);
        }
    }
    Ok(TrainResult {
        label: cfg.method.label(&cfg.optimizer),
        trace,
        params: th,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy_data(n: usize, d: usize, k: usize, seed: u64) -> Dataset {
        let mut rng = chain_rng(seed, 0);
        let mut x = vec![0.0; n * d];
        fill_standard_normal(&mut rng, &mut x);
        let y = (0..n)
            .map(|i| if x[i * d] > 0.0 { 1 } else { 0 } % k)
            .collect();
        Dataset::new(x, y, d, k).unwrap()
    }

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
    fn gradient_and_jacobian_match_finite_differences() {
        let data = toy_data(7, 3, 3, 1);
        let mlp = Mlp {
            d_in: 3,
            hidden: 4,
            k: 3,
        };
        let th = mlp.init(&mut chain_rng(2, 0));
        let rows: Vec<usize> = (0..7).collect();
        let (_, g) = mlp.loss_grad(&th, &data, &rows);
        let pn = mlp.n_params();
        let mut jac = vec![0.0; 3 * pn];
        mlp.jacobian_one(&th, data.row(0), &mut jac);
        let h = 1e-6;
        for q in 0..pn {
            let mut tp = th.clone();
            tp[q] += h;
            let mut tm = th.clone();
            tm[q] -= h;
            let fd = (mlp.loss_grad(&tp, &data, &rows).0 - mlp.loss_grad(&tm, &data, &rows).0)
                / (2.0 * h);
            assert!((fd - g[q]).abs() < 1e-6, "grad {q}: {fd} vs {}", g[q]);
            let (lp, lm) = (
                mlp.logits_one(&tp, data.row(0)),
                mlp.logits_one(&tm, data.row(0)),
            );
            for c in 0..3 {
                let fdj = (lp[c] - lm[c]) / (2.0 * h);
                assert!((fdj - jac[c * pn + q]).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn ggn_matches_naive_sum_and_gradient_matches_backprop() {
        let data = toy_data(5, 2, 3, 3);
        let mlp = Mlp {
            d_in: 2,
            hidden: 3,
            k: 3,
        };
        let th = mlp.init(&mut chain_rng(4, 0));
        let rows: Vec<usize> = (0..5).collect();
        let c = mlp.curvature(&th, &data, &rows, 0.5);
        let (l, g) = mlp.loss_grad(&th, &data, &rows);
        assert!((c.loss - l).abs() < 1e-12);
        for (a, b) in c.grad.iter().zip(&g) {
            assert!((a - b).abs() < 1e-12);
        }
        let pn = mlp.n_params();
        let dense = c.dense();
        let mut naive = vec![0.0; pn * pn];
        let mut jac = vec![0.0; 3 * pn];
        for &r in &rows {
            mlp.jacobian_one(&th, data.row(r), &mut jac);
            let lg = mlp.logits_one(&th, data.row(r));
            let m = lg.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = lg.iter().map(|v| (v - m).exp()).sum();
            let p: Vec<f64> = lg.iter().map(|v| (v - m).exp() / s).collect();
            for a in 0..pn {
                for b in 0..pn {
                    let mut acc = 0.0;
                    for i in 0..3 {
                        for j in 0..3 {
                            let h = if i == j { p[i] } else { 0.0 } - p[i] * p[j];
                            acc += jac[i * pn + a] * h * jac[j * pn + b];
                        }
                    }
                    naive[a * pn + b] += acc / 5.0;
                }
            }
        }
        for a in 0..pn {
            for b in 0..pn {
                let want = naive[a * pn + b] + if a == b { 0.5 } else { 0.0 };
                assert!((dense[(a, b)] - want).abs() < 1e-12);
            }
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
    fn tngd_tends_to_ngd_and_bad_config_errors() {
        let data = toy_data(80, 3, 2, 5);
        let (tr, te) = data.split(0.25, 0).unwrap();
        let base = TrainConfig {
            hidden: 4,
            batch: 16,
            iters: 15,
            eval_every: 5,
            damping: 0.1,
            optimizer: Optimizer::Sgd { lr: 0.5 },
            ..Default::default()
        };
        let ngd = train(
            &tr,
            &te,
            &TrainConfig {
                method: Method::Ngd,
                ..base.clone()
            },
        )
        .unwrap();
        let tngd = train(
            &tr,
            &te,
            &TrainConfig {
                method: Method::Tngd(OuConfig {
                    time: 200.0,
                    ..Default::default()
                }),
                ..base.clone()
            },
        )
        .unwrap();
        for (a, b) in ngd.params.iter().zip(&tngd.params) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let again = train(
            &tr,
            &te,
            &TrainConfig {
                method: Method::Tngd(OuConfig {
                    time: 1.0,
                    kappa: 0.01,
                    ..Default::default()
                }),
                ..base.clone()
            },
        )
        .unwrap();
        let again2 = train(
            &tr,
            &te,
            &TrainConfig {
                method: Method::Tngd(OuConfig {
                    time: 1.0,
                    kappa: 0.01,
                    ..Default::default()
                }),
                ..base.clone()
            },
        )
        .unwrap();
        assert_eq!(again.params, again2.params);
        assert!(train(
            &tr,
            &te,
            &TrainConfig {
                method: Method::Tngd(OuConfig {
                    time: -1.0,
                    ..Default::default()
                }),
                ..base.clone()
            }
        )
        .is_err());
        assert!(train(
            &tr,
            &te,
            &TrainConfig {
                optimizer: Optimizer::Sgd { lr: f64::NAN },
                ..base
            }
        )
        .is_err());
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
