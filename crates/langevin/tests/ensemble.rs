//! Parallel chains and deep ensembles.

mod common;

use common::Gaussian;
use langevin::ensemble::{deep_ensemble, run_chains};
use langevin::samples::Thinning;
use langevin::sgmcmc::{MomentaInit, Sghmc, SghmcConfig};
use langevin::{Params, TransformState};

fn sghmc(temperature: f64) -> Sghmc<Gaussian> {
    Sghmc::new(
        Gaussian::isotropic(vec![1.0, -1.0, 0.5], 2.0),
        SghmcConfig {
            step_size: 0.1.into(),
            temperature: temperature.into(),
            friction: 1.0,
            momenta: MomentaInit::Constant(0.0),
            ..Default::default()
        },
    )
    .unwrap()
}

fn inits(k: usize) -> Vec<Params> {
    (0..k)
        .map(|i| Params::from_vec(vec![i as f64 * 0.1 - 2.0; 3]))
        .collect()
}

/// Each chain's randomness depends only on (seed, chain): the draws are
/// bit-identical whatever the number of threads.
#[test]
fn chains_are_identical_across_thread_counts() {
    let t = sghmc(1.0);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            run_chains(
                &t,
                inits(6),
                42,
                500,
                Thinning::new(100, 3).unwrap(),
                |_, _| (),
            )
            .unwrap()
        })
    };
    let a = run(1);
    let b = run(2);
    let c = run(4);
    assert_eq!(a.samples, b.samples);
    assert_eq!(a.samples, c.samples);
    assert_eq!(a.samples.chains.len(), 6);
    // (500 - 100) / 3 = 133: the last step of every block of 3 after burn-in.
    assert_eq!(a.samples.chains[0].n_draws(), 133);
    assert_eq!(a.samples.names, vec!["theta[0]", "theta[1]", "theta[2]"]);
    // Different chains are different.
    assert_ne!(a.samples.chains[0].draw(10), a.samples.chains[1].draw(10));
    assert!(a
        .samples
        .summary()
        .unwrap()
        .iter()
        .all(|s| s.summary.rhat.is_finite()));
}

/// Unbiased deep ensemble: 400 SGHMC chains at T = 1 on N(mu, 4 I), 3000
/// steps each (about 30 relaxation times), final states only. The members are
/// independent, so the ensemble mean has standard error 2/sqrt(400) = 0.1 and
/// the ensemble variance 4·sqrt(2/399) ≈ 0.28; tolerances are 4 standard
/// errors. Three seeds.
#[test]
fn unbiased_deep_ensemble_samples_the_target() {
    let t = sghmc(1.0);
    for seed in [1, 2, 3] {
        let members = deep_ensemble(&t, inits(400), seed, 3000, |_, _| ()).unwrap();
        let mu = [1.0, -1.0, 0.5];
        for (j, &mu_j) in mu.iter().enumerate() {
            let xs: Vec<f64> = members.iter().map(|s| s.params().values()[j]).collect();
            let n = xs.len() as f64;
            let m = xs.iter().sum::<f64>() / n;
            let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
            assert!((m - mu_j).abs() < 0.4, "seed {seed} dim {j}: mean {m}");
            assert!(
                (v - 4.0).abs() < 4.0 * 4.0 * (2.0 / (n - 1.0)).sqrt(),
                "seed {seed} dim {j}: var {v}"
            );
        }
    }
}

/// At T = 0 the same code is a classical deep ensemble: every member
/// optimises to the mode.
#[test]
fn deep_ensemble_at_zero_temperature_is_optimisation() {
    let members = deep_ensemble(&sghmc(0.0), inits(8), 0, 3000, |_, _| ()).unwrap();
    for s in members {
        let x = s.params().values();
        assert!(
            (x[0] - 1.0).abs() < 1e-6 && (x[1] + 1.0).abs() < 1e-6 && (x[2] - 0.5).abs() < 1e-6
        );
    }
}

#[test]
fn bad_runs_are_rejected() {
    let t = sghmc(1.0);
    assert!(run_chains(&t, vec![], 0, 10, Thinning::default(), |_, _| ()).is_err());
    assert!(run_chains(
        &t,
        inits(2),
        0,
        10,
        Thinning::new(10, 1).unwrap(),
        |_, _| ()
    )
    .is_err());
    let mixed = vec![
        Params::from_vec(vec![0.0; 3]),
        Params::from_vec(vec![0.0; 2]),
    ];
    assert!(run_chains(&t, mixed, 0, 10, Thinning::default(), |_, _| ()).is_err());
}
