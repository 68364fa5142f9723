//! The foundation issue's speed requirement: on an MLP 784-256-256-10 (ReLU,
//! softmax cross-entropy, Gaussian prior, batch-averaged log posterior),
//! batch 64, f32, one thread, a full `Sghmc::step` must cost at most 1.3× the
//! value-and-gradient evaluation alone. The density is langevin-models'
//! hand-written MLP (`MlpDensity`, what `Model::density` gives an MLP on the
//! CPU); the candle-autograd variant is timed in `bench_posteriors mlp`.
//!
//! Run: `cargo bench -p langevin --bench sghmc_mlp`. One thread by default
//! (RAYON_NUM_THREADS and CANDLE_NUM_THREADS are set to 1 before candle
//! starts); `LANGEVIN_BENCH_THREADS=n` changes that. After the two criterion
//! groups, the bench prints the measured ratio step / value_and_grad from its
//! own interleaved timing (medians of alternating blocks).

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use langevin::core::{chain_rng, LogDensity, Transform};
use langevin::sgmcmc::{MomentaInit, Sghmc, SghmcConfig};

mod common;
use common::*;
#[path = "common/fast_mlp.rs"]
mod fast_mlp;
use fast_mlp::*;

fn config() -> SghmcConfig {
    SghmcConfig {
        step_size: LR.into(),
        temperature: TEMPERATURE.into(),
        friction: ALPHA,
        beta: BETA,
        sigma: SIGMA,
        momenta: MomentaInit::Normal,
    }
}

fn bench(c: &mut Criterion) {
    let threads = threads_from_env();
    let batch = fast_mlp_batch(&mlp_batch(1));
    let params = mlp_init(0);
    let dim = params.len();

    let mut g = c.benchmark_group(format!("sghmc_mlp_784_256_256_10_b64_f32_{threads}thr"));
    g.throughput(Throughput::Elements(1));
    g.sample_size(30);

    let density = fast_mlp_density(threads);
    let mut grad = vec![0.0; dim];
    g.bench_function("value_and_grad", |b| {
        b.iter(|| {
            density
                .value_and_grad(black_box(&params), &batch, &mut grad)
                .unwrap()
        })
    });

    let sghmc = Sghmc::new(fast_mlp_density(threads), config()).unwrap();
    let mut rng = chain_rng(0, 0);
    let mut state = sghmc.init(params.clone(), &mut rng).unwrap();
    g.bench_function("sghmc_step", |b| {
        b.iter(|| sghmc.step(&mut state, black_box(&batch), &mut rng).unwrap())
    });
    g.finish();

    // Interleaved blocks: the ratio from one noisy machine is only meaningful
    // when both sides see the same load.
    let blocks = 15;
    let per_block = 5;
    let mut t_vg = Vec::with_capacity(blocks);
    let mut t_step = Vec::with_capacity(blocks);
    let mut c_vg = Vec::with_capacity(blocks);
    let mut c_step = Vec::with_capacity(blocks);
    let per = per_block as f64;
    for _ in 0..blocks {
        let (c0, t0) = (thread_cpu_s(), Instant::now());
        for _ in 0..per_block {
            black_box(density.value_and_grad(&params, &batch, &mut grad).unwrap());
        }
        t_vg.push(t0.elapsed().as_secs_f64() / per);
        c_vg.push((thread_cpu_s() - c0) / per);
        let (c0, t0) = (thread_cpu_s(), Instant::now());
        for _ in 0..per_block {
            black_box(sghmc.step(&mut state, &batch, &mut rng).unwrap());
        }
        t_step.push(t0.elapsed().as_secs_f64() / per);
        c_step.push((thread_cpu_s() - c0) / per);
    }
    let (vg, st) = (median(&mut t_vg), median(&mut t_step));
    let (cvg, cst) = (median(&mut c_vg), median(&mut c_step));
    println!(
        "sghmc_mlp: threads={threads} dim={dim} wall: value_and_grad {:.3} ms, sghmc_step {:.3} ms, ratio {:.3}; \
         thread CPU: value_and_grad {:.3} ms, sghmc_step {:.3} ms, ratio {:.3} (requirement: ratio <= 1.3)",
        vg * 1e3,
        st * 1e3,
        st / vg,
        cvg * 1e3,
        cst * 1e3,
        cst / cvg
    );
}

/// CPU time of the calling thread (Linux `/proc/thread-self/schedstat`; NaN
/// elsewhere): steadier than wall time on a loaded machine at one thread.
fn thread_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |ns| ns * 1e-9)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
