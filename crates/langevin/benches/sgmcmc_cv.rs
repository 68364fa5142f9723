//! SGHMC against SGHMC-CV (control-variate gradients,
//! `langevin::sgmcmc::ControlVariates`) on a synthetic logistic regression
//! of N = 100 000 rows and d = 20 (an intercept and 19 N(0, 1) features),
//! minibatches of 256 rows, one thread: the per-step wall time (CV evaluates
//! the minibatch gradient twice, at θ and at the centre), and, printed before
//! the timings, what the centre cost (L-BFGS on the full data) and the
//! gradient-variance reduction over the minibatches of an epoch at a point
//! one posterior scale (1/√N per coordinate) from the centre.
//!
//! Run: `cargo bench -p langevin --bench sgmcmc_cv`.

use std::hint::black_box;
use std::time::Instant;

use criterion::Criterion;
use langevin::core::{chain_rng, FnDensity, LogDensity, Params, Transform};
use langevin::optim::LbfgsConfig;
use langevin::sgmcmc::{ControlVariates, MomentaInit, Sghmc, SghmcConfig};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

const N: usize = 100_000;
const D: usize = 20;
const BATCH: usize = 256;

type Logistic =
    FnDensity<Vec<u32>, Box<dyn Fn(&[f64], &Vec<u32>, &mut [f64]) -> f64 + Send + Sync>>;

/// Batch-averaged log posterior of a logistic regression (prior N(0, I)) on
/// the rows of a batch.
fn logistic() -> Logistic {
    let mut rng = chain_rng(7, 0);
    let w: Vec<f64> = (0..D).map(|j| 1.0 - 0.1 * j as f64).collect();
    let mut x = vec![0.0; N * D];
    let mut y = vec![0.0; N];
    for i in 0..N {
        x[i * D] = 1.0;
        for j in 1..D {
            x[i * D + j] = StandardNormal.sample(&mut rng);
        }
        let z: f64 = (0..D).map(|j| x[i * D + j] * w[j]).sum();
        y[i] = f64::from(rng.random::<f64>() < 1.0 / (1.0 + (-z).exp()));
    }
    FnDensity::new(Box::new(
        move |w: &[f64], rows: &Vec<u32>, g: &mut [f64]| {
            let m = rows.len() as f64;
            for (gj, wj) in g.iter_mut().zip(w) {
                *gj = -wj / N as f64;
            }
            let mut lp = -w.iter().map(|v| v * v).sum::<f64>() / (2.0 * N as f64);
            for &r in rows {
                let xi = &x[r as usize * D..(r as usize + 1) * D];
                let z: f64 = xi.iter().zip(w).map(|(a, b)| a * b).sum();
                let yi = y[r as usize];
                let l1p = (-z).exp().ln_1p();
                lp += (yi * -l1p + (1.0 - yi) * (-z - l1p)) / m;
                let r = (yi - 1.0 / (1.0 + (-z).exp())) / m;
                for (gj, xj) in g.iter_mut().zip(xi) {
                    *gj += r * xj;
                }
            }
            lp
        },
    ))
}

/// Sum over coordinates of the gradient's variance over `batches`.
fn grad_variance<D: LogDensity<Batch = Vec<u32>>>(
    d: &D,
    theta: &Params,
    batches: &[Vec<u32>],
) -> f64 {
    let grads: Vec<Vec<f64>> = batches
        .iter()
        .map(|b| {
            let mut g = vec![0.0; D];
            d.value_and_grad(theta, b, &mut g).unwrap();
            g
        })
        .collect();
    let k = grads.len() as f64;
    (0..D)
        .map(|j| {
            let m = grads.iter().map(|g| g[j]).sum::<f64>() / k;
            grads.iter().map(|g| (g[j] - m).powi(2)).sum::<f64>() / (k - 1.0)
        })
        .sum()
}

fn bench(c: &mut Criterion) {
    let density = logistic();
    let full: Vec<u32> = (0..N as u32).collect();
    let t0 = Instant::now();
    let (cv, search) = ControlVariates::at_mode(
        &density,
        Params::from_vec(vec![0.0; D]),
        &full,
        &LbfgsConfig::default(),
    )
    .unwrap();
    println!(
        "centre: L-BFGS {} iterations, {} full-data gradients, max |grad| {:.1e}, {:.2} s",
        search.lbfgs.iterations,
        search.full_evaluations,
        search.lbfgs.max_abs_grad,
        t0.elapsed().as_secs_f64()
    );
    // The minibatches of one epoch.
    let mut order = full.clone();
    order.shuffle(&mut chain_rng(7, 1));
    let batches: Vec<Vec<u32>> = order.chunks_exact(BATCH).map(|c| c.to_vec()).collect();
    for scales in [1.0, 3.0] {
        let theta: Vec<f64> = cv
            .centre()
            .values()
            .iter()
            .enumerate()
            .map(|(j, v)| v + scales / (N as f64).sqrt() * if j % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let theta = Params::from_vec(theta);
        let plain = grad_variance(&density, &theta, &batches);
        let with_cv = grad_variance(&cv, &theta, &batches);
        println!(
            "gradient variance over {} minibatches of {BATCH}, {scales} posterior scales from the centre: \
             plain {plain:.3e}, CV {with_cv:.3e}, ratio {:.0}",
            batches.len(),
            plain / with_cv
        );
    }
    let config = SghmcConfig {
        step_size: 1e-2.into(),
        temperature: (1.0 / N as f64).into(),
        friction: 1.0,
        momenta: MomentaInit::Constant(0.0),
        ..SghmcConfig::default()
    };
    let mut g = c.benchmark_group("sgmcmc_cv");
    g.sample_size(50);
    {
        let t = Sghmc::new(&density, config.clone()).unwrap();
        let mut rng = chain_rng(0, 0);
        let mut s = t.init(cv.centre().clone(), &mut rng).unwrap();
        let mut k = 0;
        g.bench_function("sghmc_step", |b| {
            b.iter(|| {
                k = (k + 1) % batches.len();
                t.step(&mut s, black_box(&batches[k]), &mut rng).unwrap()
            })
        });
    }
    {
        let t = Sghmc::new(&cv, config).unwrap();
        let mut rng = chain_rng(0, 0);
        let mut s = t.init(cv.centre().clone(), &mut rng).unwrap();
        let mut k = 0;
        g.bench_function("sghmc_cv_step", |b| {
            b.iter(|| {
                k = (k + 1) % batches.len();
                t.step(&mut s, black_box(&batches[k]), &mut rng).unwrap()
            })
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
