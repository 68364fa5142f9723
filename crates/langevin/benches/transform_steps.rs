//! Per-step cost of the non-SGMCMC transforms (optimisers, VI, Laplace, EKF)
//! and of parallel SGHMC, on cheap analytic models, one thread. The SGMCMC
//! family is in `sgmcmc_steps.rs`. Criterion's throughput is in parameters,
//! so "time per element" reads as ns per parameter.
//!
//! Sizes: d = 10, 10³, 10⁵ for every diagonal method and the optimisers;
//! d = 10, 10² and 10³ for the dense methods (dense VI, dense Fisher / GGN /
//! Hessian Laplace, dense EKF), whose state is a d × d matrix (at d = 10⁵
//! that is 80 GB) and whose step is O(d²)–O(d³); dense EKF at d = 10, 10²
//! only (8.4 s per step at d = 10³).
//!
//! Models (chosen so the transform, not the model, dominates):
//! * log density: standard Gaussian, value `−|θ|²/2`, gradient `−θ`;
//! * per-example log likelihoods (Fisher Laplace, EKF): n = 8 Gaussian terms
//!   `ℓᵢ = −|θ − cᵢ|²/2`;
//! * output model (GGN Laplace): a linear model `fᵢ = xᵢ·θ`, n = 8, Gaussian
//!   likelihood, Jacobian = the fixed 8 × d inputs;
//! * parallel SGHMC: K = 1 000 chains of logistic regression (B = 32) with
//!   [`BatchedLogistic`], d = 10, 20, 100 (per chain), throughput in K·d.
//!
//! Run: `cargo bench -p langevin --bench transform_steps`
//! (`-- --warm-up-time 0.5 --measurement-time 2` for a quicker pass).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use langevin::core::{chain_rng, Params, Transform};
use langevin::curvature::{FnOutputModel, FnPerExample, OutputLikelihood};
use langevin::ekf::{DenseEkf, DiagEkf, EkfConfig};
use langevin::laplace::{
    DenseFisherLaplace, DenseGgnLaplace, DenseHessianConfig, DenseHessianLaplace,
    DiagFisherLaplace, DiagGgnLaplace, LaplaceConfig,
};
use langevin::optim::{AdamConfig, Optim, OptimConfig, Optimizer, SgdConfig};
use langevin::sgmcmc::{
    BatchedLogistic, LogisticBatch, ParallelSghmc, ParallelSghmcConfig, SghmcConfig,
};
use langevin::vi::{DenseVi, DenseViConfig, DiagVi, DiagViConfig};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

mod common;
use common::*;

const DIAG_DIMS: [usize; 3] = [10, 1_000, 100_000];
const DENSE_DIMS: [usize; 3] = [10, 100, 1_000];
const N_EX: usize = 8;

fn run<T: Transform<Batch = ()>>(
    c: &mut Criterion,
    name: &str,
    dims: &[usize],
    make: impl Fn(usize) -> T,
) {
    let mut g = c.benchmark_group(format!("transform_step/{name}"));
    for &d in dims {
        g.throughput(Throughput::Elements(d as u64));
        g.sample_size(if d >= 1_000 { 10 } else { 50 });
        let t = make(d);
        let mut rng = chain_rng(0, 0);
        let init = Params::from_vec(vec![0.1; d]);
        let mut state = t.init(init, &mut rng).unwrap();
        g.bench_with_input(BenchmarkId::from_parameter(d), &d, |b, _| {
            b.iter(|| t.step(&mut state, black_box(&()), &mut rng).unwrap())
        });
    }
    g.finish();
}

type PerEx = FnPerExample<(), Box<dyn Fn(&[f64], &()) -> (Vec<f64>, Vec<f64>) + Send + Sync>>;

/// n = 8 Gaussian per-example terms `−|θ − cᵢ|²/2`, `cᵢ = 0.1 i`.
fn per_example() -> PerEx {
    FnPerExample::new(Box::new(|theta: &[f64], _: &()| {
        let d = theta.len();
        let mut values = Vec::with_capacity(N_EX);
        let mut grads = Vec::with_capacity(N_EX * d);
        for i in 0..N_EX {
            let c = 0.1 * i as f64;
            let mut v = 0.0;
            for t in theta {
                let r = t - c;
                v -= 0.5 * r * r;
                grads.push(-r);
            }
            values.push(v);
        }
        (values, grads)
    }))
}

type DynModel = Box<dyn Fn(&[f64], &()) -> (Vec<f64>, Vec<f64>) + Send + Sync>;
type OutModel = FnOutputModel<(), DynModel>;

/// Linear model `fᵢ = xᵢ·θ`, n = 8 fixed standard normal inputs, Gaussian likelihood.
fn output_model(d: usize) -> OutModel {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(d as u64);
    let x: Vec<f64> = (0..N_EX * d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let f: DynModel = Box::new(move |theta: &[f64], _: &()| {
        let f = x
            .chunks_exact(theta.len())
            .map(|row| row.iter().zip(theta).map(|(a, b)| a * b).sum())
            .collect();
        (f, x.clone())
    });
    FnOutputModel::new(1, OutputLikelihood::Gaussian { variance: 1.0 }, f).unwrap()
}

fn parallel_sghmc(c: &mut Criterion) {
    let k = 1_000;
    let mut g = c.benchmark_group("transform_step/parallel_sghmc_logistic_k1000_b32");
    for d in [10, 20, 100] {
        g.throughput(Throughput::Elements((k * d) as u64));
        g.sample_size(20);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let x: Vec<f64> = (0..32 * d)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let y: Vec<f64> = (0..32).map(|_| f64::from(rng.random::<bool>())).collect();
        let batch = LogisticBatch::new(x, y, d).unwrap();
        let ps = ParallelSghmc::new(
            BatchedLogistic::new(N_DATA, PRIOR_VAR).unwrap(),
            ParallelSghmcConfig {
                sghmc: SghmcConfig {
                    step_size: LR.into(),
                    temperature: TEMPERATURE.into(),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap();
        let inits: Vec<Params> = (0..k).map(|_| Params::from_vec(vec![0.01; d])).collect();
        let mut st = ps.init(&inits, 0).unwrap();
        g.bench_with_input(BenchmarkId::from_parameter(d), &d, |b, _| {
            b.iter(|| ps.step(&mut st, black_box(&batch)).unwrap())
        });
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    threads_from_env();
    let optim = |o: Optimizer| {
        move |_: usize| {
            Optim::new(
                gauss_density(),
                OptimConfig {
                    optimizer: o.clone(),
                    ..Default::default()
                },
            )
            .unwrap()
        }
    };
    run(
        c,
        "sgd_momentum",
        &DIAG_DIMS,
        optim(Optimizer::Sgd(SgdConfig {
            momentum: 0.9,
            ..Default::default()
        })),
    );
    run(
        c,
        "adam",
        &DIAG_DIMS,
        optim(Optimizer::Adam(AdamConfig::default())),
    );
    run(
        c,
        "adamw",
        &DIAG_DIMS,
        optim(Optimizer::Adam(AdamConfig {
            weight_decay: 1e-2,
            decoupled: true,
            ..Default::default()
        })),
    );
    run(c, "vi_diag", &DIAG_DIMS, |_| {
        DiagVi::new(gauss_density(), DiagViConfig::default()).unwrap()
    });
    run(c, "vi_dense", &DENSE_DIMS, |_| {
        DenseVi::new(gauss_density(), DenseViConfig::default()).unwrap()
    });
    run(c, "laplace_diag_fisher", &DIAG_DIMS, |_| {
        DiagFisherLaplace::new(per_example(), LaplaceConfig::default()).unwrap()
    });
    run(c, "laplace_diag_ggn", &DIAG_DIMS, |d| {
        DiagGgnLaplace::new(output_model(d), LaplaceConfig::default()).unwrap()
    });
    run(c, "laplace_dense_fisher", &DENSE_DIMS, |_| {
        DenseFisherLaplace::new(per_example(), LaplaceConfig::default()).unwrap()
    });
    run(c, "laplace_dense_ggn", &DENSE_DIMS, |d| {
        DenseGgnLaplace::new(output_model(d), LaplaceConfig::default()).unwrap()
    });
    run(c, "laplace_dense_hessian", &DENSE_DIMS, |_| {
        DenseHessianLaplace::new(gauss_density(), DenseHessianConfig::default()).unwrap()
    });
    run(c, "ekf_diag_fisher", &DIAG_DIMS, |_| {
        DiagEkf::new(per_example(), EkfConfig::default()).unwrap()
    });
    // Dense EKF: d = 10, 100 only; one step at d = 1 000 took 8.4 s here
    // (O(d³) with a large constant), too long for a routine bench run.
    run(c, "ekf_dense_fisher", &DENSE_DIMS[..2], |_| {
        DenseEkf::new(per_example(), EkfConfig::default()).unwrap()
    });
    parallel_sghmc(c);
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
