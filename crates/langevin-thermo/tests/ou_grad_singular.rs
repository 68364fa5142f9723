//! Gradients of the OU path log density against central finite differences, and
//! singular / zero diffusion (thermox issue 29): sampling, log density, stationary
//! covariance.

use faer::{Mat, MatRef};
use langevin_core::rng::chain_rng;
use langevin_thermo::error::ThermoError;
use langevin_thermo::ou::{self, OuProcess};
use rand::Rng;

fn m(rows: &[&[f64]]) -> Mat<f64> {
    Mat::from_fn(rows.len(), rows[0].len(), |i, j| rows[i][j])
}

/// A random non-symmetric drift with every eigenvalue of positive real part
/// (diagonal shift larger than the Gershgorin radius) and a full random
/// positive definite diffusion.
fn instance(n: usize, seed: u64) -> (Mat<f64>, Vec<f64>, Mat<f64>) {
    let mut rng = chain_rng(seed, 7);
    let mut u = || 2.0 * rng.random::<f64>() - 1.0;
    let r = Mat::from_fn(n, n, |_, _| u());
    let a = Mat::from_fn(n, n, |i, j| {
        if i == j {
            n as f64 + 0.5 + r[(i, j)].abs()
        } else {
            r[(i, j)] * if j > i { 1.5 } else { 0.5 }
        }
    });
    let b: Vec<f64> = (0..n).map(|_| u()).collect();
    let g = Mat::from_fn(n, n, |_, _| u());
    let d = Mat::from_fn(n, n, |i, j| {
        (0..n).map(|k| g[(i, k)] * g[(j, k)]).sum::<f64>() + if i == j { 0.3 } else { 0.0 }
    });
    (a, b, d)
}

/// An irregular grid with small steps (Van Loan branch, `‖A‖₁ h ≤ 1`) and large
/// steps (stationary-covariance branch), each size repeated.
fn grid() -> Vec<f64> {
    let steps = [0.02, 0.05, 0.6, 0.02, 1.3, 0.05, 0.6, 2.0, 0.02, 0.05];
    let mut ts = vec![0.0];
    for h in steps {
        ts.push(ts.last().unwrap() + h);
    }
    ts
}

fn lp(ts: &[f64], xs: &[f64], a: MatRef<'_, f64>, b: &[f64], d: MatRef<'_, f64>) -> f64 {
    ou::log_prob(ts, xs, a, b, d).unwrap()
}

/// Central differences with step `eps = 1e-5`. Truncation error is
/// `eps² |f'''| / 6 ≈ 2e-11 |f'''|`; rounding error is about `u κ |f| / eps` with
/// `u = 1.1e-16`, `|f| ≲ 10²` and the condition number `κ ≲ 10²` of the
/// transition covariances here, i.e. `≲ 1e-7` absolutely (observed worst:
/// 1.5e-9 relative). The tolerance `1e-7 · (1 + |g|)` covers both, and is far
/// below what a wrong gradient gives (a dropped term or a transposition changes
/// entries by O(1)).
#[test]
fn log_prob_gradient_matches_central_differences() {
    let ts = grid();
    let eps = 1e-5;
    let mut worst = 0.0f64;
    for (n, seed) in [(2usize, 1u64), (3, 2), (3, 3), (4, 4), (5, 5)] {
        let (a, b, d) = instance(n, seed);
        // The path: a sample of the process itself, so the quadratic terms are typical.
        let x0: Vec<f64> = (0..n).map(|i| 0.3 * i as f64 - 0.2).collect();
        let path = ou::sample(
            &ts,
            &x0,
            a.as_ref(),
            &b,
            d.as_ref(),
            &mut chain_rng(seed, 1),
        )
        .unwrap();
        let xs = &path.states;
        let g = ou::log_prob_grad(&ts, xs, a.as_ref(), &b, d.as_ref()).unwrap();
        let f0 = lp(&ts, xs, a.as_ref(), &b, d.as_ref());
        assert_eq!(g.log_prob, f0, "value differs from log_prob");
        let tol = |gv: f64| 1e-7 * (1.0 + gv.abs());
        for i in 0..n {
            for j in 0..n {
                let mut ap = a.clone();
                ap[(i, j)] += eps;
                let mut am = a.clone();
                am[(i, j)] -= eps;
                let fd = (lp(&ts, xs, ap.as_ref(), &b, d.as_ref())
                    - lp(&ts, xs, am.as_ref(), &b, d.as_ref()))
                    / (2.0 * eps);
                let err = (fd - g.d_a[(i, j)]).abs();
                worst = worst.max(err / (1.0 + fd.abs()));
                assert!(
                    err < tol(fd),
                    "n={n} seed={seed} dA[{i},{j}]: fd {fd} vs {}",
                    g.d_a[(i, j)]
                );
                // Symmetric perturbation of the pair D_ij = D_ji.
                if j <= i {
                    let mut dp = d.clone();
                    let mut dm = d.clone();
                    dp[(i, j)] += eps;
                    dm[(i, j)] -= eps;
                    if i != j {
                        dp[(j, i)] += eps;
                        dm[(j, i)] -= eps;
                    }
                    let fd = (lp(&ts, xs, a.as_ref(), &b, dp.as_ref())
                        - lp(&ts, xs, a.as_ref(), &b, dm.as_ref()))
                        / (2.0 * eps);
                    let want = if i == j {
                        g.d_d[(i, i)]
                    } else {
                        2.0 * g.d_d[(i, j)]
                    };
                    let err = (fd - want).abs();
                    worst = worst.max(err / (1.0 + fd.abs()));
                    assert!(
                        err < tol(fd),
                        "n={n} seed={seed} dD[{i},{j}]: fd {fd} vs {want}"
                    );
                }
            }
            let mut bp = b.clone();
            bp[i] += eps;
            let mut bm = b.clone();
            bm[i] -= eps;
            let fd = (lp(&ts, xs, a.as_ref(), &bp, d.as_ref())
                - lp(&ts, xs, a.as_ref(), &bm, d.as_ref()))
                / (2.0 * eps);
            let err = (fd - g.d_b[i]).abs();
            worst = worst.max(err / (1.0 + fd.abs()));
            assert!(
                err < tol(fd),
                "n={n} seed={seed} db[{i}]: fd {fd} vs {}",
                g.d_b[i]
            );
        }
        // The D gradient is returned symmetric.
        for i in 0..n {
            for j in 0..n {
                assert_eq!(g.d_d[(i, j)], g.d_d[(j, i)]);
            }
        }
    }
    eprintln!("worst relative finite-difference discrepancy: {worst:.2e}");
}

/// The adjoint identity of the Fréchet derivative, `⟨W, L(M, G)⟩ = ⟨L(Mᵀ, W), G⟩`,
/// and `L(M, G)` against central differences of `expm`, on non-normal matrices.
#[test]
fn expm_frechet_is_the_derivative_and_its_adjoint() {
    for seed in 0..4u64 {
        let mut rng = chain_rng(seed, 3);
        let mut u = || 2.0 * rng.random::<f64>() - 1.0;
        let n = 4;
        let mm = Mat::from_fn(n, n, |_, _| 2.0 * u());
        let g = Mat::from_fn(n, n, |_, _| u());
        let w = Mat::from_fn(n, n, |_, _| u());
        let l = ou::expm_frechet(mm.as_ref(), g.as_ref());
        let eps = 1e-6;
        let ep = ou::expm((&mm + &g * faer::Scale(eps)).as_ref());
        let em = ou::expm((&mm - &g * faer::Scale(eps)).as_ref());
        let fd = (ep - em) * faer::Scale(0.5 / eps);
        let rel = (&fd - &l).norm_max() / l.norm_max();
        // Central differences: eps² ‖M‖³-size truncation ~1e-11, rounding
        // ~u ‖e^M‖ / eps ~ 1e-9 relative.
        assert!(rel < 1e-7, "seed {seed}: relative error {rel:e}");
        let lt = ou::expm_frechet(mm.transpose(), w.as_ref());
        let ip = |x: MatRef<'_, f64>, y: MatRef<'_, f64>| {
            (0..n)
                .flat_map(|i| (0..n).map(move |j| (i, j)))
                .map(|(i, j)| x[(i, j)] * y[(i, j)])
                .sum::<f64>()
        };
        let lhs = ip(w.as_ref(), l.as_ref());
        let rhs = ip(lt.as_ref(), g.as_ref());
        assert!(
            (lhs - rhs).abs() < 1e-12 * (1.0 + lhs.abs()),
            "{lhs} vs {rhs}"
        );
    }
}

fn rotation(theta: f64) -> Mat<f64> {
    let (s, c) = theta.sin_cos();
    m(&[&[c, -s], &[s, c]])
}

fn rot_diag(theta: f64, d0: f64, d1: f64) -> Mat<f64> {
    let r = rotation(theta);
    let dg = m(&[&[d0, 0.0], &[0.0, d1]]);
    &r * &dg * r.transpose()
}

/// D = 0: the exact sampler follows the deterministic flow
/// `x(t) = b + e^{-A t} (x0 − b)`, the stationary covariance is 0, and the
/// path log density (which does not exist) is a typed error, never NaN.
#[test]
fn zero_diffusion_is_the_deterministic_flow() {
    let zero = Mat::<f64>::zeros(2, 2);
    let b = [0.5, -1.0];
    let x0 = [2.0, 1.0];
    // Symmetric and non-normal drifts; steps on both transition branches.
    let drifts = [
        m(&[&[2.0, 0.5], &[0.5, 1.0]]),
        m(&[&[1.0, 3.0], &[-0.2, 0.7]]),
    ];
    let ts = [0.0, 0.1, 0.2, 1.7, 3.0, 3.05, 6.0];
    for a in &drifts {
        let s = ou::stationary_covariance(a.as_ref(), zero.as_ref()).unwrap();
        assert_eq!(s.norm_max(), 0.0);
        let path = ou::sample(
            &ts,
            &x0,
            a.as_ref(),
            &b,
            zero.as_ref(),
            &mut chain_rng(0, 0),
        )
        .unwrap();
        for (k, &t) in ts.iter().enumerate() {
            let want = ou::conditional_mean(t, &x0, a.as_ref(), &b).unwrap();
            for (x, w) in path.state(k).iter().zip(&want) {
                assert!((x - w).abs() < 1e-12, "t={t}: {x} vs {w}");
            }
        }
        let c = ou::conditional_covariance(1.0, a.as_ref(), zero.as_ref()).unwrap();
        assert_eq!(c.norm_max(), 0.0);
        for res in [
            ou::log_prob(&ts, &path.states, a.as_ref(), &b, zero.as_ref()).map(|_| ()),
            ou::log_prob_grad(&ts, &path.states, a.as_ref(), &b, zero.as_ref()).map(|_| ()),
        ] {
            assert!(
                matches!(
                    res,
                    Err(ThermoError::NotPositiveDefinite {
                        what: "transition covariance",
                        semi: false,
                        ..
                    })
                ),
                "{res:?}"
            );
        }
    }
}

/// Singular D whose noise never reaches one direction (a rotated diagonal
/// pair, so no exact zeros help): the noise-free coordinate `y₂ = (Rᵀ x)₂`
/// relaxes deterministically, the other has the exact one-step moments, and the
/// log density is a typed error (the Cholesky of the rounded transition
/// covariance might otherwise succeed on round-off and give a meaningless value).
#[test]
fn uncontrollable_singular_diffusion_samples_and_refuses_log_prob() {
    let theta = 0.7;
    let a = rot_diag(theta, 1.0, 2.0);
    let d = rot_diag(theta, 1.5, 0.0);
    let r = rotation(theta);
    let b = [0.3, -0.4];
    let x0 = [1.0, 2.0];
    let h = 0.5;
    let n_samples = 4000;
    let mean = ou::conditional_mean(h, &x0, a.as_ref(), &b).unwrap();
    // Var of y₁ = (Rᵀ(x − b))₁ after h: 1.5 (1 − e^{−2h}) / 2.
    let var1 = 1.5 * (1.0 - (-2.0 * h).exp()) / 2.0;
    let y = |x: &[f64], k: usize| r[(0, k)] * (x[0] - b[0]) + r[(1, k)] * (x[1] - b[1]);
    let ym = [y(&mean, 0), y(&mean, 1)];
    for seed in 0..3u64 {
        let mut p = OuProcess::new(a.as_ref(), &b, d.as_ref()).unwrap();
        let mut rng = chain_rng(seed, 2);
        let (mut s1, mut s2) = (0.0, 0.0);
        for _ in 0..n_samples {
            let path = p.sample(&[0.0, h], &x0, &mut rng).unwrap();
            let x = path.state(1);
            assert!(x.iter().all(|v| v.is_finite()));
            // The noise-free coordinate is exactly on its deterministic path.
            assert!((y(x, 1) - ym[1]).abs() < 1e-12, "{} vs {}", y(x, 1), ym[1]);
            let e = y(x, 0) - ym[0];
            s1 += e;
            s2 += e * e;
        }
        let nf = n_samples as f64;
        // Mean: SE sqrt(var1 / N); variance: SE var1 sqrt(2 / N). 4.5 SE bounds
        // (two-sided normal tail 7e-6 per check).
        let mean_err = s1 / nf;
        assert!(
            mean_err.abs() < 4.5 * (var1 / nf).sqrt(),
            "seed {seed}: mean {mean_err}"
        );
        let v = s2 / nf;
        assert!(
            (v - var1).abs() < 4.5 * var1 * (2.0 / nf).sqrt(),
            "seed {seed}: var {v} vs {var1}"
        );
    }
    let ts = [0.0, 0.05, 0.5, 2.0];
    let path = ou::sample(&ts, &x0, a.as_ref(), &b, d.as_ref(), &mut chain_rng(9, 0)).unwrap();
    let p = OuProcess::new(a.as_ref(), &b, d.as_ref()).unwrap();
    assert!(matches!(
        p.check_density(),
        Err(ThermoError::NotPositiveDefinite { .. })
    ));
    for res in [
        ou::log_prob(&ts, &path.states, a.as_ref(), &b, d.as_ref()).map(|_| ()),
        ou::log_prob_grad(&ts, &path.states, a.as_ref(), &b, d.as_ref()).map(|_| ()),
    ] {
        assert!(
            matches!(res, Err(ThermoError::NotPositiveDefinite { .. })),
            "{res:?}"
        );
    }
}

/// Singular D whose noise reaches every direction through the drift
/// (`D = diag(0, 2)`, `A` coupling the coordinates): every transition covariance
/// is definite, so the log density is well defined. It matches the Gaussian
/// density written out from `conditional_mean` / `conditional_covariance` (2×2
/// inverse and determinant by hand), and its gradient matches central differences.
#[test]
fn controllable_singular_diffusion_has_a_log_density_and_gradient() {
    let a = m(&[&[1.0, -1.0], &[0.3, 1.2]]);
    let d = m(&[&[0.0, 0.0], &[0.0, 2.0]]);
    let b = [0.2, -0.1];
    let ts = [0.0, 0.05, 0.3, 1.5, 1.55, 4.0];
    let path = ou::sample(
        &ts,
        &[1.0, 0.0],
        a.as_ref(),
        &b,
        d.as_ref(),
        &mut chain_rng(4, 0),
    )
    .unwrap();
    let xs = &path.states;
    let lp = ou::log_prob(&ts, xs, a.as_ref(), &b, d.as_ref()).unwrap();
    let mut want = 0.0;
    for k in 0..ts.len() - 1 {
        let h = ts[k + 1] - ts[k];
        let mu = ou::conditional_mean(h, path.state(k), a.as_ref(), &b).unwrap();
        let q = ou::conditional_covariance(h, a.as_ref(), d.as_ref()).unwrap();
        let det = q[(0, 0)] * q[(1, 1)] - q[(0, 1)] * q[(1, 0)];
        assert!(det > 0.0, "h={h}: det {det}");
        let r = [path.state(k + 1)[0] - mu[0], path.state(k + 1)[1] - mu[1]];
        let quad = (q[(1, 1)] * r[0] * r[0] - 2.0 * q[(0, 1)] * r[0] * r[1]
            + q[(0, 0)] * r[1] * r[1])
            / det;
        want += -0.5 * quad - 0.5 * det.ln() - (2.0 * std::f64::consts::PI).ln();
    }
    assert!(
        (lp - want).abs() < 1e-8 * (1.0 + want.abs()),
        "{lp} vs {want}"
    );
    let g = ou::log_prob_grad(&ts, xs, a.as_ref(), &b, d.as_ref()).unwrap();
    assert_eq!(g.log_prob, lp);
    let eps = 1e-6;
    for i in 0..2 {
        for j in 0..2 {
            let mut ap = a.clone();
            ap[(i, j)] += eps;
            let mut am = a.clone();
            am[(i, j)] -= eps;
            let fd = (ou::log_prob(&ts, xs, ap.as_ref(), &b, d.as_ref()).unwrap()
                - ou::log_prob(&ts, xs, am.as_ref(), &b, d.as_ref()).unwrap())
                / (2.0 * eps);
            assert!(
                (fd - g.d_a[(i, j)]).abs() < 1e-4 * (1.0 + fd.abs()),
                "dA[{i},{j}] {fd} vs {}",
                g.d_a[(i, j)]
            );
        }
    }
    // The derivative along D: only the noisy coordinate can be perturbed both ways
    // and stay positive semi-definite.
    let mut dp = d.clone();
    dp[(1, 1)] += eps;
    let mut dm = d.clone();
    dm[(1, 1)] -= eps;
    let fd = (ou::log_prob(&ts, xs, a.as_ref(), &b, dp.as_ref()).unwrap()
        - ou::log_prob(&ts, xs, a.as_ref(), &b, dm.as_ref()).unwrap())
        / (2.0 * eps);
    assert!(
        (fd - g.d_d[(1, 1)]).abs() < 1e-4 * (1.0 + fd.abs()),
        "dD11 {fd} vs {}",
        g.d_d[(1, 1)]
    );
}
