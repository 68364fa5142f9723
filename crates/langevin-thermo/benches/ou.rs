//! Criterion benchmarks: exact OU sampling per step and thermodynamic solve.

use criterion::{criterion_group, criterion_main, Criterion};
use faer::{Mat, Par};
use langevin_core::rng::chain_rng;
use langevin_thermo::linalg::{self, ThermoConfig};
use langevin_thermo::ou::OuProcess;

fn bench(c: &mut Criterion) {
    faer::set_global_parallelism(Par::Seq);
    let mut g = c.benchmark_group("ou");
    g.sample_size(10);
    for d in [10usize, 100] {
        let a = linalg::wishart(d, 2 * d, &mut chain_rng(d as u64, 0))
            + Mat::from_fn(d, d, |i, j| if i == j { 0.5 } else { 0.0 });
        let dm = Mat::from_fn(d, d, |i, j| if i == j { 2.0 } else { 0.0 });
        let ts: Vec<f64> = (0..=1000).map(|k| k as f64 * 0.1).collect();
        let mut p = OuProcess::new(a.as_ref(), &vec![0.0; d], dm.as_ref()).unwrap();
        let x0 = vec![0.0; d];
        let mut rng = chain_rng(0, 0);
        // Warm the transition cache: the timing is the per-step cost (1000 steps).
        p.sample(&ts, &x0, &mut rng).unwrap();
        g.bench_function(format!("sample_1000_steps_d{d}_cached"), |bch| {
            bch.iter(|| p.sample(&ts, &x0, &mut rng).unwrap())
        });
        g.bench_function(format!("setup_d{d}"), |bch| {
            bch.iter(|| {
                let p = OuProcess::new(a.as_ref(), &vec![0.0; d], dm.as_ref()).unwrap();
                p.compute_transition(0.1).unwrap()
            })
        });
    }
    let a = linalg::wishart(50, 100, &mut chain_rng(50, 0))
        + Mat::from_fn(50, 50, |i, j| if i == j { 0.5 } else { 0.0 });
    let b = vec![1.0; 50];
    let cfg = ThermoConfig {
        analog_time: 10_000.0,
        sampling_interval: 1.0,
        burn_in: 0.0,
        beta: 2.0,
        ..Default::default()
    };
    g.bench_function("solve_d50_10000_readouts", |bch| {
        bch.iter(|| linalg::solve(a.as_ref(), &b, &cfg).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
