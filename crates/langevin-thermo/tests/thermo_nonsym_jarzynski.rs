//! Thermodynamic `expm` / `expnegm` on non-symmetric matrices (thermox accepts `A`
//! with `A + Aᵀ` positive definite) and the Jarzynski log-determinant protocol.

use faer::{Mat, MatRef, Side};
use langevin_core::rng::chain_rng;
use langevin_thermo::error::ThermoError;
use langevin_thermo::linalg::{self, JarzynskiConfig, ThermoConfig};
use langevin_thermo::ou;
use rand::Rng;

/// A non-symmetric matrix with positive definite symmetric part: `S + K` with `S`
/// symmetric positive definite (eigenvalues in about [0.6, 2]) and `K` a random
/// antisymmetric part of comparable size (non-normal in general).
fn nonsym(n: usize, seed: u64) -> Mat<f64> {
    let w = linalg::wishart(n, 3 * n, &mut chain_rng(seed, 0));
    let mut rng = chain_rng(seed, 1);
    let r = Mat::from_fn(n, n, |_, _| 2.0 * rng.random::<f64>() - 1.0);
    Mat::from_fn(n, n, |i, j| {
        w[(i, j)] + if i == j { 0.5 } else { 0.0 } + 0.8 * (r[(i, j)] - r[(j, i)])
    })
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

fn fro(a: MatRef<'_, f64>) -> f64 {
    a.norm_l2()
}

/// `e^{-A}` and `e^{A}` of non-symmetric matrices against the digital `ou::expm`:
/// the Frobenius error is within 4 times the batch-means error estimate on every
/// seed (the estimate is the root-mean-square error norm; exceeding it 4-fold is
/// a ≲1e-3 event per run for d² ≤ 16 roughly normal entries), the estimate is not
/// symmetric, and the mean squared z-score over all entries and seeds is near 1.
#[test]
fn expnegm_and_expm_of_nonsymmetric_matrices_match_digital_expm() {
    let n = 3;
    let mut z2 = 0.0;
    let mut count = 0usize;
    for mseed in [11u64, 12] {
        let a = nonsym(n, mseed);
        // Precondition: non-normal, symmetric part positive definite.
        let sym = Mat::from_fn(n, n, |i, j| 0.5 * (a[(i, j)] + a[(j, i)]));
        assert!(sym.llt(Side::Lower).is_ok());
        let exact = ou::expm((-&a).as_ref());
        assert!((&exact - exact.transpose()).norm_max() > 1e-2);
        for seed in [1u64, 2, 3] {
            let est = linalg::expnegm(a.as_ref(), &cfg(seed)).unwrap();
            let err = fro((&est.value - &exact).as_ref());
            assert!(
                err < 4.0 * est.error_estimate,
                "expnegm matrix {mseed} seed {seed}: err {err} vs {}",
                est.error_estimate
            );
            // The estimate resolves the antisymmetric part of e^{-A}.
            let asym = (&est.value - est.value.transpose()).norm_max();
            let want = (&exact - exact.transpose()).norm_max();
            assert!(
                (asym - want).abs() < 8.0 * est.std_error.norm_max(),
                "{asym} vs {want}"
            );
            for j in 0..n {
                for i in 0..n {
                    z2 += ((est.value[(i, j)] - exact[(i, j)]) / est.std_error[(i, j)]).powi(2);
                    count += 1;
                }
            }
        }
    }
    // 54 z-scores from 20-batch standard errors: mean z² ≈ 19/17 ± 0.3; loose band.
    let mz = z2 / count as f64;
    assert!(mz > 0.3 && mz < 3.0, "mean z^2 = {mz}");

    // e^{A} via the shift c = λ_max((A + Aᵀ)/2) + 1.
    let a = Mat::from_fn(2, 2, |i, j| [[0.4, 0.6], [-0.3, 0.2]][i][j]);
    let want = ou::expm(a.as_ref());
    for seed in [4u64, 5] {
        let es = linalg::expm(a.as_ref(), &cfg(seed)).unwrap();
        let err = fro((&es.value - &want).as_ref());
        assert!(
            err < 4.0 * es.error_estimate,
            "expm seed {seed}: {err} vs {}",
            es.error_estimate
        );
    }
}

/// A matrix whose eigenvalues have positive real part but whose symmetric part is
/// indefinite is refused with a typed error (the protocol's stationary covariance
/// would not be `I`; the noise `A + Aᵀ` is not a covariance).
#[test]
fn expnegm_refuses_indefinite_symmetric_part() {
    let a = Mat::from_fn(2, 2, |i, j| [[1.0, 5.0], [0.0, 1.0]][i][j]);
    assert!(matches!(
        linalg::expnegm(a.as_ref(), &cfg(0)),
        Err(ThermoError::NotPositiveDefinite { .. })
    ));
}

fn spd(n: usize, seed: u64) -> Mat<f64> {
    linalg::wishart(n, 2 * n, &mut chain_rng(seed, 0))
        + Mat::<f64>::identity(n, n) * faer::Scale(0.5)
}

fn exact_logdet(a: MatRef<'_, f64>) -> f64 {
    let llt = a.llt(Side::Lower).unwrap();
    2.0 * (0..a.nrows()).map(|i| llt.L()[(i, i)].ln()).sum::<f64>()
}

/// Target: `log det A` of a 4×4 Wishart-plus-0.5 I matrix (condition number about
/// 10) from 2000 protocol runs (switching time 4, 40 steps). Each of 8 seeds is
/// within 4 delta-method standard errors of the Cholesky value (a 6e-5 two-sided
/// normal event per seed); the mean over seeds is within 4 standard errors of the
/// mean; and the spread of the 8 estimates agrees with the reported standard error:
/// the ratio sd / se lies in [0.3, 2.0] (for 7 degrees of freedom the χ² 0.1% and
/// 99.9% quantiles give [0.27, 1.8] for a correct se).
#[test]
fn jarzynski_logdet_is_unbiased_within_its_standard_error() {
    let n = 4;
    let a = spd(n, 21);
    let exact = exact_logdet(a.as_ref());
    let seeds: Vec<u64> = (1..=8).collect();
    let mut vals = Vec::new();
    let mut ses = Vec::new();
    for &seed in &seeds {
        let cfg = JarzynskiConfig {
            runs: 2000,
            switching_time: 4.0,
            steps: 40,
            seed,
            ..Default::default()
        };
        let e = linalg::logdet_jarzynski(a.as_ref(), &cfg).unwrap();
        assert!(
            (e.value - exact).abs() < 4.0 * e.std_error,
            "seed {seed}: {} vs {exact} (se {})",
            e.value,
            e.std_error
        );
        assert_eq!(e.analog_time, 2000.0 * 9.0);
        assert_eq!(e.readouts, 2000 * 40);
        vals.push(e.value);
        ses.push(e.std_error);
    }
    let k = vals.len() as f64;
    let mean = vals.iter().sum::<f64>() / k;
    let se_mean = ses.iter().sum::<f64>() / k;
    assert!(
        (mean - exact).abs() < 4.0 * se_mean / k.sqrt(),
        "mean {mean} vs {exact}"
    );
    let sd = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (k - 1.0)).sqrt();
    let ratio = sd / se_mean;
    assert!(ratio > 0.3 && ratio < 2.0, "sd {sd} vs se {se_mean}");
}

/// Jarzynski's equality holds for the discrete protocol at any number of steps,
/// even one (an instantaneous quench, i.e. free-energy perturbation): on a 2×2
/// matrix close to the reference the quench estimate agrees with the Cholesky
/// value within 4 standard errors over 4 seeds, and so does a protocol with a
/// non-default reference scale and temperature.
#[test]
fn jarzynski_quench_and_other_reference_are_unbiased() {
    let a = Mat::from_fn(2, 2, |i, j| [[1.3, 0.2], [0.2, 0.8]][i][j]);
    let exact = exact_logdet(a.as_ref());
    for seed in 0..4u64 {
        for cfg in [
            JarzynskiConfig {
                runs: 4000,
                steps: 1,
                seed,
                ..Default::default()
            },
            JarzynskiConfig {
                runs: 2000,
                steps: 20,
                switching_time: 2.0,
                reference_scale: Some(2.0),
                beta: 3.0,
                seed,
                ..Default::default()
            },
        ] {
            let e = linalg::logdet_jarzynski(a.as_ref(), &cfg).unwrap();
            assert!(
                (e.value - exact).abs() < 4.0 * e.std_error,
                "{cfg:?}: {} vs {exact} (se {})",
                e.value,
                e.std_error
            );
        }
    }
}

#[test]
fn jarzynski_rejects_bad_settings_and_matrices() {
    let a = Mat::<f64>::identity(2, 2);
    for (cfg, field) in [
        (
            JarzynskiConfig {
                runs: 1,
                ..Default::default()
            },
            "runs",
        ),
        (
            JarzynskiConfig {
                steps: 0,
                ..Default::default()
            },
            "steps",
        ),
        (
            JarzynskiConfig {
                switching_time: 0.0,
                ..Default::default()
            },
            "switching_time",
        ),
        (
            JarzynskiConfig {
                equilibration_time: f64::NAN,
                ..Default::default()
            },
            "equilibration_time",
        ),
        (
            JarzynskiConfig {
                reference_scale: Some(-1.0),
                ..Default::default()
            },
            "reference_scale",
        ),
        (
            JarzynskiConfig {
                beta: 0.0,
                ..Default::default()
            },
            "beta",
        ),
    ] {
        match linalg::logdet_jarzynski(a.as_ref(), &cfg) {
            Err(ThermoError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    let indefinite = Mat::from_fn(2, 2, |i, j| [[1.0, 2.0], [2.0, 1.0]][i][j]);
    assert!(matches!(
        linalg::logdet_jarzynski(indefinite.as_ref(), &JarzynskiConfig::default()),
        Err(ThermoError::NotPositiveDefinite { .. })
    ));
}
