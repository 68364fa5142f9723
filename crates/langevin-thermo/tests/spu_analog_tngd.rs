//! Statistical and reference tests of the SPU model, the analog samplers and TNGD.

use faer::Mat;
use langevin_core::rng::chain_rng;
use langevin_thermo::analog::{
    self, CircuitConfig, GaussianProblem, LinearCircuit, LogisticCircuit, LogisticProblem,
    Nonlinearity,
};
use langevin_thermo::spu::{self, Spu, SpuConfig, SpuTask};
use langevin_thermo::tngd::{self, Dataset, Method, Optimizer, OuConfig, TrainConfig};

/// Ideal components: the ADC readings' covariance equals κ₀ R C⁻¹ within
/// Monte Carlo error (thinned to near-independent samples), for 3 seeds.
#[test]
fn ideal_spu_voltage_covariance_is_kappa_r_c_inverse() {
    let m = spu::random_dd_matrix(4, 5);
    let dev = Spu::program(&SpuConfig::ideal(), &m).unwrap();
    let want = dev.nominal_voltage_covariance().unwrap();
    for seed in 0..3 {
        let run = dev.run(0.2, 1e-4, &mut chain_rng(seed, 0)).unwrap();
        let thin: Vec<Vec<f64>> = run.voltages.iter().step_by(50).cloned().collect();
        let n = thin.len() as f64;
        let cov = spu::sample_covariance(&thin);
        for i in 0..4 {
            for j in 0..4 {
                let sd = ((want[(i, i)] * want[(j, j)] + want[(i, j)].powi(2)) / n).sqrt();
                assert!(
                    (cov[(i, j)] - want[(i, j)]).abs() < 4.5 * sd,
                    "seed {seed} ({i},{j}): {} vs {} (sd {sd})",
                    cov[(i, j)],
                    want[(i, j)]
                );
            }
        }
    }
}

/// Error falls with run time for an ideal device, and mismatch + quantisation
/// leave a floor that the long-run error does not go below by much.
#[test]
fn spu_error_decreases_with_time_and_nonidealities_give_a_floor() {
    let a = spu::random_dd_matrix(4, 1);
    let times = [1e-3, 1e-2, 1e-1];
    let ideal = spu::error_vs_time(
        &SpuConfig::ideal(),
        SpuTask::Invert,
        &a,
        &times,
        1e-4,
        3,
        "ideal",
    )
    .unwrap();
    assert!(ideal.floor < 1e-8);
    assert!(
        ideal.mean_error[2] < 0.5 * ideal.mean_error[0],
        "{:?}",
        ideal.mean_error
    );
    let bad = SpuConfig {
        tolerance_pct: 10.0,
        bank_bits: Some(3),
        adc_bits: Some(6),
        ..SpuConfig::default()
    };
    let c = spu::error_vs_time(&bad, SpuTask::Sample, &a, &times, 1e-4, 3, "bad").unwrap();
    assert!(c.floor > 0.02, "floor {}", c.floor);
    assert!(
        c.mean_error[2] > 0.5 * c.floor,
        "{:?} floor {}",
        c.mean_error,
        c.floor
    );
    assert!(c.energy_joules > 0.0 && c.power_watts > 0.0);
}

#[test]
fn spu_rejects_bad_input() {
    let m = spu::random_dd_matrix(4, 1);
    assert!(Spu::program(
        &SpuConfig {
            resistance: -1.0,
            ..SpuConfig::default()
        },
        &m
    )
    .is_err());
    let asym = Mat::from_fn(2, 2, |i, j| [[1.0, 0.2], [0.1, 1.0]][i][j]);
    assert!(Spu::program(&SpuConfig::default(), &asym).is_err());
    let dev = Spu::program(&SpuConfig::default(), &m).unwrap();
    assert!(dev.run(-1.0, 0.0, &mut chain_rng(0, 0)).is_err());
}

/// Gaussian-Gaussian circuit: exact-transition samples at t = 15 τ match the
/// exact posterior mean and covariance within Monte Carlo error (3 seeds).
#[test]
fn linear_circuit_samples_match_exact_posterior() {
    let post = GaussianProblem::blur_family(4, 2).unwrap();
    let circ = LinearCircuit::realise(&post, &CircuitConfig::default()).unwrap();
    let cov = faer::linalg::solvers::DenseSolveCore::inverse(
        &post.precision.llt(faer::Side::Lower).unwrap(),
    );
    for seed in 0..3 {
        let draws = circ
            .sample(&[0.0; 4], 0.5, 30, 3000, &mut chain_rng(seed, 3))
            .unwrap();
        let n = draws.len() as f64;
        let sc = spu::sample_covariance(&draws);
        for i in 0..4 {
            let mean: f64 = draws.iter().map(|d| d[i]).sum::<f64>() / n;
            assert!(
                (mean - post.mean[i]).abs() < 4.5 * (cov[(i, i)] / n).sqrt(),
                "seed {seed} mean {i}"
            );
            for j in 0..4 {
                let sd = ((cov[(i, i)] * cov[(j, j)] + cov[(i, j)].powi(2)) / n).sqrt();
                assert!(
                    (sc[(i, j)] - cov[(i, j)]).abs() < 4.5 * sd,
                    "seed {seed} cov ({i},{j})"
                );
            }
        }
    }
}

/// Time to a KL threshold grows like ln d for the bounded-spectrum family.
#[test]
fn gaussian_time_to_threshold_grows_logarithmically() {
    let rows =
        analog::gaussian_scaling(&[4, 16, 64, 256], 0.05, &CircuitConfig::default(), 0, 0).unwrap();
    let t: Vec<f64> = rows.iter().map(|r| r.t_ideal_tau).collect();
    for w in t.windows(2) {
        let inc = w[1] - w[0];
        // each 4x in d adds about ln(4)/(2 λ_min) ≈ 0.69 τ; never multiplies the time
        assert!(inc > 0.05 && inc < 1.5, "{t:?}");
    }
    assert!(t[3] < 4.0 * t[0], "{t:?}");
    for r in &rows {
        assert!(r.lambda_min > 0.99 && r.lambda_max < 17.01);
    }
}

/// Logistic circuit with ideal sigmoid and components: ensemble moments match
/// a long MALA run within MC error plus a small Euler-Maruyama bias.
#[test]
fn logistic_circuit_matches_mala_reference() {
    let p = LogisticProblem::synthetic(3, 4).unwrap();
    let reference = analog::mala(&p, 60_000, 5_000, 1).unwrap();
    assert!(reference.acceptance > 0.3 && reference.acceptance < 0.9);
    let circ =
        LogisticCircuit::realise(&p, Nonlinearity::Ideal, &CircuitConfig::default()).unwrap();
    let chains = 2000;
    let path = circ
        .simulate(0.01, 800, chains, 800, &mut chain_rng(2, 0))
        .unwrap();
    let last = &path.last().unwrap().1;
    for j in 0..3 {
        let sd = reference.var[j].sqrt();
        assert!(
            (last.mean[j] - reference.mean[j]).abs()
                < 4.5 * sd / (chains as f64).sqrt() + 0.03 * sd,
            "mean {j}"
        );
        assert!(
            (last.var[j] / reference.var[j] - 1.0).abs()
                < 4.5 * (2.0 / chains as f64).sqrt() + 0.05,
            "var {j}"
        );
    }
    // the MOS pair's distorted sigmoid shifts the stationary law measurably less than 1 sd.
    let mos = LogisticCircuit::realise(&p, Nonlinearity::MosSquareLaw, &CircuitConfig::default())
        .unwrap();
    let pm = mos
        .simulate(0.01, 800, 500, 800, &mut chain_rng(3, 0))
        .unwrap();
    let kl = analog::marginal_kl(&pm.last().unwrap().1, &reference);
    assert!(kl.is_finite() && kl < 1.0, "{kl}");
}

fn blobs(n: usize, seed: u64) -> Dataset {
    let mut rng = chain_rng(seed, 0);
    let mut x = vec![0.0; n * 4];
    langevin_core::rng::fill_standard_normal(&mut rng, &mut x);
    let y: Vec<usize> = (0..n).map(|i| i % 3).collect();
    for i in 0..n {
        x[i * 4 + y[i]] += 2.5;
    }
    Dataset::new(x, y, 4, 3).unwrap()
}

/// TNGD with long analog time equals NGD; small κ₀ does not hurt; all methods learn.
#[test]
fn tngd_learns_and_approaches_ngd() {
    let data = blobs(300, 1);
    let (tr, te) = data.split(0.3, 0).unwrap();
    let base = TrainConfig {
        hidden: 6,
        batch: 24,
        iters: 60,
        eval_every: 20,
        damping: 0.1,
        optimizer: Optimizer::Sgd { lr: 0.3 },
        ..Default::default()
    };
    let run = |m: Method| {
        tngd::train(
            &tr,
            &te,
            &TrainConfig {
                method: m,
                ..base.clone()
            },
        )
        .unwrap()
    };
    let ngd = run(Method::Ngd);
    let t50 = run(Method::Tngd(OuConfig {
        time: 50.0,
        ..Default::default()
    }));
    let t1 = run(Method::Tngd(OuConfig {
        time: 1.0,
        ..Default::default()
    }));
    let noisy = run(Method::Tngd(OuConfig {
        time: 50.0,
        kappa: 1e-4,
        ..Default::default()
    }));
    let l = |r: &tngd::TrainResult| r.trace.last().unwrap().train_loss;
    let dist = |a: &tngd::TrainResult, b: &tngd::TrainResult| {
        a.params
            .iter()
            .zip(&b.params)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt()
            / b.params.iter().map(|y| y * y).sum::<f64>().sqrt()
    };
    assert!(
        dist(&t50, &ngd) < dist(&t1, &ngd),
        "{} vs {}",
        dist(&t50, &ngd),
        dist(&t1, &ngd)
    );
    assert!(l(&ngd) < 0.5 * ngd.trace[0].train_loss);
    assert!(
        (l(&noisy) - l(&t50)).abs() < 0.1 * l(&t50) + 0.02,
        "{} vs {}",
        l(&noisy),
        l(&t50)
    );
    assert!(ngd.trace.last().unwrap().test_accuracy > 0.8);
}

/// The bundled digits (if present): TNGD runs and beats chance quickly.
#[test]
fn digits_tngd_smoke() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/digits.csv");
    if !path.exists() {
        eprintln!("skipping: {} not found", path.display());
        return;
    }
    let data = Dataset::from_csv(&path, 1.0 / 16.0).unwrap();
    assert_eq!((data.n, data.d, data.k), (1797, 64, 10));
    let (tr, te) = data.split(0.2, 0).unwrap();
    let cfg = TrainConfig {
        hidden: 8,
        batch: 32,
        iters: 20,
        eval_every: 20,
        method: Method::Tngd(OuConfig {
            time: 5.0,
            ..Default::default()
        }),
        optimizer: Optimizer::Sgd { lr: 0.2 },
        ..Default::default()
    };
    let r = tngd::train(&tr, &te, &cfg).unwrap();
    assert!(r.trace.last().unwrap().test_accuracy > 0.3);
}

/// Last-layer classifier on the simulated (non-ideal) SPU: predictive close to the exact Laplace one.
#[test]
fn spu_classifier_predictive_matches_exact_laplace() {
    let r = spu::classifier_demo(&SpuConfig::default(), 0.02, 0).unwrap();
    assert_eq!(r.n_weights, 8);
    assert!(r.test_accuracy_spu > 0.75, "{}", r.test_accuracy_spu);
    assert!(r.max_abs_prob_diff < 0.1, "{}", r.max_abs_prob_diff);
    assert!((r.test_nll_spu - r.test_nll_exact).abs() < 0.05);
    assert!(r.cov_rel_error < 0.2, "{}", r.cov_rel_error);
}

/// The paper's scaling claims for the Gaussian family (bounded posterior spectrum,
/// bounded crossbar row sums): time to a KL threshold `t(d) = a + b ln d` and energy
/// `E(d) = P(d) t(d) τ` with power `P(d) ∝ d`, so `E = Θ(d ln d)`.
///
/// Why these tolerances: for the ideal circuit from θ = 0 the KL is a sum over the
/// posterior's eigenmodes of terms decaying like `e^{-2λ t}`, with `λ ∈ [1, 17]` for
/// every `d`, so `t(d)` is the solution of `Σ_i c_i e^{-2 λ_i t} = threshold` with `d`
/// terms of bounded size: `t = ln(d c̄ / threshold) / (2 λ_eff)`, a line in `ln d` up to
/// the variation of `c̄` and `λ_eff` with `d`. That variation is large below d ≈ 64
/// (measured t = 0.87, 1.46, 1.89, 2.33 τ at d = 16, 64, 256, 1024: the first step is
/// steeper) and under 1% from 64 on, where the spectrum's density has converged. A
/// least-squares line through d = 64…1024 must fit every point within 3% with a positive
/// slope; the power per integrator must be constant within 5% (cell power plus row sums
/// that do not grow with `d`); `E / (d ln d)` may drift by at most 1.3x over the 16-fold
/// range of `d` (it tends to `b (P/d) τ`), while `E / d` must grow by more than 1.3x
/// (measured 1.6x: it grows like `t(d)`), which separates `d ln d` from `d`; `d²` would
/// move `E / (d ln d)` by 11x.
#[test]
fn gaussian_energy_grows_like_d_ln_d_and_time_like_ln_d() {
    let dims = [64usize, 128, 256, 512, 1024];
    let rows = analog::gaussian_scaling(&dims, 0.05, &CircuitConfig::default(), 0, 0).unwrap();
    let x: Vec<f64> = dims.iter().map(|&d| (d as f64).ln()).collect();
    let t: Vec<f64> = rows.iter().map(|r| r.t_ideal_tau).collect();
    let n = x.len() as f64;
    let (mx, mt) = (x.iter().sum::<f64>() / n, t.iter().sum::<f64>() / n);
    let b = x
        .iter()
        .zip(&t)
        .map(|(x, t)| (x - mx) * (t - mt))
        .sum::<f64>()
        / x.iter().map(|x| (x - mx).powi(2)).sum::<f64>();
    let a = mt - b * mx;
    assert!(b > 0.0, "time must grow with d: {t:?}");
    for (xi, ti) in x.iter().zip(&t) {
        assert!(
            ((a + b * xi) / ti - 1.0).abs() < 0.03,
            "t(d) is not a + b ln d: t {t:?}, fit a {a} b {b}"
        );
    }
    let per_cell: Vec<f64> = rows.iter().map(|r| r.power_watts / r.d as f64).collect();
    for p in &per_cell {
        assert!(
            (p / per_cell[0] - 1.0).abs() < 0.05,
            "power per cell {per_cell:?}"
        );
    }
    let e_dlnd: Vec<f64> = rows
        .iter()
        .map(|r| r.energy_joules / (r.d as f64 * (r.d as f64).ln()))
        .collect();
    let e_d: Vec<f64> = rows.iter().map(|r| r.energy_joules / r.d as f64).collect();
    let spread = |v: &[f64]| {
        v.iter().cloned().fold(0.0, f64::max) / v.iter().cloned().fold(f64::INFINITY, f64::min)
    };
    assert!(spread(&e_dlnd) < 1.3, "E/(d ln d) {e_dlnd:?}");
    // Not Θ(d): E/d keeps growing (by the factor t(1024)/t(64)).
    assert!(e_d.windows(2).all(|w| w[1] > w[0]), "E/d {e_d:?}");
    assert!(e_d[e_d.len() - 1] / e_d[0] > 1.3, "E/d {e_d:?}");
}

/// One logistic-circuit trajectory per chain (`LogisticCircuit::trajectory`, what
/// `fit --method analog` reads out): 400 independent trajectories from θ = 0, each read
/// once after 8 τ (the slowest relaxation time of this posterior is below 1 τ), against a
/// long MALA run. Tolerances as `logistic_circuit_matches_mala_reference`: 4.5 Monte
/// Carlo standard errors plus the Euler-Maruyama bias at h = 0.01 τ (3% of an sd, 5% of
/// a variance). Three seeds.
#[test]
fn logistic_trajectories_match_mala() {
    let p = LogisticProblem::synthetic(3, 4).unwrap();
    let reference = analog::mala(&p, 60_000, 5_000, 1).unwrap();
    let circ =
        LogisticCircuit::realise(&p, Nonlinearity::Ideal, &CircuitConfig::default()).unwrap();
    let chains = 400;
    for seed in 0..3 {
        let mut rng = chain_rng(seed, 9);
        let finals: Vec<Vec<f64>> = (0..chains)
            .map(|_| {
                let t = circ
                    .trajectory(&[0.0; 3], 0.01, 700, 100, 1, &mut rng)
                    .unwrap();
                assert_eq!(t.len(), 1);
                t[0].clone()
            })
            .collect();
        for j in 0..3 {
            let n = chains as f64;
            let m = finals.iter().map(|f| f[j]).sum::<f64>() / n;
            let v = finals.iter().map(|f| (f[j] - m).powi(2)).sum::<f64>() / (n - 1.0);
            let sd = reference.var[j].sqrt();
            assert!(
                (m - reference.mean[j]).abs() < 4.5 * sd / n.sqrt() + 0.03 * sd,
                "seed {seed} mean {j}"
            );
            assert!(
                (v / reference.var[j] - 1.0).abs() < 4.5 * (2.0 / n).sqrt() + 0.05,
                "seed {seed} var {j}"
            );
        }
    }
    // Read-outs every `thin` steps after `burn`, and bad arguments refused.
    let t = circ
        .trajectory(&[0.0; 3], 0.01, 10, 5, 4, &mut chain_rng(0, 0))
        .unwrap();
    assert_eq!(t.len(), 4);
    assert!(circ
        .trajectory(&[0.0; 2], 0.01, 10, 5, 4, &mut chain_rng(0, 0))
        .is_err());
    assert!(circ
        .trajectory(&[0.0; 3], 0.0, 10, 5, 4, &mut chain_rng(0, 0))
        .is_err());
}
