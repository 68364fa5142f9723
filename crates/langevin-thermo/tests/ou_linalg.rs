//! Exact OU simulation and thermodynamic linear algebra: reference values,
//! statistical checks with Monte Carlo tolerances, and error handling.

use faer::linalg::solvers::DenseSolveCore;
use faer::prelude::*;
use faer::{Mat, MatRef, Side};
use langevin_core::rng::{chain_rng, fill_standard_normal};
use langevin_thermo::error::ThermoError;
use langevin_thermo::linalg::{self, ThermoConfig};
use langevin_thermo::ou::{self, OuProcess};
use rand::Rng;

fn m(rows: &[&[f64]]) -> Mat<f64> {
    Mat::from_fn(rows.len(), rows[0].len(), |i, j| rows[i][j])
}

fn max_abs_diff(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> f64 {
    let mut d = 0.0f64;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            d = d.max((a[(i, j)] - b[(i, j)]).abs());
        }
    }
    d
}

fn mul(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    a * b
}

fn random_mat(n: usize, seed: u64, scale: f64) -> Mat<f64> {
    let mut rng = chain_rng(seed, 0);
    Mat::from_fn(n, n, |_, _| scale * (2.0 * rng.random::<f64>() - 1.0))
}

/// A random non-normal drift with eigenvalues of positive real part: upper
/// triangular part strong, plus a diagonal shift.
fn nonnormal_drift(n: usize, seed: u64) -> Mat<f64> {
    let r = random_mat(n, seed, 1.0);
    Mat::from_fn(n, n, |i, j| {
        if i == j {
            1.0 + i as f64 * 0.5
        } else if j > i {
            3.0 * r[(i, j)]
        } else {
            0.2 * r[(i, j)]
        }
    })
}

#[test]
fn stationary_covariance_reference_values() {
    let d = m(&[&[2.0, 0.0], &[0.0, 2.0]]);
    let s = ou::stationary_covariance(m(&[&[3.0, 2.5], &[2.0, 4.0]]).as_ref(), d.as_ref()).unwrap();
    let want = m(&[&[0.5969, -0.3163], &[-0.3163, 0.4082]]);
    assert!(max_abs_diff(s.as_ref(), want.as_ref()) < 1e-4, "{s:?}");
    let s = ou::stationary_covariance(m(&[&[1.0, 5.0], &[0.0, 2.0]]).as_ref(), d.as_ref()).unwrap();
    let want = m(&[&[5.1667, -0.8333], &[-0.8333, 0.5]]);
    assert!(max_abs_diff(s.as_ref(), want.as_ref()) < 1e-4, "{s:?}");
}

#[test]
fn lyapunov_residual_small_for_nonnormal_drift() {
    for (n, seed) in [(5, 1), (12, 2), (40, 3)] {
        let a = nonnormal_drift(n, seed);
        let g = random_mat(n, seed + 100, 1.0);
        let dm = mul(g.as_ref(), g.transpose()); // PSD
        let s = ou::solve_lyapunov(a.as_ref(), dm.as_ref()).unwrap();
        let r = mul(a.as_ref(), s.as_ref()) + mul(s.as_ref(), a.transpose()) - &dm;
        let rel = r.norm_max() / (a.norm_max() * s.norm_max());
        assert!(rel < 1e-12, "n={n}: relative residual {rel:e}");
    }
    // A defective (Jordan block) drift.
    let a = m(&[&[1.0, 1.0], &[0.0, 1.0]]);
    let d = Mat::<f64>::identity(2, 2);
    let s = ou::solve_lyapunov(a.as_ref(), d.as_ref()).unwrap();
    let r = mul(a.as_ref(), s.as_ref()) + mul(s.as_ref(), a.transpose()) - &d;
    assert!(r.norm_max() < 1e-13);
}

#[test]
fn expm_matches_eigendecomposition_for_symmetric() {
    for (n, scale, seed) in [(4, 0.3, 1u64), (8, 3.0, 2), (16, 20.0, 3)] {
        let r = random_mat(n, seed, scale);
        let a = Mat::from_fn(n, n, |i, j| r[(i, j)] + r[(j, i)]);
        let e = ou::expm(a.as_ref());
        let evd = a.self_adjoint_eigen(Side::Lower).unwrap();
        let u = evd.U();
        let s = evd.S().column_vector();
        let want = Mat::from_fn(n, n, |i, j| {
            (0..n)
                .map(|k| u[(i, k)] * s[k].exp() * u[(j, k)])
                .sum::<f64>()
        });
        let rel = max_abs_diff(e.as_ref(), want.as_ref()) / want.norm_max();
        assert!(rel < 1e-11, "n={n} scale={scale}: {rel:e}");
    }
}

#[test]
fn expm_matches_taylor_for_small_nonnormal() {
    let a = Mat::from_fn(5, 5, |i, j| nonnormal_drift(5, 9)[(i, j)] * 0.1);
    let mut term = Mat::<f64>::identity(5, 5);
    let mut sum = term.clone();
    for k in 1..40 {
        term = mul(term.as_ref(), a.as_ref()) * Scale(1.0 / k as f64);
        sum += &term;
    }
    let e = ou::expm(a.as_ref());
    assert!(max_abs_diff(e.as_ref(), sum.as_ref()) < 1e-14 * sum.norm_max() * 10.0);
    // exp(A) exp(-A) = I for a larger non-normal matrix (scaling and squaring path).
    let a = nonnormal_drift(6, 4);
    let p = mul(
        ou::expm(a.as_ref()).as_ref(),
        ou::expm((-&a).as_ref()).as_ref(),
    );
    assert!(max_abs_diff(p.as_ref(), Mat::<f64>::identity(6, 6).as_ref()) < 1e-9);
}

/// The transition covariance equals the integral ∫_0^h e^{-As} D e^{-Aᵀs} ds
/// (composite Simpson), also for non-normal A, for small and large steps.
#[test]
fn transition_covariance_matches_quadrature() {
    let a = m(&[&[1.0, 5.0], &[0.0, 2.0]]);
    let d = m(&[&[2.0, 0.0], &[0.0, 2.0]]);
    let p = OuProcess::new(a.as_ref(), &[0.0, 0.0], d.as_ref()).unwrap();
    for h in [0.05, 0.3, 2.0] {
        let q = p.conditional_covariance(h).unwrap();
        let k = 2000;
        let mut acc = Mat::<f64>::zeros(2, 2);
        for i in 0..=k {
            let s = h * i as f64 / k as f64;
            let e = ou::expm((&a * Scale(-s)).as_ref());
            let w = if i == 0 || i == k {
                1.0
            } else if i % 2 == 1 {
                4.0
            } else {
                2.0
            };
            acc += mul(mul(e.as_ref(), d.as_ref()).as_ref(), e.transpose())
                * Scale(w * h / (3.0 * k as f64));
        }
        assert!(
            max_abs_diff(q.as_ref(), acc.as_ref()) < 1e-9,
            "h={h}: {q:?} vs {acc:?}"
        );
    }
}

/// Empirical one-step moments from many independent draws match the formulas,
/// within 5 Monte Carlo standard errors, for a non-normal drift and several seeds.
#[test]
fn transition_moments_match_formula() {
    let a = m(&[&[1.0, 5.0], &[0.0, 2.0]]);
    let b = [0.5, -1.0];
    let d = m(&[&[2.0, 0.0], &[0.0, 2.0]]);
    let x0 = [2.0, 1.0];
    let h = 0.4;
    let mut p = OuProcess::new(a.as_ref(), &b, d.as_ref()).unwrap();
    let mean = p.conditional_mean(&x0, h).unwrap();
    let cov = p.conditional_covariance(h).unwrap();
    let n = 20_000;
    for seed in [1u64, 2, 3] {
        let mut rng = chain_rng(seed, 0);
        let mut xs = Vec::with_capacity(n);
        for _ in 0..n {
            let path = p.sample(&[0.0, h], &x0, &mut rng).unwrap();
            xs.push([path.state(1)[0], path.state(1)[1]]);
        }
        let mut emp_mean = [0.0; 2];
        for x in &xs {
            emp_mean[0] += x[0] / n as f64;
            emp_mean[1] += x[1] / n as f64;
        }
        for i in 0..2 {
            let se = (cov[(i, i)] / n as f64).sqrt();
            assert!(
                (emp_mean[i] - mean[i]).abs() < 5.0 * se,
                "seed {seed} mean {i}"
            );
        }
        for i in 0..2 {
            for j in 0..2 {
                let c: f64 = xs
                    .iter()
                    .map(|x| (x[i] - mean[i]) * (x[j] - mean[j]))
                    .sum::<f64>()
                    / n as f64;
                let se = ((cov[(i, i)] * cov[(j, j)] + cov[(i, j)].powi(2)) / n as f64).sqrt();
                assert!(
                    (c - cov[(i, j)]).abs() < 5.0 * se,
                    "seed {seed} cov ({i},{j}): {c} vs {}",
                    cov[(i, j)]
                );
            }
        }
    }
}

#[test]
fn log_prob_matches_direct_gaussian() {
    let a = nonnormal_drift(3, 5);
    let b = [0.3, -0.2, 1.0];
    let g = random_mat(3, 6, 1.0);
    let d = mul(g.as_ref(), g.transpose()) + Mat::<f64>::identity(3, 3) * Scale(0.1);
    let ts = [0.0, 0.1, 0.35, 0.45, 1.7, 1.8];
    let mut p = OuProcess::new(a.as_ref(), &b, d.as_ref()).unwrap();
    let path = p
        .sample(&ts, &[1.0, 0.0, -1.0], &mut chain_rng(3, 0))
        .unwrap();
    let lp = p.log_prob(&ts, &path.states).unwrap();
    let mut want = 0.0;
    for k in 0..ts.len() - 1 {
        let h = ts[k + 1] - ts[k];
        let mu = p.conditional_mean(path.state(k), h).unwrap();
        let c = p.conditional_covariance(h).unwrap();
        let cinv = c.partial_piv_lu().inverse();
        let r: Vec<f64> = (0..3).map(|i| path.state(k + 1)[i] - mu[i]).collect();
        let mut quad = 0.0;
        for i in 0..3 {
            for j in 0..3 {
                quad += r[i] * cinv[(i, j)] * r[j];
            }
        }
        let det = c.determinant();
        want += -0.5 * quad - 0.5 * det.ln() - 1.5 * (2.0 * std::f64::consts::PI).ln();
    }
    assert!(
        (lp - want).abs() < 1e-9 * want.abs().max(1.0),
        "{lp} vs {want}"
    );
    // Free-function form agrees.
    let lp2 = ou::log_prob(&ts, &path.states, a.as_ref(), &b, d.as_ref()).unwrap();
    assert!((lp - lp2).abs() < 1e-12);
}

/// Per mode with rate a and step h, Euler-Maruyama's stationary variance is
/// (1/a)·2/(2 − ah); the exact sampler has none of that bias.
#[test]
fn euler_maruyama_bias_vs_exact() {
    let rates = [1.0, 2.0];
    let a = m(&[&[rates[0], 0.0], &[0.0, rates[1]]]);
    let d = m(&[&[2.0, 0.0], &[0.0, 2.0]]);
    let h = 0.5;
    let steps = 100_000;
    let ts: Vec<f64> = (0..=steps).map(|k| k as f64 * h).collect();
    for seed in [11u64, 12] {
        let exact = ou::sample(
            &ts,
            &[0.0, 0.0],
            a.as_ref(),
            &[0.0, 0.0],
            d.as_ref(),
            &mut chain_rng(seed, 0),
        )
        .unwrap();
        let em = ou::euler_maruyama(
            &ts,
            &[0.0, 0.0],
            a.as_ref(),
            &[0.0, 0.0],
            d.as_ref(),
            &mut chain_rng(seed, 1),
        )
        .unwrap();
        for (i, &rate) in rates.iter().enumerate() {
            let var = |p: &ou::Path| {
                (1000..p.len()).map(|k| p.state(k)[i].powi(2)).sum::<f64>()
                    / (p.len() - 1000) as f64
            };
            let truth = 1.0 / rate;
            let em_truth = truth * 2.0 / (2.0 - rate * h);
            // Lag-one correlation ρ of the squared AR(1): variance estimate SE ≈
            // v sqrt(2 (1 + ρ²)/(n (1 − ρ²))).
            let se = |v: f64, rho: f64| {
                v * (2.0 * (1.0 + rho * rho) / ((steps - 1000) as f64 * (1.0 - rho * rho))).sqrt()
            };
            let ve = var(&exact);
            let rho_exact = (-rate * h).exp();
            assert!(
                (ve - truth).abs() < 5.0 * se(truth, rho_exact),
                "exact rate {rate}: {ve} vs {truth}"
            );
            let vm = var(&em);
            let rho_em = 1.0 - rate * h;
            assert!(
                (vm - em_truth).abs() < 5.0 * se(em_truth, rho_em),
                "EM rate {rate}: {vm} vs {em_truth}"
            );
            assert!(
                (vm - truth).abs() > 10.0 * se(truth, rho_exact),
                "EM bias not visible"
            );
        }
    }
}

#[test]
fn sampling_is_reproducible_and_grid_cache_is_consistent() {
    let a = nonnormal_drift(4, 7);
    let d = Mat::<f64>::identity(4, 4) * Scale(2.0);
    let b = [0.0; 4];
    let ts: Vec<f64> = (0..=600).map(|k| k as f64 * 0.1).collect();
    let p1 = ou::sample(
        &ts,
        &[1.0; 4],
        a.as_ref(),
        &b,
        d.as_ref(),
        &mut chain_rng(5, 0),
    )
    .unwrap();
    let p2 = ou::sample(
        &ts,
        &[1.0; 4],
        a.as_ref(),
        &b,
        d.as_ref(),
        &mut chain_rng(5, 0),
    )
    .unwrap();
    assert_eq!(p1, p2);
    // Step-by-step sampling (one call per step) gives the same path: same noise order.
    let mut p = OuProcess::new(a.as_ref(), &b, d.as_ref()).unwrap();
    let mut rng = chain_rng(5, 0);
    let mut x = vec![1.0; 4];
    for k in 0..600 {
        let s = p.sample(&ts[k..k + 2], &x, &mut rng).unwrap();
        x = s.state(1).to_vec();
        for (xi, yi) in x.iter().zip(p1.state(k + 1)) {
            assert!((xi - yi).abs() < 1e-9 * (1.0 + xi.abs()));
        }
    }
}

#[test]
fn singular_diffusion_is_sampled() {
    // Noise only on the second coordinate; the first is driven through the coupling.
    let a = m(&[&[1.0, -1.0], &[0.0, 1.0]]);
    let d = m(&[&[0.0, 0.0], &[0.0, 2.0]]);
    let s = ou::stationary_covariance(a.as_ref(), d.as_ref()).unwrap();
    let ts: Vec<f64> = (0..=200).map(|k| k as f64 * 0.2).collect();
    let path = ou::sample(
        &ts,
        &[0.0, 0.0],
        a.as_ref(),
        &[0.0, 0.0],
        d.as_ref(),
        &mut chain_rng(1, 0),
    )
    .unwrap();
    assert!(path.states.iter().all(|v| v.is_finite()));
    assert!(s[(0, 0)] > 0.0);
}

#[test]
fn bad_inputs_give_typed_errors() {
    let a = m(&[&[1.0, 0.0], &[0.0, 1.0]]);
    let d = Mat::<f64>::identity(2, 2);
    let mut rng = chain_rng(0, 0);
    assert!(matches!(
        ou::sample(
            &[0.0, 1.0, 1.0],
            &[0.0, 0.0],
            a.as_ref(),
            &[0.0, 0.0],
            d.as_ref(),
            &mut rng
        ),
        Err(ThermoError::NonIncreasingTimes { index: 2, .. })
    ));
    assert!(matches!(
        ou::sample(
            &[0.0, 1.0],
            &[0.0],
            a.as_ref(),
            &[0.0, 0.0],
            d.as_ref(),
            &mut rng
        ),
        Err(ThermoError::DimensionMismatch { .. })
    ));
    let bad_d = m(&[&[1.0, 0.0], &[0.0, -1.0]]);
    assert!(matches!(
        ou::stationary_covariance(a.as_ref(), bad_d.as_ref()),
        Err(ThermoError::NotPositiveDefinite { .. })
    ));
    let rect = Mat::<f64>::zeros(2, 3);
    assert!(matches!(
        ou::stationary_covariance(rect.as_ref(), d.as_ref()),
        Err(ThermoError::NotSquare { .. })
    ));
    let not_spd = m(&[&[1.0, 2.0], &[2.0, 1.0]]);
    let cfg = ThermoConfig::default();
    assert!(matches!(
        linalg::solve(not_spd.as_ref(), &[1.0, 1.0], &cfg),
        Err(ThermoError::NotPositiveDefinite { .. })
    ));
    let nonsym = m(&[&[1.0, 0.5], &[0.0, 1.0]]);
    assert!(matches!(
        linalg::inv(nonsym.as_ref(), &cfg),
        Err(ThermoError::NotSymmetric { .. })
    ));
}

fn test_matrix(n: usize, seed: u64) -> Mat<f64> {
    linalg::wishart(n, 2 * n, &mut chain_rng(seed, 0)) + Mat::<f64>::identity(n, n) * Scale(0.5)
}

fn cfg(seed: u64) -> ThermoConfig {
    ThermoConfig {
        analog_time: 4000.0,
        sampling_interval: 0.25,
        burn_in: 20.0,
        seed,
        ..Default::default()
    }
}

/// solve: the true error is within a few error estimates, and the error estimate is
/// itself close to the root-mean-square error over seeds.
#[test]
fn thermodynamic_solve_within_error_estimate() {
    let n = 6;
    let a = test_matrix(n, 1);
    let mut rng = chain_rng(2, 0);
    let mut bv = vec![0.0; n];
    fill_standard_normal(&mut rng, &mut bv);
    let exact = a.partial_piv_lu().solve(Mat::from_fn(n, 1, |i, _| bv[i]));
    let mut z2 = 0.0;
    let seeds = [1u64, 2, 3, 4];
    for &seed in &seeds {
        let est = linalg::solve(a.as_ref(), &bv, &cfg(seed)).unwrap();
        let err: f64 = (0..n)
            .map(|i| (est.value[i] - exact[(i, 0)]).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            err < 4.0 * est.error_estimate,
            "seed {seed}: err {err} vs est {}",
            est.error_estimate
        );
        for i in 0..n {
            z2 += ((est.value[i] - exact[(i, 0)]) / est.std_error[i]).powi(2);
        }
    }
    // Mean squared z-score ≈ 1 (batch-means SE with 20 batches is noisy: loose band).
    let mz = z2 / (seeds.len() * n) as f64;
    assert!(mz > 0.3 && mz < 3.0, "mean z^2 = {mz}");
}

#[test]
fn thermodynamic_inv_logdet_expm_within_error_estimate() {
    let n = 4;
    let a = test_matrix(n, 3);
    let exact_inv = a.partial_piv_lu().inverse();
    let exact_logdet = a.determinant().ln();
    let exact_expneg = ou::expm((-&a).as_ref());
    let exact_exp = ou::expm(a.as_ref());
    for seed in [1u64, 2, 3] {
        let est = linalg::inv(a.as_ref(), &cfg(seed)).unwrap();
        let err = (&est.value - &exact_inv).norm_l2();
        assert!(
            err < 4.0 * est.error_estimate,
            "inv seed {seed}: {err} vs {}",
            est.error_estimate
        );
        let ld = linalg::logdet(a.as_ref(), &cfg(seed)).unwrap();
        assert!(
            (ld.value - exact_logdet).abs() < 4.0 * ld.error_estimate,
            "logdet seed {seed}: {} vs {exact_logdet} (se {})",
            ld.value,
            ld.error_estimate
        );
        let det = linalg::det(a.as_ref(), &cfg(seed)).unwrap();
        assert!((det.value - exact_logdet.exp()).abs() < 4.0 * det.error_estimate + 1e-12);
        let en = linalg::expnegm(a.as_ref(), &cfg(seed)).unwrap();
        let err = (&en.value - &exact_expneg).norm_l2();
        assert!(
            err < 4.0 * en.error_estimate,
            "expnegm seed {seed}: {err} vs {}",
            en.error_estimate
        );
    }
    let small = Mat::from_fn(2, 2, |i, j| [[0.5, 0.2], [0.2, 0.3]][i][j]);
    let es = linalg::expm(small.as_ref(), &cfg(9)).unwrap();
    let want = ou::expm(small.as_ref());
    let err = (&es.value - &want).norm_l2();
    assert!(
        err < 4.0 * es.error_estimate,
        "expm: {err} vs {}",
        es.error_estimate
    );
    let _ = exact_exp;
}

#[test]
fn thermodynamic_error_shrinks_with_analog_time() {
    let n = 5;
    let a = test_matrix(n, 4);
    let bv = vec![1.0; n];
    let exact = a.partial_piv_lu().solve(Mat::from_fn(n, 1, |i, _| bv[i]));
    let rms = |t: f64| {
        let mut s = 0.0;
        for seed in 0..4 {
            let c = ThermoConfig {
                analog_time: t,
                seed,
                ..cfg(0)
            };
            let e = linalg::solve(a.as_ref(), &bv, &c).unwrap();
            s += (0..n)
                .map(|i| (e.value[i] - exact[(i, 0)]).powi(2))
                .sum::<f64>();
        }
        (s / 4.0).sqrt()
    };
    let short = rms(200.0);
    let long = rms(12_800.0);
    // Error ∝ 1/√T: a factor 8 expected; require at least 3.
    assert!(short > 3.0 * long, "{short} vs {long}");
}
