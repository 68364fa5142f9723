//! Many SGHMC chains with one batched density call per step
//! (`sgmcmc::batched::ParallelSghmc`).
#![allow(clippy::needless_range_loop)]

use langevin::core::{chain_rng, Error, FnDensity, ParamLayout, Params, Result, Transform};
use langevin::ensemble::run_parallel_sghmc;
use langevin::samples::Thinning;
use langevin::sgmcmc::{
    BatchLogDensity, BatchedLogistic, LogisticBatch, MomentaInit, NoiseSampler, ParallelSghmc,
    ParallelSghmcConfig, ParallelSghmcState, PerChain, Sghmc, SghmcConfig,
};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// Independent Gaussian target: precisions `prec`, mean `mu`.
#[derive(Clone)]
struct DiagGauss {
    mu: Vec<f64>,
    prec: Vec<f64>,
}

impl DiagGauss {
    fn eval(&self, x: &[f64], g: &mut [f64]) -> f64 {
        let mut v = 0.0;
        for i in 0..x.len() {
            let r = x[i] - self.mu[i];
            g[i] = -self.prec[i] * r;
            v -= 0.5 * self.prec[i] * r * r;
        }
        v
    }
}

impl BatchLogDensity for DiagGauss {
    type Batch = ();
    fn values_and_grads(
        &self,
        thetas: &[f64],
        dim: usize,
        _: &(),
        values: &mut [f64],
        grads: &mut [f64],
    ) -> Result<()> {
        for ((t, g), v) in thetas
            .chunks_exact(dim)
            .zip(grads.chunks_exact_mut(dim))
            .zip(values.iter_mut())
        {
            *v = self.eval(t, g);
        }
        Ok(())
    }
}

fn gauss() -> DiagGauss {
    DiagGauss {
        mu: vec![1.0, -2.0, 0.5],
        prec: vec![1.0, 4.0, 0.25],
    }
}

fn sghmc_config(eps: f64, temp: f64, momenta: MomentaInit) -> SghmcConfig {
    SghmcConfig {
        step_size: eps.into(),
        temperature: temp.into(),
        friction: 1.0,
        beta: 0.0,
        sigma: 1.0,
        momenta,
    }
}

fn inits(k: usize, d: usize, seed: u64) -> Vec<Params> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..k)
        .map(|_| {
            Params::from_vec(
                (0..d)
                    .map(|_| {
                        let z: f64 = StandardNormal.sample(&mut rng);
                        3.0 * z
                    })
                    .collect(),
            )
        })
        .collect()
}

fn parallel<D: BatchLogDensity>(density: D, sghmc: SghmcConfig, rows: usize) -> ParallelSghmc<D> {
    parallel_with(density, sghmc, rows, NoiseSampler::BoxMuller)
}

fn parallel_with<D: BatchLogDensity>(
    density: D,
    sghmc: SghmcConfig,
    rows: usize,
    noise: NoiseSampler,
) -> ParallelSghmc<D> {
    ParallelSghmc::new(
        density,
        ParallelSghmcConfig {
            sghmc,
            chains_per_call: rows,
            noise,
        },
    )
    .unwrap()
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// With a per-row density (same arithmetic), chain c is bit-identical to a
/// separate `Sghmc` chain driven by `chain_rng(seed, c)`, whatever the block
/// size and the number of threads.
#[test]
fn bit_identical_to_separate_sghmc_chains() {
    let g = gauss();
    let g2 = g.clone();
    let single = FnDensity::new(move |x: &[f64], _: &(), gr: &mut [f64]| g2.eval(x, gr));
    let cfg = sghmc_config(0.05, 1.0, MomentaInit::Normal);
    let (k, steps, seed) = (13, 200, 7);
    let starts = inits(k, 3, 1);
    // Reference: K separate Sghmc chains.
    let sg = Sghmc::new(&single, cfg.clone()).unwrap();
    let mut reference = Vec::new();
    for (c, p) in starts.iter().enumerate() {
        let mut rng = chain_rng(seed, c as u64);
        let mut st = sg.init(p.clone(), &mut rng).unwrap();
        for _ in 0..steps {
            sg.step(&mut st, &(), &mut rng).unwrap();
        }
        reference.push(st);
    }
    for rows in [1, 4, 13, 256] {
        for threads in [1, 2, 3] {
            let per_chain = PerChain::new(&single, ParamLayout::vector("theta", 3));
            let ps = parallel_with(per_chain, cfg.clone(), rows, NoiseSampler::BoxMuller);
            let st = in_pool(threads, || {
                let mut st = ps.init(&starts, seed).unwrap();
                for _ in 0..steps {
                    let info = ps.step(&mut st, &()).unwrap();
                    assert!(info.non_finite.is_empty());
                }
                st
            });
            for (c, r) in reference.iter().enumerate() {
                assert_eq!(st.chain(c), r.params.values(), "chain {c}, rows {rows}");
                assert_eq!(&st.momenta[c * 3..(c + 1) * 3], &r.momenta[..]);
                assert_eq!(st.log_posterior[c].to_bits(), r.log_posterior.to_bits());
            }
            // A hand-written batched density with the same per-row arithmetic
            // gives the same bits too.
            let direct = parallel_with(g.clone(), cfg.clone(), rows, NoiseSampler::BoxMuller);
            let mut st2 = direct.init(&starts, seed).unwrap();
            for _ in 0..steps {
                direct.step(&mut st2, &()).unwrap();
            }
            assert_eq!(st2.params, st.params);
        }
    }
}

/// Exact stationary covariance of one coordinate of the SGHMC recursion on a
/// Gaussian with precision p (the linear map x' = A x + noise), found by
/// iterating S = A S Aᵀ + Q; returns Var θ. No discretisation-bias guess.
fn exact_stationary_var(p: f64, eps: f64, alpha: f64, temp: f64) -> f64 {
    let a = [[1.0, eps], [-eps * p, 1.0 - eps * alpha]];
    let q = temp * eps * 2.0 * alpha;
    let mut s = [[0.0f64; 2]; 2];
    for _ in 0..200_000 {
        let mut n = [[0.0; 2]; 2];
        for i in 0..2 {
            for j in 0..2 {
                let mut v = 0.0;
                for k in 0..2 {
                    for l in 0..2 {
                        v += a[i][k] * s[k][l] * a[j][l];
                    }
                }
                n[i][j] = v;
            }
        }
        n[1][1] += q;
        s = n;
    }
    s[0][0]
}

/// Across many independent chains the final draws have the target mean and
/// the exact stationary variance of the discretised dynamics, within
/// Monte Carlo error (5 standard errors), for several seeds.
#[test]
fn ensemble_moments_match_the_gaussian_target() {
    let g = gauss();
    let (eps, alpha, temp) = (0.1, 1.0, 1.0);
    let k = 4000;
    for (seed, noise) in [
        (1, NoiseSampler::BoxMuller),
        (2, NoiseSampler::BoxMuller),
        (3, NoiseSampler::BoxMuller),
        (4, NoiseSampler::Ziggurat),
        (5, NoiseSampler::Ziggurat),
    ] {
        let ps = parallel_with(
            g.clone(),
            sghmc_config(eps, temp, MomentaInit::Normal),
            256,
            noise,
        );
        let starts = inits(k, 3, 100 + seed);
        let mut st = ps.init(&starts, seed).unwrap();
        for _ in 0..600 {
            ps.step(&mut st, &()).unwrap();
        }
        for j in 0..3 {
            let col: Vec<f64> = (0..k).map(|c| st.chain(c)[j]).collect();
            let mean = col.iter().sum::<f64>() / k as f64;
            let var = col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k - 1) as f64;
            let v_exact = exact_stationary_var(g.prec[j], eps, alpha, temp);
            // The scheme's discretisation bias is large at ε = 0.1 (+11%,
            // +68%, +3% over 1/p for p = 1, 4, 0.25): hence the exact
            // variance of the discrete recursion as the reference.
            assert!(v_exact * g.prec[j] > 1.0 && v_exact * g.prec[j] < 1.7);
            let se_mean = (v_exact / k as f64).sqrt();
            let se_var = v_exact * (2.0 / (k - 1) as f64).sqrt();
            assert!(
                (mean - g.mu[j]).abs() < 5.0 * se_mean,
                "seed {seed} {noise:?} coord {j}: mean {mean} vs {}",
                g.mu[j]
            );
            assert!(
                (var - v_exact).abs() < 5.0 * se_var,
                "seed {seed} {noise:?} coord {j}: var {var} vs exact {v_exact}"
            );
        }
    }
}

fn logistic_batch(b: usize, d: usize, seed: u64) -> LogisticBatch {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let truth: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
    let mut x = Vec::new();
    let mut y = Vec::new();
    for _ in 0..b {
        let row: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
        let z: f64 = row.iter().zip(&truth).map(|(a, t)| a * t).sum();
        y.push(f64::from(rng.random::<f64>() < 1.0 / (1.0 + (-z).exp())));
        x.extend(row);
    }
    LogisticBatch::new(x, y, d).unwrap()
}

/// The matrix-product logistic density follows the per-chain scalar
/// density's trajectories to rounding (same noise streams), and its result
/// does not depend on the number of threads.
#[test]
fn batched_logistic_tracks_per_chain_sghmc() {
    let (d, b, k, steps, seed) = (20, 32, 300, 300, 11);
    let batch = logistic_batch(b, d, 5);
    let dens = BatchedLogistic::new(60_000.0, 1.0).unwrap();
    let cfg = SghmcConfig {
        step_size: 1e-2.into(),
        temperature: (1.0 / 60_000.0).into(),
        friction: 0.5,
        ..Default::default()
    };
    let starts: Vec<Params> = inits(k, d, 3)
        .into_iter()
        .map(|p| Params::from_vec(p.values().iter().map(|v| 0.03 * v).collect()))
        .collect();
    let ps = parallel_with(&dens, cfg.clone(), 64, NoiseSampler::BoxMuller);
    let run = |threads| {
        in_pool(threads, || {
            let mut st = ps.init(&starts, seed).unwrap();
            for _ in 0..steps {
                assert!(ps.step(&mut st, &batch).unwrap().non_finite.is_empty());
            }
            st
        })
    };
    let a = run(1);
    assert_eq!(a, run(2));
    assert_eq!(a, run(4));
    let single = FnDensity::new(|x: &[f64], bt: &LogisticBatch, g: &mut [f64]| {
        dens.value_and_grad_scalar(x, bt, g)
    });
    let sg = Sghmc::new(&single, cfg).unwrap();
    let mut worst: f64 = 0.0;
    for (c, p) in starts.iter().enumerate() {
        let mut rng = chain_rng(seed, c as u64);
        let mut st = sg.init(p.clone(), &mut rng).unwrap();
        for _ in 0..steps {
            sg.step(&mut st, &batch, &mut rng).unwrap();
        }
        for (x, y) in a.chain(c).iter().zip(st.params.values()) {
            worst = worst.max((x - y).abs());
        }
        assert!((a.log_posterior[c] - st.log_posterior).abs() < 1e-10);
    }
    assert!(worst < 1e-9, "largest parameter difference {worst}");
}

/// Same seed, same draws; checkpointing the state resumes bit-identically.
#[test]
fn deterministic_and_checkpointable() {
    let ps = parallel(gauss(), sghmc_config(0.05, 1.0, MomentaInit::Normal), 5);
    let starts = inits(17, 3, 0);
    let mut a = ps.init(&starts, 9).unwrap();
    let mut b = ps.init(&starts, 9).unwrap();
    let c = ps.init(&starts, 10).unwrap();
    // (log_posterior is NaN before the first step, so compare the parts.)
    assert_eq!(
        (&a.params, &a.momenta, &a.rngs),
        (&b.params, &b.momenta, &b.rngs)
    );
    assert_ne!(a.momenta, c.momenta);
    for _ in 0..50 {
        ps.step(&mut a, &()).unwrap();
        ps.step(&mut b, &()).unwrap();
    }
    assert_eq!(a, b);
    let json = serde_json::to_string(&a).unwrap();
    let mut r: ParallelSghmcState = serde_json::from_str(&json).unwrap();
    assert_eq!(r, a);
    ps.step(&mut a, &()).unwrap();
    ps.step(&mut r, &()).unwrap();
    assert_eq!(r, a);

    let run = |threads| {
        in_pool(threads, || {
            run_parallel_sghmc(&ps, &starts, 4, 100, Thinning::new(20, 10).unwrap(), |_| ())
                .unwrap()
        })
    };
    let o1 = run(1);
    let o2 = run(3);
    assert_eq!(o1.samples, o2.samples);
    assert_eq!(o1.state, o2.state);
    assert_eq!(o1.samples.chains.len(), 17);
    assert_eq!(o1.samples.chains[0].n_draws(), 8);
}

/// A density that is NaN for chain 2 on step 3 and +Inf in one gradient
/// entry of chain 5 on every step after 6.
struct Faulty {
    inner: DiagGauss,
}

impl BatchLogDensity for Faulty {
    type Batch = u64;
    fn values_and_grads(
        &self,
        thetas: &[f64],
        dim: usize,
        step: &u64,
        values: &mut [f64],
        grads: &mut [f64],
    ) -> Result<()> {
        self.inner
            .values_and_grads(thetas, dim, &(), values, grads)?;
        // Rows are chains 0..K (one block of 256).
        if *step == 3 {
            values[2] = f64::NAN;
        }
        if *step > 6 && values.len() > 5 {
            grads[5 * dim + 1] = f64::INFINITY;
        }
        Ok(())
    }
}

#[test]
fn non_finite_chains_are_skipped_and_reported() {
    let cfg = sghmc_config(0.05, 1.0, MomentaInit::Normal);
    let faulty = parallel(Faulty { inner: gauss() }, cfg.clone(), 256);
    let clean = parallel(gauss(), cfg, 256);
    let starts = inits(8, 3, 2);
    let mut a = faulty.init(&starts, 3).unwrap();
    let mut b = clean.init(&starts, 3).unwrap();
    let mut reported = Vec::new();
    for s in 0..10u64 {
        let before = a.clone();
        let info = faulty.step(&mut a, &s).unwrap();
        clean.step(&mut b, &()).unwrap();
        for &c in &info.non_finite {
            assert_eq!(
                a.chain(c),
                before.chain(c),
                "rejected chain {c} must not move"
            );
            assert_eq!(a.rngs[c], before.rngs[c]);
        }
        reported.push(info.non_finite);
    }
    assert_eq!(reported[3], vec![2]);
    assert_eq!(reported[7], vec![5]);
    assert!(reported[0].is_empty() && reported[9] == vec![5]);
    assert_eq!(a.divergences, vec![0, 0, 1, 0, 0, 3, 0, 0]);
    assert!(a.log_posterior[5].is_finite());
    // Untouched chains are exactly the clean run.
    for c in [0, 1, 3, 4, 6, 7] {
        assert_eq!(a.chain(c), b.chain(c));
    }
    assert!(a.params.iter().all(|x| x.is_finite()));
}

struct Failing;
impl BatchLogDensity for Failing {
    type Batch = ();
    fn values_and_grads(
        &self,
        _: &[f64],
        _: usize,
        _: &(),
        _: &mut [f64],
        _: &mut [f64],
    ) -> Result<()> {
        Err(Error::Density("boom".into()))
    }
}

#[test]
fn density_errors_leave_the_state_untouched() {
    let ps = parallel(Failing, SghmcConfig::default(), 2);
    let mut st = ps.init(&inits(5, 2, 0), 0).unwrap();
    let before = st.clone();
    assert!(matches!(ps.step(&mut st, &()), Err(Error::Density(_))));
    assert_eq!(
        (&st.params, &st.momenta, &st.rngs, st.step, &st.divergences),
        (
            &before.params,
            &before.momenta,
            &before.rngs,
            before.step,
            &before.divergences
        )
    );
    assert!(st.log_posterior.iter().all(|v| v.is_nan()));
}

#[test]
fn invalid_configs_and_inputs_are_rejected() {
    let bad = |cfg: ParallelSghmcConfig| ParallelSghmc::new(gauss(), cfg).err();
    assert!(matches!(
        bad(ParallelSghmcConfig {
            chains_per_call: 0,
            ..Default::default()
        }),
        Some(Error::InvalidConfig {
            field: "chains_per_call",
            ..
        })
    ));
    assert!(matches!(
        bad(ParallelSghmcConfig {
            sghmc: SghmcConfig {
                friction: -1.0,
                ..Default::default()
            },
            ..Default::default()
        }),
        Some(Error::InvalidConfig {
            field: "friction",
            ..
        })
    ));
    assert!(bad(ParallelSghmcConfig {
        sghmc: SghmcConfig {
            step_size: 0.0.into(),
            ..Default::default()
        },
        ..Default::default()
    })
    .is_some());
    let ps = parallel(gauss(), SghmcConfig::default(), 4);
    assert!(ps.init(&[], 0).is_err());
    let mixed = vec![
        Params::from_vec(vec![0.0; 3]),
        Params::from_vec(vec![0.0; 2]),
    ];
    assert!(matches!(
        ps.init(&mixed, 0),
        Err(Error::DimensionMismatch { .. })
    ));
    assert!(ps.init(&[Params::from_vec(vec![])], 0).is_err());
    let mut st = ps.init(&inits(3, 3, 0), 0).unwrap();
    st.params.pop();
    assert!(matches!(
        ps.step(&mut st, &()),
        Err(Error::DimensionMismatch { .. })
    ));
    // A schedule that turns invalid is an error, not a panic.
    let sched = parallel(
        gauss(),
        SghmcConfig {
            step_size: langevin::Schedule::from_fn(|s| if s < 2 { 0.1 } else { f64::NAN }),
            ..Default::default()
        },
        4,
    );
    let mut st = sched.init(&inits(3, 3, 0), 0).unwrap();
    sched.step(&mut st, &()).unwrap();
    sched.step(&mut st, &()).unwrap();
    let before = st.clone();
    assert!(sched.step(&mut st, &()).is_err());
    assert_eq!(st, before);
}

/// T = 0: no noise, every chain is heavy-ball gradient ascent to the mode.
#[test]
fn zero_temperature_reaches_the_mode() {
    let g = gauss();
    let ps = parallel(
        g.clone(),
        sghmc_config(0.1, 0.0, MomentaInit::Constant(0.0)),
        3,
    );
    let mut st = ps.init(&inits(7, 3, 4), 0).unwrap();
    let rng0 = st.rngs.clone();
    for _ in 0..3000 {
        ps.step(&mut st, &()).unwrap();
    }
    assert_eq!(st.rngs, rng0, "T = 0 draws no random numbers");
    for c in 0..7 {
        for (x, m) in st.chain(c).iter().zip(&g.mu) {
            assert!((x - m).abs() < 1e-8);
        }
    }
}

#[test]
fn parallel_sghmc_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ParallelSghmc<BatchedLogistic>>();
    check::<ParallelSghmcState>();
}
