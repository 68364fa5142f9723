//! Logistic regression for K parameter vectors at once: a worked example of
//! [`BatchLogDensity`] (used by the parallel-chains benchmark).
//!
//! For a minibatch of B rows x_i ∈ ℝ^d with labels y_i ∈ {0, 1}, data-set
//! size N and an isotropic `N(0, s² I)` prior, the batch-averaged log
//! posterior of chain c and its gradient are
//!
//! ```text
//! z_ci           = θ_c · x_i                        Z = Θ Xᵀ      (K × B, one matrix product)
//! log_post(θ_c)  = (1/B) Σ_i [y_i z_ci − softplus(z_ci)] − |θ_c|² / (2 N s²)
//! ∇ log_post     = (1/B) Σ_i (y_i − sigmoid(z_ci)) x_i − θ_c / (N s²)
//!                                                   G = R X − Θ/(N s²)  (K × d, one matrix product)
//! ```
//!
//! with `softplus(z) = max(z, 0) + log1p(e)`, `sigmoid(z) = 1/(1 + e)` for
//! z ≥ 0 and `e/(1 + e)` otherwise, `e = exp(−|z|)` (one exponential per
//! entry, stable for any z). Both products go through faer's matmul; the
//! element-wise pass over Z uses a branch-free exponential (Taylor series
//! after range reduction) and logarithm (fdlibm's polynomial), within 1e-15
//! relative of libm on the tested range, that the compiler vectorises, with
//! an AVX2+FMA version chosen at run time. Both versions compute the same
//! bits: the polynomials use `f64::mul_add`, which is a correctly rounded
//! fused multiply-add everywhere (a slow library call on CPUs without FMA).

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

use langevin_core::{Error, Result};

use super::batched::{check_batch_shapes, BatchLogDensity};
use langevin_core::vecmath::{exp_nonpositive, log1p_recip};

/// A logistic-regression minibatch: `x` (B × d, row-major) and `y` ∈ {0, 1}.
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticBatch {
    x: Vec<f64>,
    y: Vec<f64>,
    dim: usize,
}

impl LogisticBatch {
    /// Validate and wrap a minibatch (`x.len() == y.len() * dim`, finite
    /// inputs, labels 0 or 1, at least one row).
    pub fn new(x: Vec<f64>, y: Vec<f64>, dim: usize) -> Result<Self> {
        if y.is_empty() || dim == 0 {
            return Err(Error::Data(
                "logistic batch needs at least one row and one feature".into(),
            ));
        }
        if x.len() != y.len() * dim {
            return Err(Error::DimensionMismatch {
                what: "logistic batch x (B × d)",
                expected: y.len() * dim,
                got: x.len(),
            });
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(Error::Data(
                "logistic batch x has a non-finite entry".into(),
            ));
        }
        if y.iter().any(|&v| v != 0.0 && v != 1.0) {
            return Err(Error::Data("logistic labels must be 0 or 1".into()));
        }
        Ok(Self { x, y, dim })
    }

    /// Rows B.
    pub fn rows(&self) -> usize {
        self.y.len()
    }

    /// Features d.
    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn x(&self) -> &[f64] {
        &self.x
    }

    pub fn y(&self) -> &[f64] {
        &self.y
    }
}

/// Batched logistic-regression log posterior; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchedLogistic {
    /// 1 / (N s²): the prior precision divided by the data-set size.
    prior_over_n: f64,
}

impl BatchedLogistic {
    /// Data-set size `n_data` (N) and prior variance `prior_var` (s²).
    pub fn new(n_data: f64, prior_var: f64) -> Result<Self> {
        if !(n_data.is_finite() && n_data > 0.0) {
            return Err(Error::config(
                "n_data",
                format!("must be finite and > 0, got {n_data}"),
            ));
        }
        if !(prior_var.is_finite() && prior_var > 0.0) {
            return Err(Error::config(
                "prior_var",
                format!("must be finite and > 0, got {prior_var}"),
            ));
        }
        Ok(Self {
            prior_over_n: 1.0 / (n_data * prior_var),
        })
    }

    /// The log posterior and gradient of one parameter vector, written as a
    /// plain scalar loop with libm (the reference for tests).
    pub fn value_and_grad_scalar(
        &self,
        theta: &[f64],
        batch: &LogisticBatch,
        grad: &mut [f64],
    ) -> f64 {
        let d = batch.dim;
        let inv_b = 1.0 / batch.rows() as f64;
        let mut value = 0.0;
        for (g, t) in grad.iter_mut().zip(theta) {
            *g = -self.prior_over_n * t;
            value -= 0.5 * self.prior_over_n * t * t;
        }
        for (row, &y) in batch.x.chunks_exact(d).zip(&batch.y) {
            let z: f64 = row.iter().zip(theta).map(|(a, t)| a * t).sum();
            let sp = z.max(0.0) + (-z.abs()).exp().ln_1p();
            value += inv_b * (y * z - sp);
            let r = inv_b * (y - 1.0 / (1.0 + (-z).exp()));
            for (g, a) in grad.iter_mut().zip(row) {
                *g += r * a;
            }
        }
        value
    }
}

thread_local! {
    /// The K × B matrix Z (then R), reused across calls.
    static Z_SCRATCH: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl BatchLogDensity for BatchedLogistic {
    type Batch = LogisticBatch;

    fn values_and_grads(
        &self,
        thetas: &[f64],
        dim: usize,
        batch: &LogisticBatch,
        values: &mut [f64],
        grads: &mut [f64],
    ) -> Result<()> {
        let k = check_batch_shapes(thetas, dim, values, grads)?;
        if dim != batch.dim {
            return Err(Error::DimensionMismatch {
                what: "logistic parameter dimension",
                expected: batch.dim,
                got: dim,
            });
        }
        if k == 0 {
            return Ok(());
        }
        let b = batch.rows();
        let mut z = Z_SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        // Sized, not cleared: the first product overwrites it.
        z.truncate(k * b);
        z.resize(k * b, 0.0);
        let x = MatRef::from_row_major_slice(&batch.x, b, dim);
        let theta = MatRef::from_row_major_slice(thetas, k, dim);
        // Z = Θ Xᵀ.
        matmul(
            MatMut::from_row_major_slice_mut(&mut z, k, b),
            Accum::Replace,
            theta,
            x.transpose(),
            1.0,
            Par::Seq,
        );
        // Values (likelihood part) and R = (y − sigmoid(Z)) / B, in place.
        logistic_rows(&mut z, &batch.y, values);
        // G = R X, then the prior.
        matmul(
            MatMut::from_row_major_slice_mut(grads, k, dim),
            Accum::Replace,
            MatRef::from_row_major_slice(&z, k, b),
            x,
            1.0,
            Par::Seq,
        );
        let lam = self.prior_over_n;
        for ((g, t), v) in grads
            .chunks_exact_mut(dim)
            .zip(thetas.chunks_exact(dim))
            .zip(values.iter_mut())
        {
            let mut sq = 0.0;
            for (gi, ti) in g.iter_mut().zip(t) {
                *gi -= lam * ti;
                sq += ti * ti;
            }
            *v -= 0.5 * lam * sq;
        }
        Z_SCRATCH.with(|s| *s.borrow_mut() = z);
        Ok(())
    }
}

/// For each row of `z` (K × B): `values[c] = (1/B) Σ_i [y_i z_ci − softplus(z_ci)]`
/// and `z_ci ← (y_i − sigmoid(z_ci)) / B`.
fn logistic_rows(z: &mut [f64], y: &[f64], values: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if langevin_core::vecmath::has_avx512() {
            // SAFETY: the CPU supports these features (checked just above).
            unsafe { logistic_rows_avx512(z, y, values) };
            return;
        }
        if langevin_core::vecmath::has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { logistic_rows_avx2(z, y, values) };
            return;
        }
    }
    logistic_rows_generic(z, y, values)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
unsafe fn logistic_rows_avx512(z: &mut [f64], y: &[f64], values: &mut [f64]) {
    logistic_rows_generic(z, y, values)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn logistic_rows_avx2(z: &mut [f64], y: &[f64], values: &mut [f64]) {
    logistic_rows_generic(z, y, values)
}

// The explicit 4-lane loop keeps four partial sums in one vector register.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn logistic_rows_generic(z: &mut [f64], y: &[f64], values: &mut [f64]) {
    let b = y.len();
    let inv_b = 1.0 / b as f64;
    for (row, v) in z.chunks_exact_mut(b).zip(values.iter_mut()) {
        // Four independent partial sums (a fixed order, so deterministic)
        // let the compiler keep them in one vector register.
        // Terms are made eight at a time (a 512-bit register) and added as
        // two groups of four: the same additions, in the same order, as the
        // four-at-a-time loop that handles the rest.
        let mut acc = [0.0f64; 4];
        let mut rc8 = row.chunks_exact_mut(8);
        let mut yc8 = y.chunks_exact(8);
        for (zs, ys) in (&mut rc8).zip(&mut yc8) {
            let mut l = [0.0f64; 8];
            for j in 0..8 {
                let (lj, r) = logistic_term(zs[j], ys[j]);
                l[j] = lj;
                zs[j] = r * inv_b;
            }
            for j in 0..4 {
                acc[j] += l[j];
            }
            for j in 0..4 {
                acc[j] += l[j + 4];
            }
        }
        let mut rc = rc8.into_remainder().chunks_exact_mut(4);
        let mut yc = yc8.remainder().chunks_exact(4);
        for (zs, ys) in (&mut rc).zip(&mut yc) {
            for j in 0..4 {
                let (l, r) = logistic_term(zs[j], ys[j]);
                acc[j] += l;
                zs[j] = r * inv_b;
            }
        }
        let mut tail = 0.0;
        for (zj, &yj) in rc.into_remainder().iter_mut().zip(yc.remainder()) {
            let (l, r) = logistic_term(*zj, yj);
            tail += l;
            *zj = r * inv_b;
        }
        *v = (((acc[0] + acc[1]) + (acc[2] + acc[3])) + tail) * inv_b;
    }
}

/// `(y z − softplus(z), y − sigmoid(z))`, branch-free.
#[inline(always)]
fn logistic_term(z: f64, y: f64) -> (f64, f64) {
    let e = exp_nonpositive(-z.abs());
    let (l1p, inv_u) = log1p_recip(e);
    let sp = z.max(0.0) + l1p;
    let s = if z >= 0.0 { inv_u } else { e * inv_u };
    (y * z - sp, y - s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, StandardNormal};

    fn batch(b: usize, d: usize, seed: u64) -> LogisticBatch {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let x: Vec<f64> = (0..b * d)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let y: Vec<f64> = (0..b).map(|_| f64::from(rng.random::<bool>())).collect();
        LogisticBatch::new(x, y, d).unwrap()
    }

    #[test]
    fn batched_matches_scalar_reference() {
        let dens = BatchedLogistic::new(1000.0, 2.0).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        for (k, b, d) in [(1, 1, 1), (7, 33, 5), (64, 32, 20), (3, 5, 50)] {
            let bt = batch(b, d, k as u64);
            // Scales from small to very large |z| (saturated sigmoid).
            for scale in [0.01, 1.0, 30.0, 1e3] {
                let thetas: Vec<f64> = (0..k * d)
                    .map(|_| {
                        let z: f64 = StandardNormal.sample(&mut rng);
                        scale * z
                    })
                    .collect();
                let mut values = vec![0.0; k];
                let mut grads = vec![f64::NAN; k * d];
                dens.values_and_grads(&thetas, d, &bt, &mut values, &mut grads)
                    .unwrap();
                for c in 0..k {
                    let mut g = vec![0.0; d];
                    let v = dens.value_and_grad_scalar(&thetas[c * d..(c + 1) * d], &bt, &mut g);
                    let tol = 1e-12 * (1.0 + v.abs());
                    assert!((values[c] - v).abs() < tol, "value {} vs {v}", values[c]);
                    let gs: f64 = g.iter().map(|x| x.abs()).sum::<f64>() + 1.0;
                    for (a, e) in grads[c * d..(c + 1) * d].iter().zip(&g) {
                        assert!((a - e).abs() < 1e-12 * gs, "grad {a} vs {e}");
                    }
                }
            }
        }
    }

    #[test]
    fn non_finite_parameters_give_non_finite_rows_only() {
        let dens = BatchedLogistic::new(100.0, 1.0).unwrap();
        let bt = batch(8, 3, 0);
        let mut thetas = vec![0.1; 9];
        thetas[4] = f64::NAN;
        let mut values = vec![0.0; 3];
        let mut grads = vec![0.0; 9];
        dens.values_and_grads(&thetas, 3, &bt, &mut values, &mut grads)
            .unwrap();
        assert!(values[0].is_finite() && values[2].is_finite());
        assert!(values[1].is_nan());
        assert!(grads[..3].iter().chain(&grads[6..]).all(|g| g.is_finite()));
    }

    #[test]
    fn every_version_of_the_row_loop_gives_the_same_bits() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for b in [1, 3, 4, 7, 8, 12, 13, 32, 37] {
            let k = 5;
            let z: Vec<f64> = (0..k * b)
                .map(|_| (rng.random::<f64>() - 0.5) * 60.0)
                .collect();
            let y: Vec<f64> = (0..b).map(|_| (rng.random::<u8>() & 1) as f64).collect();
            let (mut z1, mut v1) = (z.clone(), vec![0.0; k]);
            logistic_rows_generic(&mut z1, &y, &mut v1);
            let (mut z2, mut v2) = (z.clone(), vec![0.0; k]);
            logistic_rows(&mut z2, &y, &mut v2);
            assert_eq!((&z1, &v1), (&z2, &v2), "b = {b}");
            #[cfg(target_arch = "x86_64")]
            if langevin_core::vecmath::has_avx2_fma() {
                let (mut z3, mut v3) = (z.clone(), vec![0.0; k]);
                // SAFETY: feature checked just above.
                unsafe { logistic_rows_avx2(&mut z3, &y, &mut v3) };
                assert_eq!((&z1, &v1), (&z3, &v3), "b = {b}");
            }
            // And the reference formula, row by row.
            for c in 0..k {
                let row = &z[c * b..(c + 1) * b];
                let want: f64 = row
                    .iter()
                    .zip(&y)
                    .map(|(&zi, &yi)| yi * zi - (zi.max(0.0) + (-zi.abs()).exp().ln_1p()))
                    .sum::<f64>()
                    / b as f64;
                assert!((v1[c] - want).abs() < 1e-13 * (1.0 + want.abs()), "b = {b}");
            }
        }
    }

    #[test]
    fn invalid_inputs_are_rejected() {
        assert!(BatchedLogistic::new(0.0, 1.0).is_err());
        assert!(BatchedLogistic::new(10.0, f64::NAN).is_err());
        assert!(LogisticBatch::new(vec![1.0; 5], vec![0.0; 2], 3).is_err());
        assert!(LogisticBatch::new(vec![1.0; 6], vec![0.0, 0.5], 3).is_err());
        assert!(LogisticBatch::new(vec![], vec![], 3).is_err());
        let dens = BatchedLogistic::new(10.0, 1.0).unwrap();
        let bt = batch(4, 3, 0);
        let mut v = vec![0.0; 2];
        let mut g = vec![0.0; 6];
        assert!(matches!(
            dens.values_and_grads(&[0.0; 5], 3, &bt, &mut v, &mut g),
            Err(Error::DimensionMismatch { .. })
        ));
        assert!(dens
            .values_and_grads(&[0.0; 4], 2, &bt, &mut v, &mut [0.0; 4])
            .is_err());
    }
}
