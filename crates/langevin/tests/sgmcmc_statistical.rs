//! Statistical tests of the SGMCMC samplers.
//!
//! Every test states its target, seeds, run length and a tolerance derived
//! from the Monte Carlo standard error (batch means) and the known
//! discretisation bias, and runs over several seeds.

mod common;

use common::Gaussian;
use langevin::sgmcmc::{
    Baoa, BaoaConfig, MomentaInit, Sghmc, SghmcConfig, Sgld, SgldConfig, Sgnht, SgnhtConfig,
};
use langevin::{chain_rng, Params, Transform, TransformState};
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

const SEEDS: [u64; 3] = [0, 1, 2];

/// Run `chains` chains of `steps` steps each from N(0, 100 I), discard
/// `burn_in`, return the kept draws per chain (each draw a Vec of length d).
fn run_chains<T>(
    t: &T,
    d: usize,
    chains: u64,
    steps: usize,
    burn_in: usize,
    seed: u64,
) -> Vec<Vec<Vec<f64>>>
where
    T: Transform<Batch = ()>,
{
    (0..chains)
        .into_par_iter()
        .map(|c| {
            let mut rng = chain_rng(seed, c);
            let x0: Vec<f64> = (0..d)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    10.0 * z
                })
                .collect();
            let mut s = t.init(Params::from_vec(x0), &mut rng).unwrap();
            let mut kept = Vec::with_capacity(steps - burn_in);
            for i in 0..steps {
                t.step(&mut s, &(), &mut rng).unwrap();
                if i >= burn_in {
                    kept.push(s.params().values().to_vec());
                }
            }
            kept
        })
        .collect()
}

/// Pooled mean and covariance.
fn moments(chains: &[Vec<Vec<f64>>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let d = chains[0][0].len();
    let n: usize = chains.iter().map(|c| c.len()).sum();
    let mut mean = vec![0.0; d];
    for x in chains.iter().flatten() {
        for i in 0..d {
            mean[i] += x[i] / n as f64;
        }
    }
    let mut cov = vec![vec![0.0; d]; d];
    for x in chains.iter().flatten() {
        for i in 0..d {
            for j in 0..d {
                cov[i][j] += (x[i] - mean[i]) * (x[j] - mean[j]) / (n as f64 - 1.0);
            }
        }
    }
    (mean, cov)
}

/// Batch-means Monte Carlo standard error of the pooled mean of `f(draw)`:
/// each chain is cut into 20 batches; the batch means' spread gives the error.
fn mcse(chains: &[Vec<Vec<f64>>], f: impl Fn(&[f64]) -> f64) -> f64 {
    let mut batch_means = Vec::new();
    for c in chains {
        let b = c.len() / 20;
        for k in 0..20 {
            let m: f64 = c[k * b..(k + 1) * b].iter().map(|x| f(x)).sum::<f64>() / b as f64;
            batch_means.push(m);
        }
    }
    let nb = batch_means.len() as f64;
    let mu = batch_means.iter().sum::<f64>() / nb;
    let var = batch_means.iter().map(|m| (m - mu).powi(2)).sum::<f64>() / (nb - 1.0);
    (var / nb).sqrt()
}

/// KL(N(m1, S1) || N(m0, S0)) in 2-D.
fn kl2(m1: &[f64], s1: &[Vec<f64>], m0: &[f64], s0: &[Vec<f64>]) -> f64 {
    let det = |s: &[Vec<f64>]| s[0][0] * s[1][1] - s[0][1] * s[1][0];
    let d0 = det(s0);
    let inv0 = [
        [s0[1][1] / d0, -s0[0][1] / d0],
        [-s0[1][0] / d0, s0[0][0] / d0],
    ];
    let tr: f64 = (0..2)
        .map(|i| (0..2).map(|j| inv0[i][j] * s1[j][i]).sum::<f64>())
        .sum();
    let dm = [m0[0] - m1[0], m0[1] - m1[1]];
    let quad: f64 = (0..2)
        .map(|i| (0..2).map(|j| dm[i] * inv0[i][j] * dm[j]).sum::<f64>())
        .sum();
    0.5 * (tr + quad - 2.0 + (d0 / det(s1)).ln())
}

/// The reference target of posteriors' test suite: mean mu ~ N(0, I),
/// covariance 0.3 A A^T + 0.7 I with A standard normal, drawn from `seed`.
fn reference_target(seed: u64) -> (Vec<f64>, Vec<Vec<f64>>, Gaussian) {
    let mut rng = chain_rng(seed, 999);
    let mut z = || -> f64 { StandardNormal.sample(&mut rng) };
    let mean = vec![z(), z()];
    let a = [[z(), z()], [z(), z()]];
    let mut cov = vec![vec![0.0; 2]; 2];
    for i in 0..2 {
        for j in 0..2 {
            cov[i][j] =
                0.3 * (a[i][0] * a[j][0] + a[i][1] * a[j][1]) + if i == j { 0.7 } else { 0.0 };
        }
    }
    let det = cov[0][0] * cov[1][1] - cov[0][1] * cov[1][0];
    let precision = vec![
        cov[1][1] / det,
        -cov[0][1] / det,
        -cov[1][0] / det,
        cov[0][0] / det,
    ];
    (mean.clone(), cov, Gaussian { mean, precision })
}

/// The reference scenario: 100 000 steps, 15 000 discarded, from N(0, 100 I).
///
/// Tolerance 0.1 on every entry of the mean and covariance, as in the
/// reference suite. To make that tolerance independent of luck we run 96
/// chains per seed and require the batch-means MCSE of every checked
/// quantity to be below 0.1 / 4, i.e. the tolerance is at least 4 standard
/// errors (the discretisation biases at these step sizes are below 0.01).
///
/// `cov_scale` is the known discretisation factor of the sampler's
/// stationary covariance (1 for all but SGNHT, see its test).
fn reference_scenario<T, F>(name: &str, cov_scale: f64, make: F)
where
    T: Transform<Batch = ()>,
    F: Fn(Gaussian) -> T,
{
    for seed in SEEDS {
        let (mu, sigma, target) = reference_target(seed);
        let t = make(target);
        let chains = run_chains(&t, 2, 96, 100_000, 15_000, seed);
        let (m, c) = moments(&chains);
        for i in 0..2 {
            let se = mcse(&chains, |x| x[i]);
            assert!(
                se < 0.025,
                "{name} seed {seed}: MCSE of mean[{i}] is {se}, too large for the 0.1 tolerance"
            );
            assert!(
                (m[i] - mu[i]).abs() < 0.1,
                "{name} seed {seed}: mean[{i}] = {} vs {} (mcse {se})",
                m[i],
                mu[i]
            );
            for j in 0..2 {
                let se = mcse(&chains, |x| (x[i] - m[i]) * (x[j] - m[j]));
                assert!(
                    se < 0.025,
                    "{name} seed {seed}: MCSE of cov[{i}][{j}] is {se}"
                );
                assert!(
                    (c[i][j] - cov_scale * sigma[i][j]).abs() < 0.1,
                    "{name} seed {seed}: cov[{i}][{j}] = {} vs {} (mcse {se})",
                    c[i][j],
                    cov_scale * sigma[i][j]
                );
            }
        }
        let init_cov = vec![vec![100.0, 0.0], vec![0.0, 100.0]];
        let kl_init = kl2(&[0.0, 0.0], &init_cov, &mu, &sigma);
        let kl_fit = kl2(&m, &c, &mu, &sigma);
        assert!(
            kl_fit < 0.01 * kl_init,
            "{name} seed {seed}: KL {kl_fit} not below 1% of the initial {kl_init}"
        );
    }
}

#[test]
fn sgld_reference_scenario() {
    reference_scenario("sgld", 1.0, |g| {
        Sgld::new(
            g,
            SgldConfig {
                step_size: 1e-2.into(),
                ..Default::default()
            },
        )
        .unwrap()
    });
}

#[test]
fn sghmc_reference_scenario() {
    reference_scenario("sghmc", 1.0, |g| {
        Sghmc::new(
            g,
            SghmcConfig {
                step_size: 0.1.into(),
                sigma: 10f64.sqrt(),
                friction: 10.0,
                momenta: MomentaInit::Constant(0.0),
                ..Default::default()
            },
        )
        .unwrap()
    });
}

/// SGNHT's thermostat drives the *discrete* chain's kinetic temperature
/// σ⁻² E[m²] to T. The explicit momentum update inflates the kinetic
/// temperature of a friction-γ chain by 1 / (1 − εγ/2) (free-particle AR(1):
/// var = σ²T / (1 − εασ⁻²/2)), so the thermostat settles at ξ ≈ α / (1 − εασ⁻²/2)
/// and the configurational temperature drops by the factor 1 − εασ⁻²/2
/// = 1 − 0.1·10/(2·10) = 0.95. We check the covariance against 0.95 Σ
/// (observed: 2.244 vs 0.95 · 2.381 = 2.262 on seed 0, one MCSE away; against
/// Σ itself the 5% bias is 7 MCSE). The KL criterion is against the true target.
#[test]
fn sgnht_reference_scenario() {
    let (eps, alpha, sigma2) = (0.1, 10.0, 10.0);
    reference_scenario("sgnht", 1.0 - eps * alpha / (2.0 * sigma2), |g| {
        Sgnht::new(
            g,
            SgnhtConfig {
                step_size: 0.1.into(),
                sigma: 10f64.sqrt(),
                friction: 10.0,
                momenta: MomentaInit::Constant(0.0),
                ..Default::default()
            },
        )
        .unwrap()
    });
}

#[test]
fn baoa_reference_scenario() {
    reference_scenario("baoa", 1.0, |g| {
        Baoa::new(
            g,
            BaoaConfig {
                step_size: 0.1.into(),
                sigma: 10f64.sqrt(),
                friction: 10.0,
                momenta: MomentaInit::Constant(0.0),
                ..Default::default()
            },
        )
        .unwrap()
    });
}

/// SGLD on N(0, s²) with step h is the AR(1) chain x' = (1 − h/s²) x + sqrt(2h) ξ
/// whose stationary variance is s² / (1 − h / (2 s²)). With s = 1, h = 0.2
/// that is 1/0.9 = 1.1111, 11% above the target: the test checks the chain
/// matches the biased value to 4 MCSE and is far from the unbiased 1.
#[test]
fn sgld_stationary_variance_has_its_known_discretisation_bias() {
    let h = 0.2;
    let expected = 1.0 / (1.0 - h / 2.0);
    for seed in SEEDS {
        let t = Sgld::new(
            Gaussian::isotropic(vec![0.0], 1.0),
            SgldConfig {
                step_size: h.into(),
                ..Default::default()
            },
        )
        .unwrap();
        let chains = run_chains(&t, 1, 8, 100_000, 1_000, seed);
        let (m, c) = moments(&chains);
        let se = mcse(&chains, |x| (x[0] - m[0]).powi(2));
        assert!(se < 0.01, "seed {seed}: MCSE {se}");
        assert!(
            (c[0][0] - expected).abs() < 4.0 * se,
            "seed {seed}: variance {} vs theory {expected} (mcse {se})",
            c[0][0]
        );
        assert!(
            (c[0][0] - 1.0).abs() > 20.0 * se,
            "seed {seed}: bias not resolved"
        );
    }
}

/// At T = 0, SGHMC draws no noise and is the momentum recursion
/// θ' = θ + εσ⁻² m, m' = (1 − εσ⁻²α) m + ε ∇log p(θ): heavy-ball gradient
/// ascent with learning rate ε²σ⁻² (applied one step late) and momentum
/// 1 − εσ⁻²α. Checked step for step against a hand-written recursion.
#[test]
fn sghmc_at_zero_temperature_is_heavy_ball_step_for_step() {
    let target = Gaussian {
        mean: vec![1.0, -2.0, 0.5],
        precision: vec![2.0, 0.3, 0.0, 0.3, 1.0, 0.1, 0.0, 0.1, 0.5],
    };
    let (eps, sigma, alpha) = (0.1, 1.0, 3.0);
    let t = Sghmc::new(
        Gaussian {
            mean: target.mean.clone(),
            precision: target.precision.clone(),
        },
        SghmcConfig {
            step_size: eps.into(),
            temperature: 0.0.into(),
            sigma,
            friction: alpha,
            momenta: MomentaInit::Given(vec![0.5, 0.0, -0.5]),
            ..Default::default()
        },
    )
    .unwrap();
    let mut rng = chain_rng(0, 0);
    let mut s = t.init(Params::from_vec(vec![0.0; 3]), &mut rng).unwrap();
    let (mut th, mut m) = (vec![0.0; 3], vec![0.5, 0.0, -0.5]);
    let mut g = vec![0.0; 3];
    for _ in 0..3000 {
        t.step(&mut s, &(), &mut rng).unwrap();
        target.eval(&th, &mut g);
        for i in 0..3 {
            let m0 = m[i];
            th[i] += eps / (sigma * sigma) * m0;
            m[i] = (1.0 - eps * alpha / (sigma * sigma)) * m0 + eps * g[i];
        }
        assert_eq!(s.params().values(), &th[..]);
        assert_eq!(s.momenta, m);
    }
    for (t, mu) in th.iter().zip(&target.mean) {
        assert!((t - mu).abs() < 1e-6, "reaches the mode");
    }
}

/// Run `steps` updates of `t` from (5, 5) and check it ends at the mode (1, −2).
fn assert_reaches_mode<T: Transform<Batch = ()>>(name: &str, t: T, steps: usize) {
    let mut r = chain_rng(3, 0);
    let mut s = t.init(Params::from_vec(vec![5.0, 5.0]), &mut r).unwrap();
    for _ in 0..steps {
        t.step(&mut s, &(), &mut r).unwrap();
    }
    let x = s.params().values();
    assert!(
        (x[0] - 1.0).abs() < 1e-6 && (x[1] + 2.0).abs() < 1e-6,
        "{name}: ended at {x:?}"
    );
}

/// Every sampler at T = 0 reaches the mode of a correlated quadratic.
#[test]
fn every_sampler_at_zero_temperature_reaches_the_mode() {
    let target = || Gaussian {
        mean: vec![1.0, -2.0],
        precision: vec![2.0, 0.5, 0.5, 1.0],
    };
    let sgld = SgldConfig {
        step_size: 0.1.into(),
        temperature: 0.0.into(),
        ..Default::default()
    };
    assert_reaches_mode("sgld", Sgld::new(target(), sgld).unwrap(), 2000);
    let sghmc = SghmcConfig {
        step_size: 0.1.into(),
        temperature: 0.0.into(),
        friction: 1.0,
        ..Default::default()
    };
    assert_reaches_mode("sghmc", Sghmc::new(target(), sghmc).unwrap(), 3000);
    let sgnht = SgnhtConfig {
        step_size: 0.1.into(),
        temperature: 0.0.into(),
        friction: 1.0,
        ..Default::default()
    };
    assert_reaches_mode("sgnht", Sgnht::new(target(), sgnht).unwrap(), 5000);
    let baoa = BaoaConfig {
        step_size: 0.1.into(),
        temperature: 0.0.into(),
        friction: 1.0,
        ..Default::default()
    };
    assert_reaches_mode("baoa", Baoa::new(target(), baoa).unwrap(), 3000);
}

/// SGNHT honours an explicit initial thermostat of 0.0 (posteriors treats 0.0
/// as "not given" and silently uses α).
#[test]
fn sgnht_honours_zero_thermostat() {
    let t = Sgnht::new(
        Gaussian::isotropic(vec![0.0], 1.0),
        SgnhtConfig {
            friction: 5.0,
            thermostat: Some(0.0),
            ..Default::default()
        },
    )
    .unwrap();
    let s = t
        .init(Params::from_vec(vec![0.0]), &mut chain_rng(0, 0))
        .unwrap();
    assert_eq!(s.thermostat, 0.0);
    let t = Sgnht::new(
        Gaussian::isotropic(vec![0.0], 1.0),
        SgnhtConfig {
            friction: 5.0,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        t.init(Params::from_vec(vec![0.0]), &mut chain_rng(0, 0))
            .unwrap()
            .thermostat,
        5.0
    );
}
