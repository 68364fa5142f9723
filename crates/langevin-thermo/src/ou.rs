//! Exact simulation of Ornstein-Uhlenbeck processes, also for non-normal drift.
//!
//! The process is
//!
//! ```text
//! dx = -A (x - b) dt + N(0, D dt)
//! ```
//!
//! with every eigenvalue of `A` of positive real part and `D` symmetric positive
//! semi-definite. Over a step `h` the transition is Gaussian and known in closed form:
//!
//! ```text
//! x(t + h) = b + e^{-A h} (x(t) - b) + eta,   eta ~ N(0, Q_h),
//! Q_h = ∫_0^h e^{-A s} D e^{-A^T s} ds = S - e^{-A h} S e^{-A^T h},
//! ```
//!
//! where the stationary covariance `S` solves the Lyapunov equation
//! `A S + S A^T = D`. Nothing here assumes `A` symmetric or normal (the JAX library
//! thermox whitens with `D` and uses the symmetric part of the whitened drift, which is
//! wrong for non-normal `A`).
//!
//! # Numerical kernels (all on `faer` matrices)
//! * [`expm`]: scaling and squaring with the degree-13 Padé approximant (Higham 2005).
//! * [`solve_lyapunov`]: the matrix-sign-function (Newton) iteration of Roberts (1980)
//!   with determinant scaling. With `B_0 = A`, `D_0 = D`:
//!   `B_{k+1} = (c B_k + (c B_k)^{-1}) / 2`, `D_{k+1} = (c D_k + B_k^{-1} D_k B_k^{-T} / c) / 2`,
//!   which keeps `B_k S + S B_k^T = D_k` invariant; `B_k -> I`, so `S = D_∞ / 2`.
//!   It needs only inverses, works for non-normal and defective `A`, and is followed
//!   by one step of iterative refinement on the residual. (faer 0.24 keeps its real
//!   Schur decomposition private, so Bartels-Stewart is not available without
//!   re-implementing QR sweeps.)
//! * Transition covariance `Q_h`: for `‖A‖₁ h ≤ 1` by Van Loan's block exponential
//!   (`exp([[-A, D], [0, A^T]] h) = [[E, G], [0, e^{A^T h}]]`, `Q_h = G E^T`), which has
//!   no cancellation for small steps; otherwise `S - E S E^T`.
//! * Noise factor: Cholesky of `Q_h`; if `Q_h` is only semi-definite (singular `D`), a
//!   symmetric square root from its eigendecomposition with negative round-off
//!   eigenvalues clipped to zero (exact for semi-definite `Q_h`, no jitter added).
//!
//! # Singular diffusion and gradients
//! Sampling needs only a square root of each `Q_h`, so any positive semi-definite
//! `D` works, `D = 0` (the deterministic flow `x(t) = b + e^{-A t}(x0 − b)`)
//! included. The path log density ([`OuProcess::log_prob`]) exists when every
//! `Q_h` is definite ([`OuProcess::check_density`]) and is a typed error otherwise.
//! [`OuProcess::log_prob_grad`] returns it with its gradient with respect to `A`, `b`
//! and `D`, by a reverse pass through the same formulas (Fréchet derivatives of the
//! exponential by [`expm_frechet`], an adjoint Lyapunov solve for `S`).
//!
//! # Cost
//! Each distinct step size costs O(d³) once (its factorisations are cached; step sizes
//! equal to within a relative 2⁻⁴⁰ share a cache entry). Each step then costs two
//! O(d²) products; the noise products of consecutive equal steps are batched into one
//! matrix-matrix product.
//!
//! Randomness: standard normals from the caller's generator, d per step in time
//! order, so the path depends only on the seed (not on the batching).

use std::collections::HashMap;

use faer::linalg::matmul::matmul;
use faer::linalg::solvers::DenseSolveCore;
use faer::prelude::*;
use faer::{Accum, Side};
use rand::Rng;

use crate::error::{Result, ThermoError};

/// Re-exported so that users (and the CLI) need no direct faer dependency.
pub use faer::{Mat, MatRef};
use langevin_core::rng::fill_standard_normal;

/// Steps of consecutive equal step size whose noise is drawn per block.
const BLOCK: usize = 256;

// ---------------------------------------------------------------------------
// Validation helpers
// ---------------------------------------------------------------------------

pub(crate) fn check_square(what: &'static str, a: MatRef<'_, f64>) -> Result<usize> {
    if a.nrows() != a.ncols() {
        return Err(ThermoError::NotSquare {
            what,
            rows: a.nrows(),
            cols: a.ncols(),
        });
    }
    check_finite_mat(what, a)?;
    Ok(a.nrows())
}

pub(crate) fn check_finite_mat(what: &'static str, a: MatRef<'_, f64>) -> Result<()> {
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            if !a[(i, j)].is_finite() {
                return Err(ThermoError::NonFinite { what });
            }
        }
    }
    Ok(())
}

pub(crate) fn check_finite(what: &'static str, v: &[f64]) -> Result<()> {
    if v.iter().all(|x| x.is_finite()) {
        Ok(())
    } else {
        Err(ThermoError::NonFinite { what })
    }
}

pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected != got {
        return Err(ThermoError::DimensionMismatch {
            what,
            expected,
            got,
        });
    }
    Ok(())
}

/// Relative symmetry check: `|a_ij - a_ji| <= 1e-10 * max|a|`.
pub(crate) fn check_symmetric(what: &'static str, a: MatRef<'_, f64>) -> Result<()> {
    let scale = a.norm_max().max(f64::MIN_POSITIVE);
    for j in 0..a.ncols() {
        for i in 0..j {
            let asym = (a[(i, j)] - a[(j, i)]).abs();
            if asym > 1e-10 * scale {
                return Err(ThermoError::NotSymmetric { what, i, j, asym });
            }
        }
    }
    Ok(())
}

fn is_symmetric(a: MatRef<'_, f64>) -> bool {
    (0..a.ncols()).all(|j| (0..j).all(|i| a[(i, j)] == a[(j, i)]))
}

/// Whether `d` is `α I`; returns `α`.
fn scalar_multiple_of_identity(d: MatRef<'_, f64>) -> Option<f64> {
    let alpha = if d.nrows() > 0 { d[(0, 0)] } else { 0.0 };
    let ok = (0..d.ncols())
        .all(|j| (0..d.nrows()).all(|i| d[(i, j)] == if i == j { alpha } else { 0.0 }));
    ok.then_some(alpha)
}

/// Checks that every eigenvalue of `a` has positive real part.
pub fn check_stable(a: MatRef<'_, f64>) -> Result<()> {
    check_square("drift matrix A", a)?;
    if a.nrows() == 0 {
        return Ok(());
    }
    let scale = a.norm_l1().max(f64::MIN_POSITIVE);
    if is_symmetric(a) {
        // Symmetric: a Cholesky factorisation decides positive definiteness.
        if a.llt(Side::Lower).is_ok() {
            return Ok(());
        }
        let ev = a
            .self_adjoint_eigenvalues(Side::Lower)
            .map_err(|e| ThermoError::Numerical(format!("eigenvalues of A: {e:?}")))?;
        return match ev.first() {
            Some(&l) if l <= 1e-13 * scale => Err(ThermoError::UnstableDrift { re: l, im: 0.0 }),
            _ => Ok(()),
        };
    }
    let ev = a
        .eigenvalues()
        .map_err(|e| ThermoError::Numerical(format!("eigenvalues of A: {e:?}")))?;
    for z in ev {
        if z.re <= 1e-13 * scale {
            return Err(ThermoError::UnstableDrift { re: z.re, im: z.im });
        }
    }
    Ok(())
}

fn check_psd(what: &'static str, d: MatRef<'_, f64>) -> Result<()> {
    check_square(what, d)?;
    check_symmetric(what, d)?;
    if d.nrows() == 0 {
        return Ok(());
    }
    let ev = d
        .self_adjoint_eigenvalues(Side::Lower)
        .map_err(|e| ThermoError::Numerical(format!("eigenvalues of {what}: {e:?}")))?;
    let scale = d.norm_max().max(f64::MIN_POSITIVE);
    if ev[0] < -1e-10 * scale * d.nrows() as f64 {
        return Err(ThermoError::NotPositiveDefinite {
            what,
            semi: true,
            detail: Some(format!("smallest eigenvalue {:.4e}", ev[0])),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Dense kernels
// ---------------------------------------------------------------------------

/// `a b` (sequential faer product, so results do not depend on the thread count).
pub(crate) fn mul(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    let mut c = Mat::<f64>::zeros(a.nrows(), b.ncols());
    matmul(c.as_mut(), Accum::Replace, a, b, 1.0, Par::Seq);
    c
}

/// `m v` (sequential faer product).
pub(crate) fn mat_vec(m: MatRef<'_, f64>, v: &[f64]) -> Vec<f64> {
    let r = mul(m, MatRef::from_column_major_slice(v, v.len(), 1));
    r.col_as_slice(0).to_vec()
}

/// Inverse of a square matrix by LU with partial pivoting; errors when `a` is
/// singular to working precision (a non-finite entry in the inverse).
pub fn inverse(what: &'static str, a: MatRef<'_, f64>) -> Result<Mat<f64>> {
    let n = check_square(what, a)?;
    let inv = a.partial_piv_lu().inverse();
    if (0..n).any(|j| (0..n).any(|i| !inv[(i, j)].is_finite())) {
        return Err(ThermoError::Singular { what });
    }
    Ok(inv)
}

/// Inverse of a symmetric positive definite matrix by Cholesky; errors when the
/// factorisation fails.
pub fn spd_inverse(what: &'static str, a: MatRef<'_, f64>) -> Result<Mat<f64>> {
    check_square(what, a)?;
    let llt = a
        .llt(Side::Lower)
        .map_err(|_| ThermoError::NotPositiveDefinite {
            what,
            semi: false,
            detail: Some("Cholesky factorisation failed".into()),
        })?;
    Ok(llt.inverse())
}

/// Replaces `m` by its symmetric part `(m + mᵀ) / 2`.
pub(crate) fn symmetrize(m: &mut Mat<f64>) {
    let n = m.nrows();
    for j in 0..n {
        for i in 0..j {
            let v = 0.5 * (m[(i, j)] + m[(j, i)]);
            m[(i, j)] = v;
            m[(j, i)] = v;
        }
    }
}

/// Matrix exponential `e^A` by scaling and squaring with the degree-13 Padé
/// approximant (Higham 2005, "The scaling and squaring method for the matrix
/// exponential revisited"). Works for any square matrix.
///
/// # Panics
/// If `a` is not square (check user input for squareness first).
pub fn expm(a: MatRef<'_, f64>) -> Mat<f64> {
    assert_eq!(a.nrows(), a.ncols(), "expm needs a square matrix");
    let n = a.nrows();
    if n == 0 {
        return Mat::zeros(0, 0);
    }
    const B: [f64; 14] = [
        64764752532480000.0,
        32382376266240000.0,
        7771770303897600.0,
        1187353796428800.0,
        129060195264000.0,
        10559470521600.0,
        670442572800.0,
        33522128640.0,
        1323241920.0,
        40840800.0,
        960960.0,
        16380.0,
        182.0,
        1.0,
    ];
    const THETA13: f64 = 5.371920351148152;
    let norm = a.norm_l1();
    let s = if norm > THETA13 {
        (norm / THETA13).log2().ceil().max(0.0) as i32
    } else {
        0
    };
    let scale = 0.5f64.powi(s);
    let a1 = Mat::from_fn(n, n, |i, j| a[(i, j)] * scale);
    let a2 = mul(a1.as_ref(), a1.as_ref());
    let a4 = mul(a2.as_ref(), a2.as_ref());
    let a6 = mul(a4.as_ref(), a2.as_ref());
    let id = Mat::<f64>::identity(n, n);
    let lin = |c6: f64, c4: f64, c2: f64, c0: f64| {
        Mat::from_fn(n, n, |i, j| {
            c6 * a6[(i, j)] + c4 * a4[(i, j)] + c2 * a2[(i, j)] + c0 * id[(i, j)]
        })
    };
    // U = A [A6 (b13 A6 + b11 A4 + b9 A2) + b7 A6 + b5 A4 + b3 A2 + b1 I]
    let u_inner = mul(a6.as_ref(), lin(B[13], B[11], B[9], 0.0).as_ref());
    let u_tail = lin(B[7], B[5], B[3], B[1]);
    let u_sum = Mat::from_fn(n, n, |i, j| u_inner[(i, j)] + u_tail[(i, j)]);
    let u = mul(a1.as_ref(), u_sum.as_ref());
    // V = A6 (b12 A6 + b10 A4 + b8 A2) + b6 A6 + b4 A4 + b2 A2 + b0 I
    let v_inner = mul(a6.as_ref(), lin(B[12], B[10], B[8], 0.0).as_ref());
    let v_tail = lin(B[6], B[4], B[2], B[0]);
    let v = Mat::from_fn(n, n, |i, j| v_inner[(i, j)] + v_tail[(i, j)]);
    let p = Mat::from_fn(n, n, |i, j| v[(i, j)] + u[(i, j)]);
    let q = Mat::from_fn(n, n, |i, j| v[(i, j)] - u[(i, j)]);
    let mut r = q.partial_piv_lu().solve(&p);
    for _ in 0..s {
        r = mul(r.as_ref(), r.as_ref());
    }
    r
}

/// Solves the Lyapunov equation `A S + S A^T = D` for `A` with eigenvalues of
/// positive real part (any `A`, not only normal ones) and symmetric `D`.
///
/// Uses the scaled matrix-sign-function iteration described in the module docs, then
/// one step of iterative refinement. Returns a symmetric `S`.
pub fn solve_lyapunov(a: MatRef<'_, f64>, d: MatRef<'_, f64>) -> Result<Mat<f64>> {
    let n = check_square("drift matrix A", a)?;
    check_square("diffusion matrix D", d)?;
    check_len("diffusion matrix D", n, d.nrows())?;
    let mut s = lyapunov_sign(a, d)?;
    // One refinement step: A dS + dS A^T = D - A S - S A^T.
    let as_ = mul(a, s.as_ref());
    let resid = Mat::from_fn(n, n, |i, j| d[(i, j)] - as_[(i, j)] - as_[(j, i)]);
    if resid.norm_max() > 0.0 {
        let ds = lyapunov_sign(a, resid.as_ref())?;
        s = Mat::from_fn(n, n, |i, j| s[(i, j)] + ds[(i, j)]);
    }
    symmetrize(&mut s);
    Ok(s)
}

fn lyapunov_sign(a: MatRef<'_, f64>, d: MatRef<'_, f64>) -> Result<Mat<f64>> {
    let n = a.nrows();
    if n == 0 {
        return Ok(Mat::zeros(0, 0));
    }
    let mut bk = a.to_owned();
    let mut dk = d.to_owned();
    let mut scaling = true;
    for _ in 0..200 {
        let lu = bk.partial_piv_lu();
        let logdet: f64 = (0..n).map(|i| lu.U()[(i, i)].abs().ln()).sum();
        if !logdet.is_finite() {
            return Err(ThermoError::UnstableDrift { re: 0.0, im: 0.0 });
        }
        let binv = lu.inverse();
        let c = if scaling {
            (-logdet / n as f64).exp()
        } else {
            1.0
        };
        let bd = mul(binv.as_ref(), dk.as_ref());
        let bdbt = mul(bd.as_ref(), binv.transpose());
        let next_b = Mat::from_fn(n, n, |i, j| 0.5 * (c * bk[(i, j)] + binv[(i, j)] / c));
        dk = Mat::from_fn(n, n, |i, j| 0.5 * (c * dk[(i, j)] + bdbt[(i, j)] / c));
        let diff = Mat::from_fn(n, n, |i, j| next_b[(i, j)] - bk[(i, j)]).norm_l1();
        let nb = next_b.norm_l1();
        bk = next_b;
        if !nb.is_finite() || !dk.norm_max().is_finite() {
            return Err(ThermoError::Numerical(
                "Lyapunov sign iteration diverged".into(),
            ));
        }
        if diff <= 1e-2 * nb {
            scaling = false;
        }
        if diff <= 1e-13 * nb {
            // The limit of B_k is the sign of A, which is I exactly when every
            // eigenvalue of A has positive real part.
            let off = Mat::from_fn(n, n, |i, j| bk[(i, j)] - if i == j { 1.0 } else { 0.0 });
            if off.norm_l1() > 1e-6 * n as f64 {
                return Err(ThermoError::UnstableDrift {
                    re: f64::NAN,
                    im: f64::NAN,
                });
            }
            return Ok(Mat::from_fn(n, n, |i, j| 0.5 * dk[(i, j)]));
        }
    }
    Err(ThermoError::Numerical(
        "Lyapunov sign iteration did not converge in 200 iterations".into(),
    ))
}

/// A square root `L` with `L L^T = Q` of a symmetric positive semi-definite `Q`:
/// the lower Cholesky factor when it exists, otherwise `U diag(sqrt(max(λ, 0)))`
/// from the eigendecomposition. Errors when `Q` has an eigenvalue below
/// `-1e-8 ‖Q‖`.
pub fn psd_sqrt(what: &'static str, q: MatRef<'_, f64>) -> Result<Mat<f64>> {
    let n = q.nrows();
    if let Ok(llt) = q.llt(Side::Lower) {
        return Ok(llt.L().to_owned());
    }
    let evd = q
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| ThermoError::Numerical(format!("eigendecomposition of {what}: {e:?}")))?;
    let s = evd.S().column_vector();
    let scale = q.norm_max().max(f64::MIN_POSITIVE);
    if s[0] < -1e-8 * scale * n as f64 {
        return Err(ThermoError::NotPositiveDefinite {
            what,
            semi: true,
            detail: Some(format!("smallest eigenvalue {:.4e}", s[0])),
        });
    }
    let u = evd.U();
    Ok(Mat::from_fn(n, n, |i, j| u[(i, j)] * s[j].max(0.0).sqrt()))
}

/// A square root of a symmetric positive semi-definite `Q` and whether it is the
/// lower Cholesky factor of a definite `Q` (otherwise [`psd_sqrt`]'s symmetric root).
pub fn psd_factor(what: &'static str, q: MatRef<'_, f64>) -> Result<(Mat<f64>, bool)> {
    match q.llt(Side::Lower) {
        Ok(llt) => Ok((llt.L().to_owned(), true)),
        Err(_) => Ok((psd_sqrt(what, q)?, false)),
    }
}

/// Exact transition of `dx = -A x dt + N(0, D dt)` over a step `h` by Van Loan's
/// block exponential: `exp([[-A, D], [0, A^T]] h) = [[E, G], [0, e^{A^T h}]]`,
/// `E = e^{-A h}`, `Q_h = G E^T` (returned symmetrised). No stationary covariance is
/// needed and there is no cancellation for small steps; for `‖A‖ h ≫ 1` the lower
/// block grows like `e^{‖A‖ h}` ([`OuProcess`] switches to `S - E S E^T` there).
/// `A` and `D` must be square of one size (unchecked).
pub fn van_loan(a: MatRef<'_, f64>, d: MatRef<'_, f64>, h: f64) -> (Mat<f64>, Mat<f64>) {
    let n = a.nrows();
    let c = Mat::from_fn(2 * n, 2 * n, |i, j| match (i < n, j < n) {
        (true, true) => -a[(i, j)] * h,
        (true, false) => d[(i, j - n)] * h,
        (false, true) => 0.0,
        (false, false) => a[(j - n, i - n)] * h,
    });
    let f = expm(c.as_ref());
    let e = f.as_ref().submatrix(0, 0, n, n).to_owned();
    let g = f.as_ref().submatrix(0, n, n, n);
    let mut q = mul(g, e.transpose());
    symmetrize(&mut q);
    (e, q)
}

// ---------------------------------------------------------------------------
// The process
// ---------------------------------------------------------------------------

/// The exact transition of a step `h`: `x' = b + E (x - b) + L z`.
#[derive(Debug, Clone)]
pub struct Transition {
    /// Step size.
    pub h: f64,
    /// `e^{-A h}`.
    pub e: Mat<f64>,
    /// Transition covariance `Q_h`.
    pub cov: Mat<f64>,
    /// A square root of `Q_h` (lower Cholesky factor when `Q_h` is definite).
    pub factor: Mat<f64>,
    /// Whether `factor` is the Cholesky factor of a definite `Q_h`.
    pub definite: bool,
}

/// A sampled path: `states[k * dim..(k + 1) * dim]` is `x(times[k])`.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub times: Vec<f64>,
    pub dim: usize,
    pub states: Vec<f64>,
}

impl Path {
    /// The state at grid index `k`.
    pub fn state(&self, k: usize) -> &[f64] {
        &self.states[k * self.dim..(k + 1) * self.dim]
    }
    /// Number of grid points.
    pub fn len(&self) -> usize {
        self.times.len()
    }
    /// Whether the path is empty.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }
}

/// An OU process `dx = -A (x - b) dt + N(0, D dt)` with its stationary covariance
/// and a cache of exact transitions per step size.
#[derive(Debug, Clone)]
pub struct OuProcess {
    a: Mat<f64>,
    b: Vec<f64>,
    d: Mat<f64>,
    /// Stationary covariance, solved on first use (small steps do not need it).
    s: std::sync::OnceLock<Mat<f64>>,
    cache: HashMap<u64, Transition>,
}

fn cache_key(h: f64) -> u64 {
    h.to_bits() >> 12
}

impl OuProcess {
    /// Validates `A` (square, finite, eigenvalues of positive real part), `b`
    /// (length d) and `D` (symmetric positive semi-definite) and solves for the
    /// stationary covariance.
    pub fn new(a: MatRef<'_, f64>, b: &[f64], d: MatRef<'_, f64>) -> Result<Self> {
        let n = check_square("drift matrix A", a)?;
        check_len("mean vector b", n, b.len())?;
        check_finite("mean vector b", b)?;
        check_len("diffusion matrix D", n, d.nrows())?;
        check_psd("diffusion matrix D", d)?;
        check_stable(a)?;
        Ok(Self {
            a: a.to_owned(),
            b: b.to_vec(),
            d: d.to_owned(),
            s: std::sync::OnceLock::new(),
            cache: HashMap::new(),
        })
    }

    fn stationary(&self) -> Result<&Mat<f64>> {
        if let Some(s) = self.s.get() {
            return Ok(s);
        }
        let s = match scalar_multiple_of_identity(self.d.as_ref()) {
            // Symmetric A, D = α I: S = (α / 2) A⁻¹ exactly.
            Some(alpha) if is_symmetric(self.a.as_ref()) => match self.a.llt(Side::Lower) {
                Ok(llt) => {
                    let mut s = llt.inverse() * Scale(0.5 * alpha);
                    symmetrize(&mut s);
                    s
                }
                Err(_) => solve_lyapunov(self.a.as_ref(), self.d.as_ref())?,
            },
            _ => solve_lyapunov(self.a.as_ref(), self.d.as_ref())?,
        };
        Ok(self.s.get_or_init(|| s))
    }

    /// Dimension.
    pub fn dim(&self) -> usize {
        self.b.len()
    }
    /// Drift matrix `A`.
    pub fn drift(&self) -> MatRef<'_, f64> {
        self.a.as_ref()
    }
    /// Stationary mean `b`.
    pub fn mean(&self) -> &[f64] {
        &self.b
    }
    /// Diffusion matrix `D`.
    pub fn diffusion(&self) -> MatRef<'_, f64> {
        self.d.as_ref()
    }
    /// Stationary covariance `S` (solves `A S + S A^T = D`; computed on first use).
    pub fn stationary_covariance(&self) -> Result<MatRef<'_, f64>> {
        Ok(self.stationary()?.as_ref())
    }

    /// Computes the exact transition for step `h > 0` (not cached).
    pub fn compute_transition(&self, h: f64) -> Result<Transition> {
        if !(h > 0.0 && h.is_finite()) {
            return Err(ThermoError::InvalidConfig {
                field: "step",
                reason: format!("must be positive and finite, got {h}"),
            });
        }
        let n = self.dim();
        let (e, cov) = if self.a.norm_l1() * h <= 1.0 {
            van_loan(self.a.as_ref(), self.d.as_ref(), h)
        } else {
            let ma = Mat::from_fn(n, n, |i, j| -self.a[(i, j)] * h);
            let e = expm(ma.as_ref());
            let sm = self.stationary()?;
            let es = mul(e.as_ref(), sm.as_ref());
            let eset = mul(es.as_ref(), e.transpose());
            let mut q = Mat::from_fn(n, n, |i, j| sm[(i, j)] - eset[(i, j)]);
            symmetrize(&mut q);
            (e, q)
        };
        let (factor, definite) = psd_factor("transition covariance", cov.as_ref())?;
        Ok(Transition {
            h,
            e,
            cov,
            factor,
            definite,
        })
    }

    /// The cached exact transition for step `h`.
    pub fn transition(&mut self, h: f64) -> Result<&Transition> {
        let key = cache_key(h);
        if !self.cache.contains_key(&key) {
            let t = self.compute_transition(h)?;
            self.cache.insert(key, t);
        }
        Ok(&self.cache[&key])
    }

    /// `E[x(t) | x(0) = x0] = b + e^{-A t} (x0 - b)`.
    pub fn conditional_mean(&self, x0: &[f64], t: f64) -> Result<Vec<f64>> {
        check_len("initial state x0", self.dim(), x0.len())?;
        check_time(t)?;
        let n = self.dim();
        let ma = Mat::from_fn(n, n, |i, j| -self.a[(i, j)] * t);
        let e = expm(ma.as_ref());
        let v: Vec<f64> = x0.iter().zip(&self.b).map(|(x, b)| x - b).collect();
        let mut out = self.b.clone();
        gemv_acc(e.as_ref(), &v, &mut out);
        Ok(out)
    }

    /// `Cov[x(t) | x(0)] = S - e^{-A t} S e^{-A^T t}` (zero at `t = 0`).
    pub fn conditional_covariance(&self, t: f64) -> Result<Mat<f64>> {
        check_time(t)?;
        if t == 0.0 {
            return Ok(Mat::zeros(self.dim(), self.dim()));
        }
        Ok(self.compute_transition(t)?.cov)
    }

    /// Samples the process on the strictly increasing grid `ts`, starting from
    /// `x(ts[0]) = x0`. The path has `ts.len()` states, the first being `x0`.
    pub fn sample<R: Rng + ?Sized>(&mut self, ts: &[f64], x0: &[f64], rng: &mut R) -> Result<Path> {
        let n = self.dim();
        check_len("initial state x0", n, x0.len())?;
        check_finite("initial state x0", x0)?;
        check_grid(ts)?;
        let steps = ts.len().saturating_sub(1);
        let mut states = vec![0.0; ts.len() * n];
        if ts.is_empty() {
            return Ok(Path {
                times: vec![],
                dim: n,
                states,
            });
        }
        // Work in centred coordinates v = x - b.
        let mut v: Vec<f64> = x0.iter().zip(&self.b).map(|(x, b)| x - b).collect();
        states[..n].copy_from_slice(x0);
        let mut z = Mat::<f64>::zeros(n, BLOCK);
        let mut w = Mat::<f64>::zeros(n, BLOCK);
        let mut k = 0;
        while k < steps {
            let h = ts[k + 1] - ts[k];
            let key = cache_key(h);
            // Length of the run of steps sharing this transition, capped at BLOCK.
            let mut len = 1;
            while len < BLOCK && k + len < steps && cache_key(ts[k + len + 1] - ts[k + len]) == key
            {
                len += 1;
            }
            self.transition(h)?;
            let tr = &self.cache[&key];
            for j in 0..len {
                fill_standard_normal(rng, z.col_as_slice_mut(j));
            }
            matmul(
                w.as_mut().submatrix_mut(0, 0, n, len),
                Accum::Replace,
                tr.factor.as_ref(),
                z.as_ref().submatrix(0, 0, n, len),
                1.0,
                Par::Seq,
            );
            for j in 0..len {
                let out = &mut states[(k + j + 1) * n..(k + j + 2) * n];
                out.copy_from_slice(w.col_as_slice(j));
                gemv_acc(tr.e.as_ref(), &v, out);
                v.copy_from_slice(out);
                for (o, b) in out.iter_mut().zip(&self.b) {
                    *o += b;
                }
            }
            k += len;
        }
        Ok(Path {
            times: ts.to_vec(),
            dim: n,
            states,
        })
    }

    /// Whether the path has a density: the transition covariances
    /// `Q_h = ∫_0^h e^{-A s} D e^{-Aᵀ s} ds` are definite for every `h > 0` exactly
    /// when the stationary covariance `S` is, i.e. when the noise reaches every
    /// direction through the drift (the pair `(A, D)` is controllable). A definite
    /// `D` always qualifies; a singular `D` does when `S` has condition number below
    /// `1e10` (a looser test would accept round-off as noise). `D = 0` (a
    /// deterministic flow) never does.
    pub fn check_density(&self) -> Result<()> {
        let n = self.dim();
        if n == 0 || self.d.llt(Side::Lower).is_ok() {
            return Ok(());
        }
        let s = self.stationary()?;
        let ev = s
            .self_adjoint_eigenvalues(Side::Lower)
            .map_err(|e| ThermoError::Numerical(format!("eigenvalues of S: {e:?}")))?;
        let (lo, hi) = (ev[0], ev[n - 1]);
        if hi > 0.0 && lo > 1e-10 * hi {
            Ok(())
        } else {
            Err(degenerate_density())
        }
    }

    /// Log density of the path `xs` (row-major, `ts.len() x d`) conditional on its
    /// first state: the sum over steps of the exact Gaussian transition densities.
    ///
    /// A singular `D` is accepted when the noise still reaches every direction
    /// through `A` (then every transition covariance is definite, see
    /// [`OuProcess::check_density`]); otherwise, and for `D = 0` (a deterministic
    /// flow, whose path measure has no density), the result is a
    /// [`ThermoError::NotPositiveDefinite`] error on the transition covariance,
    /// never a NaN.
    pub fn log_prob(&mut self, ts: &[f64], xs: &[f64]) -> Result<f64> {
        let n = self.dim();
        check_grid(ts)?;
        check_len("path xs (len(ts) * d values)", ts.len() * n, xs.len())?;
        check_finite("path xs", xs)?;
        self.check_density()?;
        let mut total = 0.0;
        let mut r = vec![0.0; n];
        let mut v = vec![0.0; n];
        let ln2pi = (2.0 * std::f64::consts::PI).ln();
        for k in 0..ts.len().saturating_sub(1) {
            let h = ts[k + 1] - ts[k];
            self.transition(h)?;
            let tr = &self.cache[&cache_key(h)];
            if !tr.definite {
                return Err(singular_step(h));
            }
            let x = &xs[k * n..(k + 1) * n];
            let y = &xs[(k + 1) * n..(k + 2) * n];
            for i in 0..n {
                v[i] = x[i] - self.b[i];
                r[i] = 0.0;
            }
            gemv_acc(tr.e.as_ref(), &v, &mut r);
            for i in 0..n {
                r[i] = y[i] - self.b[i] - r[i];
            }
            let (quad, logdet) = forward_solve_quad(tr.factor.as_ref(), &mut r);
            total += -0.5 * quad - logdet - 0.5 * n as f64 * ln2pi;
        }
        if !total.is_finite() {
            return Err(ThermoError::Numerical(
                "non-finite path log density (transition covariance near singular)".into(),
            ));
        }
        Ok(total)
    }
}

fn check_time(t: f64) -> Result<()> {
    if !(t >= 0.0 && t.is_finite()) {
        return Err(ThermoError::InvalidConfig {
            field: "t",
            reason: format!("must be non-negative and finite, got {t}"),
        });
    }
    Ok(())
}

fn check_grid(ts: &[f64]) -> Result<()> {
    check_finite("time grid ts", ts)?;
    for k in 1..ts.len() {
        if ts[k] <= ts[k - 1] {
            return Err(ThermoError::NonIncreasingTimes {
                index: k,
                prev: ts[k - 1],
                t: ts[k],
            });
        }
    }
    Ok(())
}

/// `out += M v` for a column-major `M` (one axpy per column: vectorises well).
#[inline]
pub(crate) fn gemv_acc(m: MatRef<'_, f64>, v: &[f64], out: &mut [f64]) {
    let n = m.nrows();
    debug_assert_eq!(out.len(), n);
    for (j, &vj) in v.iter().enumerate() {
        match m.col(j).try_as_col_major() {
            Some(col) => {
                let col = &col.as_slice()[..n];
                for (o, c) in out.iter_mut().zip(col) {
                    *o += c * vj;
                }
            }
            None => {
                for i in 0..n {
                    out[i] += m[(i, j)] * vj;
                }
            }
        }
    }
}

/// Solves `L r' = r` in place for lower-triangular `L`; returns `(|r'|², log|det L|)`.
fn forward_solve_quad(l: MatRef<'_, f64>, r: &mut [f64]) -> (f64, f64) {
    let n = r.len();
    let mut logdet = 0.0;
    for j in 0..n {
        let ljj = l[(j, j)];
        r[j] /= ljj;
        logdet += ljj.abs().ln();
        let rj = r[j];
        for i in j + 1..n {
            r[i] -= l[(i, j)] * rj;
        }
    }
    (r.iter().map(|x| x * x).sum(), logdet)
}

// ---------------------------------------------------------------------------
// Free functions mirroring thermox's API
// ---------------------------------------------------------------------------

/// Exact sample of the OU process on the grid `ts` from `x(ts[0]) = x0`.
pub fn sample<R: Rng + ?Sized>(
    ts: &[f64],
    x0: &[f64],
    a: MatRef<'_, f64>,
    b: &[f64],
    d: MatRef<'_, f64>,
    rng: &mut R,
) -> Result<Path> {
    OuProcess::new(a, b, d)?.sample(ts, x0, rng)
}

/// Log density of a path conditional on its first state (see [`OuProcess::log_prob`]).
pub fn log_prob(
    ts: &[f64],
    xs: &[f64],
    a: MatRef<'_, f64>,
    b: &[f64],
    d: MatRef<'_, f64>,
) -> Result<f64> {
    OuProcess::new(a, b, d)?.log_prob(ts, xs)
}

/// `E[x(t) | x(0) = x0] = b + e^{-A t} (x0 - b)`.
pub fn conditional_mean(t: f64, x0: &[f64], a: MatRef<'_, f64>, b: &[f64]) -> Result<Vec<f64>> {
    let n = check_square("drift matrix A", a)?;
    check_len("initial state x0", n, x0.len())?;
    check_len("mean vector b", n, b.len())?;
    check_time(t)?;
    let ma = Mat::from_fn(n, n, |i, j| -a[(i, j)] * t);
    let e = expm(ma.as_ref());
    let v: Vec<f64> = x0.iter().zip(b).map(|(x, b)| x - b).collect();
    let mut out = b.to_vec();
    gemv_acc(e.as_ref(), &v, &mut out);
    Ok(out)
}

/// `Cov[x(t) | x(0)] = S - e^{-A t} S e^{-A^T t}`.
pub fn conditional_covariance(t: f64, a: MatRef<'_, f64>, d: MatRef<'_, f64>) -> Result<Mat<f64>> {
    let n = check_square("drift matrix A", a)?;
    OuProcess::new(a, &vec![0.0; n], d)?.conditional_covariance(t)
}

/// Stationary covariance `S` solving `A S + S A^T = D` (validates stability of `A`).
pub fn stationary_covariance(a: MatRef<'_, f64>, d: MatRef<'_, f64>) -> Result<Mat<f64>> {
    let n = check_square("drift matrix A", a)?;
    check_len("diffusion matrix D", n, d.nrows())?;
    check_psd("diffusion matrix D", d)?;
    check_stable(a)?;
    solve_lyapunov(a, d)
}

/// Euler-Maruyama integration of the same SDE (for comparison; biased):
/// `x' = x - A (x - b) h + chol(D h) z`. For a mode of rate `a` its stationary variance
/// is `(1/a) 2 / (2 - a h)` instead of `1/a` (with `D = 2`).
pub fn euler_maruyama<R: Rng + ?Sized>(
    ts: &[f64],
    x0: &[f64],
    a: MatRef<'_, f64>,
    b: &[f64],
    d: MatRef<'_, f64>,
    rng: &mut R,
) -> Result<Path> {
    let n = check_square("drift matrix A", a)?;
    check_len("initial state x0", n, x0.len())?;
    check_len("mean vector b", n, b.len())?;
    check_len("diffusion matrix D", n, d.nrows())?;
    check_psd("diffusion matrix D", d)?;
    check_grid(ts)?;
    let sqrt_d = psd_sqrt("diffusion matrix D", d)?;
    let mut states = vec![0.0; ts.len() * n];
    if ts.is_empty() {
        return Ok(Path {
            times: vec![],
            dim: n,
            states,
        });
    }
    states[..n].copy_from_slice(x0);
    let mut v: Vec<f64> = x0.iter().zip(b).map(|(x, b)| x - b).collect();
    let mut z = vec![0.0; n];
    let mut noise = vec![0.0; n];
    let mut drift = vec![0.0; n];
    for k in 0..ts.len() - 1 {
        let h = ts[k + 1] - ts[k];
        fill_standard_normal(rng, &mut z);
        noise.iter_mut().for_each(|x| *x = 0.0);
        gemv_acc(sqrt_d.as_ref(), &z, &mut noise);
        drift.iter_mut().for_each(|x| *x = 0.0);
        gemv_acc(a, &v, &mut drift);
        let sh = h.sqrt();
        for i in 0..n {
            v[i] += -drift[i] * h + sh * noise[i];
        }
        let out = &mut states[(k + 1) * n..(k + 2) * n];
        for i in 0..n {
            out[i] = v[i] + b[i];
        }
    }
    Ok(Path {
        times: ts.to_vec(),
        dim: n,
        states,
    })
}

// ---------------------------------------------------------------------------
// Gradients of the path log density
// ---------------------------------------------------------------------------

/// Fréchet derivative `L(M, G)` of the matrix exponential at `M` in the direction
/// `G`: `e^{M + εG} = e^M + ε L(M, G) + O(ε²)`. It is the top-right block of
/// `exp([[M, G], [0, M]])` (Mathias 1996; Higham 2008, §3.2); `G` is scaled to the
/// norm of `M` first so that the block exponential needs no extra squarings.
///
/// The adjoint is `L(Mᵀ, ·)`: the gradient of `⟨W, e^M⟩` with respect to `M` is
/// `L(Mᵀ, W)`.
///
/// # Panics
/// If `m` is not square or `g` has another shape.
pub fn expm_frechet(m: MatRef<'_, f64>, g: MatRef<'_, f64>) -> Mat<f64> {
    let n = m.nrows();
    assert!(
        m.ncols() == n && g.nrows() == n && g.ncols() == n,
        "expm_frechet needs square matrices of one size"
    );
    let gn = g.norm_l1();
    if n == 0 || gn == 0.0 {
        return Mat::zeros(n, n);
    }
    let t = m.norm_l1().max(1.0) / gn;
    let big = Mat::from_fn(2 * n, 2 * n, |i, j| match (i < n, j < n) {
        (true, true) => m[(i, j)],
        (true, false) => t * g[(i, j - n)],
        (false, false) => m[(i - n, j - n)],
        (false, true) => 0.0,
    });
    let f = expm(big.as_ref());
    Mat::from_fn(n, n, |i, j| f[(i, j + n)] / t)
}

/// The log density of a path ([`OuProcess::log_prob`]) with its gradient with
/// respect to the parameters of the process.
#[derive(Debug, Clone, PartialEq)]
pub struct LogProbGrad {
    /// `log p(x_1, …, x_K | x_0)`, identical to [`OuProcess::log_prob`].
    pub log_prob: f64,
    /// `∂ log p / ∂A_ij` (every entry of the drift is a free parameter).
    pub d_a: Mat<f64>,
    /// `∂ log p / ∂b_i`.
    pub d_b: Vec<f64>,
    /// Gradient with respect to the symmetric diffusion `D`, returned symmetric:
    /// `⟨d_d, Δ⟩ = Σ_ij d_d[i, j] Δ[i, j]` is the directional derivative along any
    /// symmetric `Δ` (so a change of the pair `D_ij = D_ji` by `δ` changes `log p`
    /// by `2 d_d[i, j] δ`). This is the symmetrised entrywise gradient.
    pub d_d: Mat<f64>,
}

/// Per-step-size accumulators of the reverse pass.
struct GradGroup {
    key: u64,
    /// `Σ w (x − b)ᵀ`: gradient with respect to `E = e^{-A h}`.
    g_e: Mat<f64>,
    /// `Σ w wᵀ`.
    ww: Mat<f64>,
    /// Steps of this size.
    count: usize,
}

/// Solves `Lᵀ w = r` in place for lower-triangular `L`.
fn backward_solve_lt(l: MatRef<'_, f64>, r: &mut [f64]) {
    let n = r.len();
    for j in (0..n).rev() {
        let mut s = r[j];
        for i in j + 1..n {
            s -= l[(i, j)] * r[i];
        }
        r[j] = s / l[(j, j)];
    }
}

impl OuProcess {
    /// [`OuProcess::log_prob`] and its gradient with respect to `A`, `b` and `D`
    /// (what thermox obtains from JAX autodiff), by a hand-written reverse pass.
    ///
    /// With `r_k = x_{k+1} − b − E_k (x_k − b)`, `w_k = Q_k⁻¹ r_k`, the per-step
    /// adjoints are `∂/∂b = Σ (I − E_k)ᵀ w_k`, `∂/∂E_k = w_k (x_k − b)ᵀ` and
    /// `∂/∂Q_k = (w_k w_kᵀ − Q_k⁻¹) / 2`. They are summed per step size and pulled
    /// back through the same formulas that produced `E_k` and `Q_k`:
    /// * Van Loan steps (`‖A‖₁ h ≤ 1`): through `exp([[-A, D], [0, Aᵀ]] h)` with the
    ///   adjoint Fréchet derivative [`expm_frechet`] of the `2d × 2d` block matrix;
    /// * other steps, `Q = S − E S Eᵀ`: through `E = e^{-A h}` ([`expm_frechet`]) and
    ///   through the stationary covariance `S` by one adjoint Lyapunov solve
    ///   `Aᵀ X + X A = ∂/∂S` (then `∂/∂D += X`, `∂/∂A −= (X + Xᵀ) S`).
    ///
    /// Cost: O(d³) per distinct step size (a `4d × 4d` exponential for Van Loan
    /// steps) plus O(d²) per step. Errors as [`OuProcess::log_prob`] (a degenerate
    /// transition density is a typed error).
    pub fn log_prob_grad(&mut self, ts: &[f64], xs: &[f64]) -> Result<LogProbGrad> {
        let n = self.dim();
        check_grid(ts)?;
        check_len("path xs (len(ts) * d values)", ts.len() * n, xs.len())?;
        check_finite("path xs", xs)?;
        self.check_density()?;
        let ln2pi = (2.0 * std::f64::consts::PI).ln();
        let mut total = 0.0;
        let mut d_b = vec![0.0; n];
        let mut groups: Vec<GradGroup> = Vec::new();
        let mut index: HashMap<u64, usize> = HashMap::new();
        let mut r = vec![0.0; n];
        let mut v = vec![0.0; n];
        for k in 0..ts.len().saturating_sub(1) {
            let h = ts[k + 1] - ts[k];
            self.transition(h)?;
            let key = cache_key(h);
            let tr = &self.cache[&key];
            if !tr.definite {
                return Err(singular_step(h));
            }
            let x = &xs[k * n..(k + 1) * n];
            let y = &xs[(k + 1) * n..(k + 2) * n];
            for i in 0..n {
                v[i] = x[i] - self.b[i];
                r[i] = 0.0;
            }
            gemv_acc(tr.e.as_ref(), &v, &mut r);
            for i in 0..n {
                r[i] = y[i] - self.b[i] - r[i];
            }
            let (quad, logdet) = forward_solve_quad(tr.factor.as_ref(), &mut r);
            total += -0.5 * quad - logdet - 0.5 * n as f64 * ln2pi;
            backward_solve_lt(tr.factor.as_ref(), &mut r);
            let w = &r;
            // d_b += w − Eᵀ w.
            for (j, db) in d_b.iter_mut().enumerate() {
                let etw: f64 = (0..n).map(|i| tr.e[(i, j)] * w[i]).sum();
                *db += w[j] - etw;
            }
            let gi = *index.entry(key).or_insert_with(|| {
                groups.push(GradGroup {
                    key,
                    g_e: Mat::zeros(n, n),
                    ww: Mat::zeros(n, n),
                    count: 0,
                });
                groups.len() - 1
            });
            let g = &mut groups[gi];
            g.count += 1;
            for j in 0..n {
                for i in 0..n {
                    g.g_e[(i, j)] += w[i] * v[j];
                    g.ww[(i, j)] += w[i] * w[j];
                }
            }
        }
        let mut d_a = Mat::<f64>::zeros(n, n);
        let mut d_d = Mat::<f64>::zeros(n, n);
        let mut g_s = Mat::<f64>::zeros(n, n);
        let mut need_s = false;
        for g in &groups {
            let tr = &self.cache[&g.key];
            let h = tr.h;
            let q_inv = spd_inverse("transition covariance", tr.cov.as_ref())?;
            let g_q = Mat::from_fn(n, n, |i, j| {
                0.5 * (g.ww[(i, j)] - g.count as f64 * q_inv[(i, j)])
            });
            if self.a.norm_l1() * h <= 1.0 {
                // Q = F12 F11ᵀ (symmetrised), E = F11, F = exp(M), M = [[-A, D], [0, Aᵀ]] h.
                let m = Mat::from_fn(2 * n, 2 * n, |i, j| match (i < n, j < n) {
                    (true, true) => -self.a[(i, j)] * h,
                    (true, false) => self.d[(i, j - n)] * h,
                    (false, true) => 0.0,
                    (false, false) => self.a[(j - n, i - n)] * h,
                });
                let f = expm(m.as_ref());
                let f11 = f.as_ref().submatrix(0, 0, n, n);
                let f12 = f.as_ref().submatrix(0, n, n, n);
                let gf11 = &g.g_e + mul(g_q.as_ref(), f12);
                let gf12 = mul(g_q.as_ref(), f11);
                let gf = Mat::from_fn(2 * n, 2 * n, |i, j| match (i < n, j < n) {
                    (true, true) => gf11[(i, j)],
                    (true, false) => gf12[(i, j - n)],
                    _ => 0.0,
                });
                let gm = expm_frechet(m.transpose(), gf.as_ref());
                for j in 0..n {
                    for i in 0..n {
                        d_a[(i, j)] += h * (gm[(j + n, i + n)] - gm[(i, j)]);
                        d_d[(i, j)] += h * gm[(i, j + n)];
                    }
                }
            } else {
                // Q = S − E S Eᵀ, E = e^{-A h}.
                need_s = true;
                let s = self.stationary()?;
                let e = tr.e.as_ref();
                let eq = mul(e.transpose(), g_q.as_ref());
                let eqe = mul(eq.as_ref(), e);
                let qes = mul(mul(g_q.as_ref(), e).as_ref(), s.as_ref());
                for j in 0..n {
                    for i in 0..n {
                        g_s[(i, j)] += g_q[(i, j)] - eqe[(i, j)];
                    }
                }
                let g_e = Mat::from_fn(n, n, |i, j| g.g_e[(i, j)] - 2.0 * qes[(i, j)]);
                let ma = Mat::from_fn(n, n, |i, j| -self.a[(j, i)] * h);
                let gm = expm_frechet(ma.as_ref(), g_e.as_ref());
                for j in 0..n {
                    for i in 0..n {
                        d_a[(i, j)] -= h * gm[(i, j)];
                    }
                }
            }
        }
        if need_s {
            // A S + S Aᵀ = D: the adjoint X solves Aᵀ X + X A = ∂/∂S.
            symmetrize(&mut g_s);
            let x = solve_lyapunov(self.a.transpose(), g_s.as_ref())?;
            let s = self.stationary()?;
            let xs_ = mul(x.as_ref(), s.as_ref());
            let xts = mul(x.transpose(), s.as_ref());
            for j in 0..n {
                for i in 0..n {
                    d_d[(i, j)] += x[(i, j)];
                    d_a[(i, j)] -= xs_[(i, j)] + xts[(i, j)];
                }
            }
        }
        symmetrize(&mut d_d);
        if !(total.is_finite()
            && d_b.iter().all(|v| v.is_finite())
            && d_a.norm_max().is_finite()
            && d_d.norm_max().is_finite())
        {
            return Err(ThermoError::Numerical(
                "non-finite log density or gradient (transition covariance near singular)".into(),
            ));
        }
        Ok(LogProbGrad {
            log_prob: total,
            d_a,
            d_b,
            d_d,
        })
    }
}

fn degenerate_density() -> ThermoError {
    ThermoError::NotPositiveDefinite {
        what: "transition covariance",
        semi: false,
        detail: Some(
            "the path has no density: D is singular and noise does not reach every \
             direction through A (for D = 0 the flow is deterministic)"
                .into(),
        ),
    }
}

fn singular_step(h: f64) -> ThermoError {
    ThermoError::NotPositiveDefinite {
        what: "transition covariance",
        semi: false,
        detail: Some(format!(
            "singular to working precision for the step {h:e} (with a singular D, small \
             steps spread the noise into the other directions only at higher order in h)"
        )),
    }
}

/// [`log_prob`] and its gradient with respect to `A`, `b` and `D` (see
/// [`OuProcess::log_prob_grad`]).
pub fn log_prob_grad(
    ts: &[f64],
    xs: &[f64],
    a: MatRef<'_, f64>,
    b: &[f64],
    d: MatRef<'_, f64>,
) -> Result<LogProbGrad> {
    OuProcess::new(a, b, d)?.log_prob_grad(ts, xs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m2(a: [[f64; 2]; 2]) -> Mat<f64> {
        Mat::from_fn(2, 2, |i, j| a[i][j])
    }

    #[test]
    fn expm_of_diagonal_and_nilpotent() {
        let a = m2([[1.0, 0.0], [0.0, -2.0]]);
        let e = expm(a.as_ref());
        assert!((e[(0, 0)] - 1f64.exp()).abs() < 1e-14);
        assert!((e[(1, 1)] - (-2f64).exp()).abs() < 1e-15);
        // Nilpotent: exp([[0, 1], [0, 0]] * 30) = [[1, 30], [0, 1]].
        let n = m2([[0.0, 30.0], [0.0, 0.0]]);
        let e = expm(n.as_ref());
        assert!((e[(0, 1)] - 30.0).abs() < 1e-12, "{:?}", e);
        assert!((e[(0, 0)] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn expm_matches_known_rotation() {
        let a = m2([[0.0, 1.5], [-1.5, 0.0]]);
        let e = expm(a.as_ref());
        assert!((e[(0, 0)] - 1.5f64.cos()).abs() < 1e-13);
        assert!((e[(0, 1)] - 1.5f64.sin()).abs() < 1e-13);
    }

    #[test]
    fn lyapunov_reference_values() {
        let d = Mat::<f64>::identity(2, 2) * Scale(2.0);
        let s = solve_lyapunov(m2([[3.0, 2.5], [2.0, 4.0]]).as_ref(), d.as_ref()).unwrap();
        let want = [[0.5969, -0.3163], [-0.3163, 0.4082]];
        for i in 0..2 {
            for j in 0..2 {
                assert!((s[(i, j)] - want[i][j]).abs() < 1e-4, "{s:?}");
            }
        }
        let s = solve_lyapunov(m2([[1.0, 5.0], [0.0, 2.0]]).as_ref(), d.as_ref()).unwrap();
        let want = [[5.1667, -0.8333], [-0.8333, 0.5]];
        for i in 0..2 {
            for j in 0..2 {
                assert!((s[(i, j)] - want[i][j]).abs() < 1e-4, "{s:?}");
            }
        }
    }

    #[test]
    fn unstable_drift_is_rejected() {
        let d = Mat::<f64>::identity(2, 2);
        let a = m2([[1.0, 0.0], [0.0, -0.5]]);
        assert!(matches!(
            OuProcess::new(a.as_ref(), &[0.0, 0.0], d.as_ref()),
            Err(ThermoError::UnstableDrift { .. })
        ));
    }
}
