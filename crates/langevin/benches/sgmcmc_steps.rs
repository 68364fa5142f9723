//! Per-step cost of every SGMCMC transform on a cheap analytic standard
//! Gaussian (`grad = -θ`), at d = 10, 10³, 10⁵, one thread. The density costs
//! about one multiply-add per parameter, so this isolates the update's own
//! cost (noise draws, the fused loop, the gradient buffer). Criterion's
//! throughput is in parameters: time per element = ns per parameter.
//!
//! Run: `cargo bench -p langevin --bench sgmcmc_steps`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use langevin::core::{chain_rng, LogDensity, Params, Transform};
use langevin::sgmcmc::{
    Baoa, BaoaConfig, Sghmc, SghmcConfig, Sgld, SgldConfig, Sgnht, SgnhtConfig,
};

mod common;
use common::*;

const DIMS: [usize; 3] = [10, 1_000, 100_000];

fn run<T: Transform<Batch = ()>>(c: &mut Criterion, name: &str, make: impl Fn() -> T) {
    let mut g = c.benchmark_group(format!("sgmcmc_step/{name}"));
    for d in DIMS {
        g.throughput(Throughput::Elements(d as u64));
        if d >= 100_000 {
            g.sample_size(30);
        } else {
            g.sample_size(60);
        }
        let t = make();
        let mut rng = chain_rng(0, 0);
        let init = Params::from_vec(vec![0.1; d]);
        let mut state = t.init(init, &mut rng).unwrap();
        g.bench_with_input(BenchmarkId::from_parameter(d), &d, |b, _| {
            b.iter(|| t.step(&mut state, black_box(&()), &mut rng).unwrap())
        });
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    threads_from_env();
    // The density alone, for reference (what every step below also pays).
    {
        let mut g = c.benchmark_group("sgmcmc_step/density_only");
        for d in DIMS {
            g.throughput(Throughput::Elements(d as u64));
            let dens = gauss_density();
            let p = Params::from_vec(vec![0.1; d]);
            let mut grad = vec![0.0; d];
            g.bench_with_input(BenchmarkId::from_parameter(d), &d, |b, _| {
                b.iter(|| dens.value_and_grad(black_box(&p), &(), &mut grad).unwrap())
            });
        }
        g.finish();
    }
    run(c, "sgld", || {
        Sgld::new(gauss_density(), SgldConfig::default()).unwrap()
    });
    run(c, "sghmc", || {
        Sghmc::new(gauss_density(), SghmcConfig::default()).unwrap()
    });
    run(c, "sgnht", || {
        Sgnht::new(gauss_density(), SgnhtConfig::default()).unwrap()
    });
    run(c, "baoa", || {
        Baoa::new(gauss_density(), BaoaConfig::default()).unwrap()
    });
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
