//! IVON (`langevin::vi::Ivon`): the update of Algorithm 1 of Shen et al.
//! (2024) checked step by step against the formulas, and the fixed point on
//! Gaussian targets, where IVON's variational posterior is the exact one.
#![allow(clippy::needless_range_loop)]

use std::sync::Mutex;

use langevin::core::{chain_rng, Error, FnDensity, LogDensity, Params, Schedule, Transform};
use langevin::vi::{Ivon, IvonConfig};

/// ℓ(θ) = −½ Σⱼ pⱼ (θⱼ − μⱼ)² (a batch-averaged log posterior); with
/// effective sample size λ the target `exp(λℓ)` is N(μ, diag(1/(λp))).
fn gaussian(p: Vec<f64>, mu: Vec<f64>) -> impl LogDensity<Batch = (), Aux = ()> {
    FnDensity::new(move |x: &[f64], _: &(), g: &mut [f64]| {
        let mut lp = 0.0;
        for j in 0..x.len() {
            let r = x[j] - mu[j];
            g[j] = -p[j] * r;
            lp -= 0.5 * p[j] * r * r;
        }
        lp
    })
}

/// Three steps with two samples each, δ > 0 and clipping: the state after
/// every step equals Algorithm 1 evaluated at the points the density was
/// called at (θ − m recovers the noise), to rounding.
#[test]
fn each_step_is_algorithm_1() {
    let (p, mu) = (vec![0.7, 3.0, 1.5], vec![1.0, -2.0, 0.25]);
    let seen: Mutex<Vec<Vec<f64>>> = Mutex::new(Vec::new());
    let inner = gaussian(p.clone(), mu.clone());
    let recording = FnDensity::new(|x: &[f64], b: &(), g: &mut [f64]| {
        seen.lock().unwrap().push(x.to_vec());
        inner
            .value_and_grad(&Params::from_vec(x.to_vec()), b, g)
            .unwrap()
            .0
    });
    let cfg = IvonConfig {
        step_size: Schedule::from_fn(|t| 0.2 / (1.0 + t as f64)),
        ess: 20.0,
        beta1: 0.8,
        beta2: 0.95,
        weight_decay: 0.3,
        hess_init: 0.5,
        n_samples: 2,
        clip_radius: 2.0,
    };
    let ivon = Ivon::new(recording, cfg.clone()).unwrap();
    let mut rng = chain_rng(3, 0);
    let mut s = ivon
        .init(Params::from_vec(vec![0.0, 0.5, -1.0]), &mut rng)
        .unwrap();
    // Algorithm 1 by hand.
    let (mut m, mut h, mut g) = (s.params.values().to_vec(), vec![0.5; 3], vec![0.0; 3]);
    let (lam, delta, b1, b2) = (cfg.ess, cfg.weight_decay, cfg.beta1, cfg.beta2);
    let mut clipped = 0;
    for t in 1..=3u64 {
        seen.lock().unwrap().clear();
        ivon.step(&mut s, &(), &mut rng).unwrap();
        let thetas = seen.lock().unwrap().clone();
        assert_eq!(thetas.len(), 2);
        let alpha = 0.2 / t as f64;
        for j in 0..3 {
            let (mut gh, mut hh) = (0.0, 0.0);
            for th in &thetas {
                let grad_loss = p[j] * (th[j] - mu[j]);
                gh += grad_loss / 2.0;
                hh += grad_loss * (th[j] - m[j]) * lam * (h[j] + delta) / 2.0;
            }
            g[j] = b1 * g[j] + (1.0 - b1) * gh;
            h[j] = b2 * h[j]
                + (1.0 - b2) * hh
                + 0.5 * (1.0 - b2).powi(2) * (h[j] - hh).powi(2) / (h[j] + delta);
            let gbar = g[j] / (1.0 - b1.powi(t as i32));
            let step = (gbar + delta * m[j]) / (h[j] + delta);
            if step.abs() > 2.0 {
                clipped += 1;
            }
            m[j] -= alpha * step.clamp(-2.0, 2.0);
        }
        for j in 0..3 {
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
            assert!(
                close(s.params.values()[j], m[j]),
                "t {t}: m {:?} vs {m:?}",
                s.params
            );
            assert!(close(s.hess[j], h[j]), "t {t}: h {:?} vs {h:?}", s.hess);
            assert!(
                close(s.momentum[j], g[j]),
                "t {t}: g {:?} vs {g:?}",
                s.momentum
            );
        }
        assert_eq!(s.step, t);
        // The draws have the variance 1/(λ(h + δ)) of the state before the step.
    }
    // The case is not trivial: the step was clipped somewhere.
    assert!(clipped > 0, "no step was clipped");
}

/// On N(μ, diag(1/(λ(p + δ)))) targets (with δ the prior `N(0, 1/(λδ))` is
/// added: the mean is m* = pμ/(p + δ)) IVON's fixed point is exact: h = p.
/// The tolerances, from the stationary fluctuations of the updates (and
/// checked against a simulation of the same recursion in plain Python, which
/// gave at most 2.3 of these standard deviations over 3 seeds × 6 cases):
///
/// * At the fixed point ĥ = p (1/S) Σₛ (ξₛ² + c ξₛ) with c = (m* − μ)/σ
///   (0 for δ = 0), so E ĥ = p and Var ĥ = p² (2 + c²)/S. h is an
///   exponential average of weight r = 1 − β₂ = 1e-4, so the relative
///   standard deviation of h + δ is sqrt(r (2 + c²)/(2S)) · p/(p + δ)
///   (0.005 for δ = 0, S = 4); the second-order term biases h by about
///   r p (2 + c²)/(2S), below 1e-3 relative; 10⁵ steps forget h₀ (e^{−10}).
///   The variance 1/(λ(h + δ)) must be within 6 such standard deviations
///   plus 1e-3.
/// * The mean, with the last steps at α ≈ 1e-3 (cosine from 0.1), moves like
///   an AR(1) of rate α with noise of variance ≈ σ²/S: its standard deviation
///   is ≈ σ sqrt(α/(2S)) ≈ 0.011 σ. It must be within 0.1 σ.
///
/// Four seeds and both δ = 0 and δ = 0.5.
#[test]
fn converges_to_the_exact_posterior_of_gaussian_targets() {
    let (p, mu) = (vec![0.5, 2.0, 8.0], vec![1.0, -2.0, 0.5]);
    let lam = 50.0;
    let steps = 100_000u64;
    for delta in [0.0, 0.5] {
        // Largest errors, in units of the tolerances' standard deviations.
        let (mut worst_var, mut worst_mean) = (0.0f64, 0.0f64);
        let cfg = IvonConfig {
            step_size: Schedule::cosine(0.1, 1e-3, steps),
            ess: lam,
            beta1: 0.9,
            beta2: 0.9999,
            weight_decay: delta,
            hess_init: 1.0,
            n_samples: 4,
            ..IvonConfig::default()
        };
        let ivon = Ivon::new(gaussian(p.clone(), mu.clone()), cfg).unwrap();
        for seed in 0..4 {
            let mut rng = chain_rng(seed, 0);
            let mut s = ivon.init(Params::from_vec(vec![0.0; 3]), &mut rng).unwrap();
            for _ in 0..steps {
                ivon.step(&mut s, &(), &mut rng).unwrap();
            }
            let sd = ivon.sd(&s);
            for j in 0..3 {
                let var = 1.0 / (lam * (p[j] + delta));
                let mean = p[j] * mu[j] / (p[j] + delta);
                let c = (mean - mu[j]) / var.sqrt();
                let (r, n) = (1e-4, 4.0);
                let rel_sd = (r * (2.0 + c * c) / (2.0 * n)).sqrt() * p[j] / (p[j] + delta);
                let tol = 6.0 * rel_sd + 1e-3;
                let rel_var = sd[j] * sd[j] / var - 1.0;
                let z_mean = (s.params.values()[j] - mean) / var.sqrt();
                worst_var = worst_var.max(rel_var.abs() / rel_sd);
                worst_mean = worst_mean.max(z_mean.abs());
                assert!(
                    rel_var.abs() < tol,
                    "δ {delta}, seed {seed}, coordinate {j}: variance off by {rel_var:.4} (relative; tolerance {tol:.4})"
                );
                assert!(
                    z_mean.abs() < 0.1,
                    "δ {delta}, seed {seed}, coordinate {j}: mean off by {z_mean:.4} sd"
                );
            }
        }
        eprintln!(
            "δ {delta}: largest variance error {worst_var:.2} of its standard deviations \
             (tolerance 6), largest mean error {worst_mean:.4} posterior sd (tolerance 0.1)"
        );
    }
}

/// Draws from q have the state's moments.
#[test]
fn samples_have_the_moments_of_q() {
    let ivon = Ivon::new(
        gaussian(vec![1.0], vec![0.0]),
        IvonConfig {
            ess: 4.0,
            weight_decay: 0.25,
            ..IvonConfig::default()
        },
    )
    .unwrap();
    let s = ivon
        .init_with(Params::from_vec(vec![1.5, -3.0]), vec![0.75, 24.75])
        .unwrap();
    // σ = 1/sqrt(4 (h + 0.25)) = 0.5 and 0.1.
    let sd = ivon.sd(&s);
    assert!((sd[0] - 0.5).abs() < 1e-15 && (sd[1] - 0.1).abs() < 1e-15);
    let n = 20_000;
    for seed in 0..3 {
        let draws = ivon.sample(&s, n, &mut chain_rng(seed, 1));
        for (j, (m, sdj)) in [(1.5, 0.5), (-3.0, 0.1)].into_iter().enumerate() {
            let xs: Vec<f64> = draws.iter().map(|p| p.values()[j]).collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            // 5 Monte Carlo standard errors.
            assert!((mean - m).abs() < 5.0 * sdj / (n as f64).sqrt());
            assert!((var.sqrt() - sdj).abs() < 5.0 * sdj / (2.0 * n as f64).sqrt());
        }
    }
}

/// A NaN at some sample is an error naming the step, and the state (mean,
/// Hessian, momentum, step) is left as it was; the next good step works.
#[test]
fn a_non_finite_log_posterior_leaves_the_state_untouched() {
    let d = FnDensity::new(|x: &[f64], _: &(), g: &mut [f64]| {
        g[0] = -x[0];
        if x[0] > 5.0 {
            f64::NAN
        } else {
            -0.5 * x[0] * x[0]
        }
    });
    let ivon = Ivon::new(
        d,
        IvonConfig {
            ess: 100.0,
            n_samples: 3,
            ..IvonConfig::default()
        },
    )
    .unwrap();
    let mut rng = chain_rng(0, 0);
    let mut s = ivon.init(Params::from_vec(vec![1.0]), &mut rng).unwrap();
    for _ in 0..5 {
        ivon.step(&mut s, &(), &mut rng).unwrap();
    }
    let good = s.clone();
    let mut bad = s.clone();
    bad.params.values_mut()[0] = 10.0;
    let before = bad.clone();
    match ivon.step(&mut bad, &(), &mut rng) {
        Err(Error::NonFiniteLogDensity { step: 5, value, .. }) => assert!(value.is_nan()),
        other => panic!("expected NonFiniteLogDensity at step 5, got {other:?}"),
    }
    assert_eq!(bad, before);
    ivon.step(&mut s, &(), &mut rng).unwrap();
    assert_eq!(s.step, good.step + 1);
}
