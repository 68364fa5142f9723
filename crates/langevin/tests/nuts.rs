//! `langevin::nuts`: NUTS (nuts-rs) on Gaussian targets with known moments.
//!
//! Tolerances: a posterior mean is checked to within 4.5 of its Monte Carlo
//! standard error (`mcse_mean` of `Samples::summary()`, from the bulk ESS),
//! a posterior sd to within 4.5 `mcse_sd`, plus 1e-9 for rounding. With a
//! dozen checks per test a correct sampler fails one with probability about
//! 1e-4 (normal tails); a wrong target (a missed factor sqrt(T), a dropped
//! correlation) is off by many standard errors at these run lengths. The
//! ESS itself is checked to be large enough for the MCSE to be meaningful.

use std::sync::atomic::{AtomicU64, Ordering};

use langevin::nuts::{sample, MassMatrix, NutsConfig, NutsMonitor, NutsOutput, Stop};
use langevin::{Error, FnDensity, ParamLayout, Params};
use langevin_core::LogDensity;

/// `N(mean, cov)` for a 2 x 2 or diagonal covariance, as a density on `()`.
struct Gauss {
    mean: Vec<f64>,
    /// Row-major precision matrix.
    precision: Vec<f64>,
}

impl Gauss {
    fn correlated_2d() -> (Self, Vec<f64>) {
        // sds 1 and 2, correlation 0.9.
        let (s1, s2, rho) = (1.0f64, 2.0f64, 0.9f64);
        let det = s1 * s1 * s2 * s2 * (1.0 - rho * rho);
        let c12 = rho * s1 * s2;
        let precision = vec![s2 * s2 / det, -c12 / det, -c12 / det, s1 * s1 / det];
        (
            Self {
                mean: vec![1.0, -2.0],
                precision,
            },
            vec![s1, s2],
        )
    }

    fn scaled_10d() -> (Self, Vec<f64>) {
        // sds from 0.01 to 100, a factor 10^4 between the extremes.
        let sds: Vec<f64> = (0..10)
            .map(|i| 10f64.powf(-2.0 + 4.0 * i as f64 / 9.0))
            .collect();
        let d = sds.len();
        let mut precision = vec![0.0; d * d];
        for i in 0..d {
            precision[i * d + i] = 1.0 / (sds[i] * sds[i]);
        }
        (
            Self {
                mean: (0..d).map(|i| i as f64 - 4.5).collect(),
                precision,
            },
            sds,
        )
    }
}

impl LogDensity for Gauss {
    type Batch = ();
    type Aux = ();
    fn value_and_grad(&self, p: &Params, _: &(), g: &mut [f64]) -> langevin::Result<(f64, ())> {
        let x = p.values();
        let d = x.len();
        let r: Vec<f64> = x.iter().zip(&self.mean).map(|(a, b)| a - b).collect();
        let mut v = 0.0;
        for i in 0..d {
            let pr: f64 = (0..d).map(|j| self.precision[i * d + j] * r[j]).sum();
            g[i] = -pr;
            v += r[i] * pr;
        }
        Ok((-0.5 * v, ()))
    }
}

fn start(d: usize) -> impl FnMut(usize, &mut langevin::ChainRng) -> langevin::Result<Params> {
    let layout = ParamLayout::new([("x", vec![d])]).unwrap();
    move |k, _| Params::new(layout.clone(), vec![0.5 * k as f64 - 0.7; d])
}

fn run(target: &Gauss, config: &NutsConfig, seed: u64, threads: Option<usize>) -> NutsOutput {
    sample(
        target,
        &(),
        config,
        seed,
        4,
        start(target.mean.len()),
        threads,
        &(),
    )
    .unwrap()
}

/// Check every mean and sd against `mean` and `sd` (see the module docs).
fn check_moments(out: &NutsOutput, mean: &[f64], sd: &[f64], what: &str) {
    let s = out.samples.summary().unwrap();
    for (j, p) in s.iter().enumerate() {
        let m = &p.summary;
        assert!(
            m.ess_bulk > 200.0,
            "{what} {}: bulk ESS {:.0} too small for the MCSE tolerance",
            p.name,
            m.ess_bulk
        );
        let tol_mean = 4.5 * m.mcse_mean + 1e-9;
        let tol_sd = 4.5 * m.mcse_sd + 1e-9;
        assert!(
            (m.mean - mean[j]).abs() < tol_mean,
            "{what} {}: mean {:.5} vs {:.5} (tolerance {tol_mean:.5})",
            p.name,
            m.mean,
            mean[j]
        );
        assert!(
            (m.sd - sd[j]).abs() < tol_sd,
            "{what} {}: sd {:.5} vs {:.5} (tolerance {tol_sd:.5})",
            p.name,
            m.sd,
            sd[j]
        );
    }
}

#[test]
fn correlated_2d_gaussian_moments() {
    let (target, sd) = Gauss::correlated_2d();
    let config = NutsConfig {
        warmup: 500,
        draws: 1000,
        ..Default::default()
    };
    for seed in [1, 2, 3] {
        let out = run(&target, &config, seed, None);
        check_moments(&out, &target.mean, &sd, &format!("seed {seed}"));
        assert!(out.stop.is_none());
        assert_eq!(
            out.divergences.iter().sum::<u64>(),
            0,
            "a Gaussian never diverges"
        );
        assert_eq!(out.samples.min_draws(), 1000);
        // The correlation: the pooled sample correlation within 0.02 of 0.9
        // (its sd is about (1 - rho^2) / sqrt(ESS) < 0.01 at ESS > 400).
        let x0 = out.samples.column_by_chain(0).concat();
        let x1 = out.samples.column_by_chain(1).concat();
        let r = corr(&x0, &x1);
        assert!((r - 0.9).abs() < 0.02, "seed {seed}: correlation {r:.4}");
        // The recorded log density is the density's own value at the draw.
        let tr = &out.samples.chains[0];
        let mut g = [0.0; 2];
        let p = Params::from_vec(tr.draw(7).to_vec());
        let (v, ()) = target.value_and_grad(&p, &(), &mut g).unwrap();
        assert!((tr.log_density()[7] - v).abs() < 1e-9 * (1.0 + v.abs()));
    }
}

#[test]
fn low_rank_mass_matrix_samples_the_correlated_gaussian() {
    let (target, sd) = Gauss::correlated_2d();
    let config = NutsConfig {
        warmup: 500,
        draws: 1000,
        mass: MassMatrix::LowRank,
        ..Default::default()
    };
    for seed in [4, 5] {
        let out = run(&target, &config, seed, None);
        check_moments(&out, &target.mean, &sd, &format!("low-rank seed {seed}"));
    }
}

#[test]
fn badly_scaled_10d_gaussian_moments() {
    let (target, sd) = Gauss::scaled_10d();
    let config = NutsConfig {
        warmup: 1000,
        draws: 1000,
        ..Default::default()
    };
    for seed in [1, 2, 3] {
        let out = run(&target, &config, seed, Some(2));
        check_moments(&out, &target.mean, &sd, &format!("seed {seed}"));
        // The adapted diagonal mass matrix makes the problem isotropic: short
        // trajectories (a depth of 10 would mean the metric was not learnt).
        for (k, d) in out.mean_tree_depth.iter().enumerate() {
            assert!(*d < 5.0, "seed {seed} chain {k}: mean tree depth {d}");
        }
        assert!(out.gradients_per_draw() < 32.0);
        assert!(out.gradient_evaluations.iter().all(|&g| g > 2000));
    }
}

#[test]
fn temperature_scales_the_sds() {
    // exp(log N(mu, S) / T) is N(mu, T S): at T = 0.25 the sds halve.
    let (target, sd) = Gauss::correlated_2d();
    let config = NutsConfig {
        warmup: 500,
        draws: 1000,
        temperature: 0.25,
        ..Default::default()
    };
    let half: Vec<f64> = sd.iter().map(|s| 0.5 * s).collect();
    for seed in [7, 8] {
        let out = run(&target, &config, seed, None);
        check_moments(&out, &target.mean, &half, &format!("T = 0.25, seed {seed}"));
        // The log density recorded is the untempered one.
        let tr = &out.samples.chains[1];
        let mut g = [0.0; 2];
        let p = Params::from_vec(tr.draw(3).to_vec());
        let (v, ()) = target.value_and_grad(&p, &(), &mut g).unwrap();
        assert!((tr.log_density()[3] - v).abs() < 1e-9 * (1.0 + v.abs()));
    }
}

#[test]
fn draws_do_not_depend_on_the_thread_count() {
    let (target, _) = Gauss::scaled_10d();
    let config = NutsConfig {
        warmup: 200,
        draws: 100,
        thin: 3,
        ..Default::default()
    };
    let a = run(&target, &config, 11, Some(1));
    let b = run(&target, &config, 11, Some(3));
    let c = run(&target, &config, 11, None);
    assert_eq!(a.samples.min_draws(), 33);
    for o in [&b, &c] {
        assert_eq!(a.samples, o.samples);
        assert_eq!(a.step_size, o.step_size);
        assert_eq!(a.gradient_evaluations, o.gradient_evaluations);
    }
    let other = run(&target, &config, 12, Some(2));
    assert_ne!(a.samples, other.samples, "another seed gives other draws");
    assert_eq!(a.samples.names[0], "x[0]");
}

/// N(0, 1) in one dimension, NaN for x > 1.5: NUTS sees a recoverable error
/// there (a divergence), never a panic, and samples the truncated normal.
#[test]
fn nan_region_counts_divergences() {
    let d = FnDensity::new(|x: &[f64], _: &(), g: &mut [f64]| {
        if x[0] > 1.5 {
            g[0] = f64::NAN;
            return f64::NAN;
        }
        g[0] = -x[0];
        -0.5 * x[0] * x[0]
    });
    let config = NutsConfig {
        warmup: 300,
        draws: 1000,
        ..Default::default()
    };
    let layout = ParamLayout::vector("x", 1);
    let out = sample(
        &d,
        &(),
        &config,
        3,
        2,
        |_, _| Params::new(layout.clone(), vec![0.3]),
        None,
        &(),
    )
    .unwrap();
    let div: u64 = out.divergences.iter().sum();
    assert!(
        div > 10,
        "{div} divergences: the NaN region was not reached"
    );
    assert!(out.stop.is_none());
    let flagged: usize = out
        .samples
        .chains
        .iter()
        .map(|c| c.diverged().iter().filter(|&&f| f).count())
        .sum();
    assert_eq!(
        flagged as u64, div,
        "thin 1: every divergent draw is kept and flagged"
    );
    let all = out.samples.column_by_chain(0).concat();
    assert!(all.iter().all(|&x| x <= 1.5));
    // Mean of N(0,1) truncated to x <= 1.5: -phi(1.5) / Phi(1.5) = -0.1388;
    // 0.05 is about 4 standard errors at the ESS of this run.
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    assert!((mean + 0.1388).abs() < 0.05, "truncated mean {mean}");

    // The divergence limit stops a chain (after warm-up only).
    let strict = NutsConfig {
        max_divergences: Some(2),
        ..config
    };
    let out = sample(
        &d,
        &(),
        &strict,
        3,
        2,
        |_, _| Params::new(layout.clone(), vec![0.3]),
        Some(1),
        &(),
    )
    .unwrap();
    match &out.stop {
        Some(Stop::Divergences { chains, limit: 2 }) => assert!(!chains.is_empty()),
        s => panic!("expected a divergence stop, got {s:?}"),
    }
    assert!(out.divergences.contains(&3));
}

/// A density error that is not a non-finite value is the error of the call.
#[test]
fn density_errors_end_the_call() {
    struct Failing;
    impl LogDensity for Failing {
        type Batch = ();
        type Aux = ();
        fn value_and_grad(&self, p: &Params, _: &(), g: &mut [f64]) -> langevin::Result<(f64, ())> {
            let x = p.values()[0];
            if x > 1.0 {
                return Err(Error::Density("the model broke".into()));
            }
            g[0] = -x;
            Ok((-0.5 * x * x, ()))
        }
    }
    let layout = ParamLayout::vector("x", 1);
    let e = sample(
        &Failing,
        &(),
        &NutsConfig::default(),
        1,
        2,
        |_, _| Params::new(layout.clone(), vec![0.3]),
        None,
        &(),
    )
    .unwrap_err();
    assert!(
        matches!(e.root(), Error::Density(m) if m == "the model broke"),
        "{e}"
    );
    assert!(matches!(e, Error::InChain { .. }));
    // A starting point with a non-finite value, or a zero gradient, is
    // refused as bad input.
    for x0 in [f64::NAN, 0.0] {
        let e = sample(
            &Failing,
            &(),
            &NutsConfig::default(),
            1,
            1,
            |_, _| Params::new(layout.clone(), vec![x0]),
            None,
            &(),
        )
        .unwrap_err();
        assert!(e.is_bad_input(), "{e}");
        assert!(!e.to_string().contains("backtrace"), "{e}");
    }
}

#[test]
fn interrupt_stops_every_chain() {
    struct StopAfter(AtomicU64);
    impl NutsMonitor for StopAfter {
        fn on_draw(&self, _: usize, _: u64, _: bool) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn interrupted(&self) -> bool {
            self.0.load(Ordering::Relaxed) >= 1500
        }
    }
    let (target, _) = Gauss::correlated_2d();
    let mon = StopAfter(AtomicU64::new(0));
    let out = sample(
        &target,
        &(),
        &NutsConfig::default(),
        1,
        2,
        start(2),
        Some(1),
        &mon,
    )
    .unwrap();
    assert_eq!(out.stop, Some(Stop::Interrupted));
    // One thread: chain 0 made its 1500th draw, chain 1 none.
    assert_eq!(out.samples.chains[0].n_draws(), 500);
    assert_eq!(out.samples.chains[1].n_draws(), 0);
}

#[test]
fn config_is_validated() {
    let ok = NutsConfig::default();
    assert!(ok.validate().is_ok());
    let bad = [
        (
            NutsConfig {
                draws: 0,
                ..ok.clone()
            },
            "draws",
        ),
        (
            NutsConfig {
                thin: 0,
                ..ok.clone()
            },
            "thin",
        ),
        (
            NutsConfig {
                thin: 1001,
                ..ok.clone()
            },
            "thin",
        ),
        (
            NutsConfig {
                temperature: 0.0,
                ..ok.clone()
            },
            "temperature",
        ),
        (
            NutsConfig {
                temperature: f64::NAN,
                ..ok.clone()
            },
            "temperature",
        ),
        (
            NutsConfig {
                temperature: f64::INFINITY,
                ..ok.clone()
            },
            "temperature",
        ),
        (
            NutsConfig {
                max_depth: 0,
                ..ok.clone()
            },
            "max_depth",
        ),
        (
            NutsConfig {
                max_depth: 31,
                ..ok.clone()
            },
            "max_depth",
        ),
        (
            NutsConfig {
                target_accept: 1.0,
                ..ok.clone()
            },
            "target_accept",
        ),
        (
            NutsConfig {
                target_accept: 0.0,
                ..ok.clone()
            },
            "target_accept",
        ),
        (
            NutsConfig {
                target_accept: f64::NAN,
                ..ok.clone()
            },
            "target_accept",
        ),
        (
            NutsConfig {
                warmup: u64::MAX,
                ..ok.clone()
            },
            "warmup",
        ),
    ];
    let (target, _) = Gauss::correlated_2d();
    for (cfg, field) in bad {
        match cfg.validate() {
            Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field, "{cfg:?}"),
            r => panic!("{cfg:?}: expected an invalid {field}, got {r:?}"),
        }
        // sample() refuses it before any work.
        let e = sample(&target, &(), &cfg, 0, 1, start(2), None, &()).unwrap_err();
        assert!(e.is_bad_input());
    }
    let e = sample(&target, &(), &ok, 0, 0, start(2), None, &()).unwrap_err();
    assert!(matches!(
        e,
        Error::InvalidConfig {
            field: "chains",
            ..
        }
    ));
    let e = sample(&target, &(), &ok, 0, 1, start(2), Some(0), &()).unwrap_err();
    assert!(matches!(
        e,
        Error::InvalidConfig {
            field: "threads",
            ..
        }
    ));
}

fn corr(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}
