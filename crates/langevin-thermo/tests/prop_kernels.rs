//! Property tests of the numerical kernels of `langevin_thermo::ou` and
//! `langevin_thermo::linalg` against naive references, on random inputs.
//!
//! * Stationary covariance `S` (Lyapunov `A S + S Aᵀ = D`, solved by the
//!   library with the matrix sign iteration) vs the Kronecker-vectorised
//!   system `(I ⊗ A + A ⊗ I) vec S = vec D` solved by Gaussian elimination.
//! * Transition covariance `Q_h = ∫₀ʰ e^{-As} D e^{-Aᵀs} ds` (both of the
//!   library's branches: Van Loan's block exponential for `‖A‖₁ h ≤ 1`, and
//!   `S - E S Eᵀ` above) vs composite Simpson quadrature of the integral, with
//!   `e^{-As}` from a Taylor series; and `e^{-Ah}` vs the Taylor series.
//! * The Cholesky-based transition density (`log_prob`) vs the Gaussian log
//!   density computed with Gaussian elimination (solve and determinant).
//! * `psd_sqrt` (Cholesky, or an eigen square root for semi-definite input):
//!   `L Lᵀ = Q`.
//! * `check_spd` (Cholesky) accepts exactly the symmetric matrices whose
//!   eigenvalues are all positive.
//!
//! Drifts are random, stable and non-normal: `A = P (Λ + U) P⁻¹` with `Λ`
//! block diagonal (1x1 blocks `λ > 0`, 2x2 blocks `[[a, b], [-b, a]]`,
//! `a > 0`), `U` strictly block-upper-triangular, `P` a random well
//! conditioned matrix; so every eigenvalue has real part in `[0.3, 3]`.

use langevin_thermo::linalg;
use langevin_thermo::ou::{self, Mat, OuProcess};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Naive dense helpers (row-major Vec<f64>)
// ---------------------------------------------------------------------------

type M = Vec<f64>;

fn to_mat(n: usize, a: &[f64]) -> Mat<f64> {
    Mat::from_fn(n, n, |i, j| a[i * n + j])
}

fn from_mat(m: &Mat<f64>) -> M {
    let n = m.nrows();
    (0..n * n).map(|k| m[(k / n, k % n)]).collect()
}

fn eye(n: usize) -> M {
    (0..n * n)
        .map(|k| if k / n == k % n { 1.0 } else { 0.0 })
        .collect()
}

fn matmul(n: usize, a: &[f64], b: &[f64]) -> M {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            for j in 0..n {
                c[i * n + j] += a[i * n + k] * b[k * n + j];
            }
        }
    }
    c
}

fn transpose(n: usize, a: &[f64]) -> M {
    (0..n * n).map(|k| a[(k % n) * n + k / n]).collect()
}

fn add(a: &[f64], b: &[f64], s: f64) -> M {
    a.iter().zip(b).map(|(x, y)| x + s * y).collect()
}

fn scale(a: &[f64], s: f64) -> M {
    a.iter().map(|x| s * x).collect()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0f64, |m, x| m.max(x.abs()))
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
}

/// Gaussian elimination with partial pivoting: solves `a x = b` for the
/// `k` right-hand sides stored as the columns of row-major `b` (`n × k`);
/// returns `(x, log|det a|)`.
fn gauss_solve(n: usize, a: &[f64], b: &[f64], k: usize) -> (Vec<f64>, f64) {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    let mut logdet = 0.0;
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| a[i * n + c].abs().total_cmp(&a[j * n + c].abs()))
            .unwrap();
        if p != c {
            for j in 0..n {
                a.swap(c * n + j, p * n + j);
            }
            for j in 0..k {
                b.swap(c * k + j, p * k + j);
            }
        }
        let piv = a[c * n + c];
        assert!(piv != 0.0, "singular matrix in the reference");
        logdet += piv.abs().ln();
        for i in c + 1..n {
            let f = a[i * n + c] / piv;
            if f == 0.0 {
                continue;
            }
            for j in c..n {
                a[i * n + j] -= f * a[c * n + j];
            }
            for j in 0..k {
                b[i * k + j] -= f * b[c * k + j];
            }
        }
    }
    let mut x = vec![0.0; n * k];
    for j in 0..k {
        for i in (0..n).rev() {
            let mut s = b[i * k + j];
            for l in i + 1..n {
                s -= a[i * n + l] * x[l * k + j];
            }
            x[i * k + j] = s / a[i * n + i];
        }
    }
    (x, logdet)
}

fn inverse(n: usize, a: &[f64]) -> M {
    gauss_solve(n, a, &eye(n), n).0
}

/// `e^{a}` by a Taylor series on `a / 2^s` (`‖a / 2^s‖ ≤ 1/2`), then squaring.
fn expm_taylor(n: usize, a: &[f64]) -> M {
    let norm: f64 = (0..n)
        .map(|i| (0..n).map(|j| a[i * n + j].abs()).sum::<f64>())
        .fold(0.0, f64::max);
    let s = if norm > 0.5 {
        (norm / 0.5).log2().ceil() as i32
    } else {
        0
    };
    let a1 = scale(a, 0.5f64.powi(s));
    let mut term = eye(n);
    let mut sum = eye(n);
    for k in 1..40 {
        term = scale(&matmul(n, &term, &a1), 1.0 / k as f64);
        sum = add(&sum, &term, 1.0);
    }
    for _ in 0..s {
        sum = matmul(n, &sum, &sum);
    }
    sum
}

/// Stationary covariance by Kronecker vectorisation:
/// `(I ⊗ A + A ⊗ I) vec S = vec D` (row-major vec).
fn lyapunov_kron(n: usize, a: &[f64], d: &[f64]) -> M {
    // (A S)_{ij} = Σ_k A_ik S_kj ; (S Aᵀ)_{ij} = Σ_k S_ik A_jk.
    let nn = n * n;
    let mut k = vec![0.0; nn * nn];
    for i in 0..n {
        for j in 0..n {
            let row = i * n + j;
            for l in 0..n {
                k[row * nn + l * n + j] += a[i * n + l];
                k[row * nn + i * n + l] += a[j * n + l];
            }
        }
    }
    gauss_solve(nn, &k, d, 1).0
}

/// `Q_h = ∫₀ʰ e^{-As} D e^{-Aᵀs} ds` by composite Simpson with at least
/// `min_steps` intervals and `‖A‖₁ δ ≤ 0.01` (error about `(‖A‖₁ δ)⁴ / 180`
/// relative); `e^{-As}` by repeated products of the Taylor `e^{-A δ}`.
fn transition_cov_simpson(n: usize, a: &[f64], d: &[f64], h: f64, min_steps: usize) -> M {
    let norm1 = (0..n)
        .map(|j| (0..n).map(|i| a[i * n + j].abs()).sum::<f64>())
        .fold(0.0, f64::max);
    let steps = min_steps.max((norm1 * h * 100.0).ceil() as usize);
    let steps = steps + steps % 2;
    let delta = h / steps as f64;
    let e_delta = expm_taylor(n, &scale(a, -delta));
    let mut e = eye(n);
    let mut q = vec![0.0; n * n];
    for k in 0..=steps {
        let w = if k == 0 || k == steps {
            1.0
        } else if k % 2 == 1 {
            4.0
        } else {
            2.0
        };
        let f = matmul(n, &matmul(n, &e, d), &transpose(n, &e));
        q = add(&q, &f, w * delta / 3.0);
        e = matmul(n, &e, &e_delta);
    }
    q
}

// ---------------------------------------------------------------------------
// Random inputs
// ---------------------------------------------------------------------------

/// A random stable, generally non-normal drift (see the module docs).
#[derive(Debug, Clone)]
struct Drift {
    n: usize,
    a: M,
}

fn drift() -> impl Strategy<Value = Drift> {
    (1usize..5).prop_flat_map(|n| {
        (
            Just(n),
            prop::collection::vec(0.3f64..3.0, n),
            prop::collection::vec(-2.0f64..2.0, n),
            prop::collection::vec(any::<bool>(), n),
            prop::collection::vec(-3.0f64..3.0, n * n),
            prop::collection::vec(-0.8f64..0.8, n * n),
        )
            .prop_map(|(n, re, im, pair, upper, p)| {
                // Block diagonal Λ + strictly block-upper U.
                let mut t = vec![0.0; n * n];
                let mut block_of = vec![0usize; n];
                let mut i = 0;
                let mut blk = 0;
                while i < n {
                    if pair[i] && i + 1 < n {
                        t[i * n + i] = re[i];
                        t[(i + 1) * n + i + 1] = re[i];
                        t[i * n + i + 1] = im[i];
                        t[(i + 1) * n + i] = -im[i];
                        block_of[i] = blk;
                        block_of[i + 1] = blk;
                        i += 2;
                    } else {
                        t[i * n + i] = re[i];
                        block_of[i] = blk;
                        i += 1;
                    }
                    blk += 1;
                }
                for r in 0..n {
                    for c in 0..n {
                        if block_of[c] > block_of[r] {
                            t[r * n + c] = upper[r * n + c];
                        }
                    }
                }
                // Diagonally dominant, so P is invertible and well conditioned.
                let pm = add(&eye(n), &p, 1.0 / n as f64);
                let a = matmul(n, &matmul(n, &pm, &t), &inverse(n, &pm));
                Drift { n, a }
            })
    })
}

/// A random symmetric positive semi-definite `D = B Bᵀ (+ 0.1 I)`, `B` of `n × rank`.
fn diffusion(n: usize) -> impl Strategy<Value = M> {
    (
        1usize..=n,
        prop::collection::vec(-1.5f64..1.5, n * n),
        any::<bool>(),
    )
        .prop_map(move |(rank, b, ridge)| {
            let mut d = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    d[i * n + j] = (0..rank).map(|k| b[i * n + k] * b[j * n + k]).sum();
                }
                if ridge || rank == n {
                    d[i * n + i] += 0.1;
                }
            }
            d
        })
}

fn drift_and_diffusion() -> impl Strategy<Value = (Drift, M)> {
    drift().prop_flat_map(|dr| {
        let n = dr.n;
        (Just(dr), diffusion(n))
    })
}

/// A random orthogonal matrix (Gram-Schmidt of a random matrix).
fn orthogonal(n: usize, g: &[f64]) -> M {
    let mut q = vec![0.0; n * n];
    for c in 0..n {
        let mut v: Vec<f64> = (0..n)
            .map(|i| g[i * n + c] + if i == c { 2.0 } else { 0.0 })
            .collect();
        for p in 0..c {
            let dot: f64 = (0..n).map(|i| v[i] * q[i * n + p]).sum();
            for i in 0..n {
                v[i] -= dot * q[i * n + p];
            }
        }
        let nv = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        for i in 0..n {
            q[i * n + c] = v[i] / nv;
        }
    }
    q
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn stationary_covariance_solves_the_kronecker_system((dr, d) in drift_and_diffusion()) {
        let n = dr.n;
        let s = ou::stationary_covariance(to_mat(n, &dr.a).as_ref(), to_mat(n, &d).as_ref())
            .map_err(|e| TestCaseError::fail(format!("{e}: A = {:?}", dr.a)))?;
        let want = lyapunov_kron(n, &dr.a, &d);
        let got = from_mat(&s);
        let tol = 1e-8 * max_abs(&want).max(1e-3);
        prop_assert!(max_diff(&got, &want) <= tol,
            "S = {got:?}\nwant {want:?}\nA = {:?}\nD = {d:?}", dr.a);
        // And the residual of the Lyapunov equation itself.
        let as_ = matmul(n, &dr.a, &got);
        let resid = add(&add(&as_, &transpose(n, &as_), 1.0), &d, -1.0);
        prop_assert!(max_abs(&resid) <= 1e-8 * (max_abs(&d) + max_abs(&as_)));
    }

    #[test]
    fn transition_covariance_matches_quadrature(
        (dr, d) in drift_and_diffusion(),
        log_h in -3.0f64..1.0,
    ) {
        let n = dr.n;
        let h = 10f64.powf(log_h);
        let proc = OuProcess::new(to_mat(n, &dr.a).as_ref(), &vec![0.0; n], to_mat(n, &d).as_ref())
            .map_err(|e| TestCaseError::fail(format!("{e}: A = {:?}", dr.a)))?;
        let tr = proc.compute_transition(h).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want_q = transition_cov_simpson(n, &dr.a, &d, h, 400);
        let got_q = from_mat(&tr.cov);
        // Simpson's error is O((‖A‖ h / 400)^4); the scale is that of D h.
        let tol = 1e-8 * (max_abs(&want_q) + max_abs(&d) * h);
        prop_assert!(max_diff(&got_q, &want_q) <= tol,
            "h = {h}: Q = {got_q:?}\nwant {want_q:?}\nA = {:?}\nD = {d:?}", dr.a);
        let want_e = expm_taylor(n, &scale(&dr.a, -h));
        prop_assert!(max_diff(&from_mat(&tr.e), &want_e) <= 1e-10 * max_abs(&want_e).max(1.0));
        // The factor is a square root of Q.
        let f = from_mat(&tr.factor);
        let llt = matmul(n, &f, &transpose(n, &f));
        prop_assert!(max_diff(&llt, &got_q) <= 1e-10 * max_abs(&got_q).max(1e-300) + 1e-14);
        // conditional_covariance is the same matrix.
        let c = proc.conditional_covariance(h).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(max_diff(&from_mat(&c), &got_q) <= 1e-12 * max_abs(&got_q).max(1e-300));
    }

    #[test]
    fn log_prob_matches_gaussian_elimination(
        (dr, d) in drift_and_diffusion(),
        h in 0.05f64..2.0,
        pts in prop::collection::vec(-2.0f64..2.0, 12),
    ) {
        let n = dr.n;
        // A definite D so that the transition density exists.
        let d = add(&d, &eye(n), 0.2);
        let b: Vec<f64> = pts[8..8 + n].to_vec();
        let x0 = &pts[..n];
        let x1 = &pts[4..4 + n];
        let mut proc = OuProcess::new(to_mat(n, &dr.a).as_ref(), &b, to_mat(n, &d).as_ref())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let xs: Vec<f64> = x0.iter().chain(x1).copied().collect();
        let got = proc.log_prob(&[0.0, h], &xs).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Reference: x1 ~ N(b + E (x0 - b), Q) with E, Q from the naive kernels.
        let e = expm_taylor(n, &scale(&dr.a, -h));
        let q = transition_cov_simpson(n, &dr.a, &d, h, 400);
        let r: Vec<f64> = (0..n)
            .map(|i| x1[i] - b[i] - (0..n).map(|j| e[i * n + j] * (x0[j] - b[j])).sum::<f64>())
            .collect();
        let (y, logdet) = gauss_solve(n, &q, &r, 1);
        let quad: f64 = r.iter().zip(&y).map(|(a, b)| a * b).sum();
        let want = -0.5 * quad - 0.5 * logdet - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln();
        prop_assert!((got - want).abs() <= 1e-6 * (1.0 + want.abs()), "got {got}, want {want}");
    }

    #[test]
    fn psd_sqrt_squares_back(n in 1usize..6, g in prop::collection::vec(-1.0f64..1.0, 25), rank in 0usize..6) {
        let rank = rank.min(n);
        let mut q = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                q[i * n + j] = (0..rank).map(|k| g[i * 5 + k] * g[j * 5 + k]).sum();
            }
        }
        let l = ou::psd_sqrt("q", to_mat(n, &q).as_ref())
            .map_err(|e| TestCaseError::fail(format!("{e}: {q:?}")))?;
        let l = from_mat(&l);
        let llt = matmul(n, &l, &transpose(n, &l));
        prop_assert!(max_diff(&llt, &q) <= 1e-10 * max_abs(&q).max(1e-12), "{llt:?} vs {q:?}");
    }

    #[test]
    fn check_spd_agrees_with_the_eigenvalues(
        n in 1usize..6,
        g in prop::collection::vec(-1.0f64..1.0, 25),
        ev in prop::collection::vec(0.05f64..5.0, 5),
        neg in prop::collection::vec(any::<bool>(), 5),
    ) {
        let g: Vec<f64> = (0..n * n).map(|k| g[(k / n) * 5 + k % n]).collect();
        let qm = orthogonal(n, &g);
        let lam: Vec<f64> = (0..n).map(|i| if neg[i] { -ev[i] } else { ev[i] }).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| qm[i * n + k] * lam[k] * qm[j * n + k]).sum();
            }
        }
        // Exactly symmetric.
        let a = scale(&add(&a, &transpose(n, &a), 1.0), 0.5);
        let pd = lam.iter().all(|&l| l > 0.0);
        let got = linalg::check_spd("A", to_mat(n, &a).as_ref());
        prop_assert_eq!(got.is_ok(), pd, "{:?} for eigenvalues {:?}", got, lam);
        if pd {
            // And the stationary covariance of dx = -A x dt + sqrt(2) dW is A⁻¹.
            let s = ou::stationary_covariance(to_mat(n, &a).as_ref(), to_mat(n, &scale(&eye(n), 2.0)).as_ref())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let inv = inverse(n, &a);
            prop_assert!(max_diff(&from_mat(&s), &inv) <= 1e-9 * max_abs(&inv));
        }
    }
}

/// The naive references themselves, on the DESIGN.md reference values.
#[test]
fn references_reproduce_known_values() {
    let a = vec![3.0, 2.5, 2.0, 4.0];
    let d = vec![2.0, 0.0, 0.0, 2.0];
    let s = lyapunov_kron(2, &a, &d);
    let want = [0.5969, -0.3163, -0.3163, 0.4082];
    assert!(max_diff(&s, &want) < 1e-4, "{s:?}");
    let a = vec![1.0, 5.0, 0.0, 2.0];
    let s = lyapunov_kron(2, &a, &d);
    let want = [5.1667, -0.8333, -0.8333, 0.5];
    assert!(max_diff(&s, &want) < 1e-4, "{s:?}");
    // A long transition approaches S.
    let q = transition_cov_simpson(2, &a, &d, 20.0, 4000);
    assert!(max_diff(&q, &s) < 1e-6, "{q:?}");
    // e^{diag} is diagonal of exponentials.
    let e = expm_taylor(2, &[-3.0, 0.0, 0.0, 1.5]);
    assert!((e[0] - (-3.0f64).exp()).abs() < 1e-14 && (e[3] - 1.5f64.exp()).abs() < 1e-13);
}
