//! langevin's side of the speed comparison with posteriors (PyTorch); see
//! `bench/posteriors/run.sh`, which alternates this binary with
//! `bench/posteriors/bench.py` and writes `bench/posteriors/RESULTS.md`.
//!
//! ```text
//! cargo run --release -p langevin --example bench_posteriors -- <workload> [reps] [steps]
//! ```
//!
//! Workloads: `mlp` (SGHMC step, MLP 784-256-256-10, batch 64, f32, with
//! langevin-models' hand-written MLP density; candle autograd for reference),
//! `laplace` (diagonal empirical-Fisher Laplace over 10 000 points of that
//! MLP, batches of 100; and per-example gradients of a 64-row batch), `vi`
//! (diagonal-Gaussian VI step on the MLP, one sample, Adam), `logreg` (SGHMC
//! step, logistic regression d = 20, batch 32), `chains` (1 000 SGHMC chains
//! of that logistic regression, one step of all of them), `matmul` (peak f32
//! matrix-product throughput through gemm and candle, in GFLOP/s).
//! Threads: `LANGEVIN_BENCH_THREADS` (default 1). Prints one JSON line per
//! variant with the median over `reps` blocks of `steps` steps.

use std::hint::black_box;
use std::time::Instant;

use candle_core::{Device, Tensor};
use langevin::core::{chain_rng, LogDensity, Params, Transform};
use langevin::curvature::PerExampleLogLik;
use langevin::ensemble::run_chains;
use langevin::laplace::{DiagFisherLaplace, LaplaceConfig};
use langevin::optim::Optimizer;
use langevin::samples::Thinning;
use langevin::sgmcmc::{
    BatchedLogistic, LogisticBatch, MomentaInit, NoiseSampler, ParallelSghmc, ParallelSghmcConfig,
    Sghmc, SghmcConfig,
};
use langevin::vi::{DiagVi, DiagViConfig};

#[path = "../benches/common/mod.rs"]
mod common;
use common::*;
#[path = "../benches/common/fast_mlp.rs"]
mod fast_mlp;
use fast_mlp::*;

const N_CHAINS: usize = 1000;
/// Initial `log sd` of the VI workload (both sides).
const VI_INIT_LOG_SD: f64 = -3.0;

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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// CPU time of the calling thread in seconds (Linux `/proc/thread-self/schedstat`;
/// NaN elsewhere). On a loaded machine this is steadier than wall time for
/// one-thread runs: it leaves out the time the thread waits for a core.
fn thread_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |ns| ns * 1e-9)
}

thread_local! {
    static CPU: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Time `reps` blocks of `steps` calls of `f` (after `steps` warm-up calls);
/// per-call wall seconds of each block (per-call thread CPU seconds go to `CPU`).
fn time_blocks(reps: usize, steps: usize, f: impl FnMut()) -> Vec<f64> {
    time_blocks_warmup(reps, steps, steps.max(3), f)
}

/// [`time_blocks`] with `warmup` untimed calls first.
fn time_blocks_warmup(reps: usize, steps: usize, warmup: usize, mut f: impl FnMut()) -> Vec<f64> {
    for _ in 0..warmup {
        f();
    }
    CPU.with(|c| c.borrow_mut().clear());
    (0..reps)
        .map(|_| {
            let c0 = thread_cpu_s();
            let t0 = Instant::now();
            for _ in 0..steps {
                f();
            }
            let wall = t0.elapsed().as_secs_f64() / steps as f64;
            let cpu = (thread_cpu_s() - c0) / steps as f64;
            CPU.with(|c| c.borrow_mut().push(cpu));
            wall
        })
        .collect()
}

fn report(workload: &str, variant: &str, threads: usize, per_step: Vec<f64>, extra: &str) {
    let med = median(per_step.clone());
    let cpu = CPU.with(|c| c.borrow().clone());
    let cpu_med = if cpu.len() == per_step.len() {
        median(cpu)
    } else {
        f64::NAN
    };
    let list: Vec<String> = per_step.iter().map(|t| format!("{t:.6e}")).collect();
    println!(
        "{{\"system\":\"langevin\",\"workload\":\"{workload}\",\"variant\":\"{variant}\",\"threads\":{threads},\"median_s\":{med:.6e},\"cpu_median_s\":{cpu_med:.6e},\"blocks_s\":[{}]{extra}}}",
        list.join(",")
    );
}

fn main() {
    let threads = threads_from_env();
    let args: Vec<String> = std::env::args().collect();
    let workload = args.get(1).map(String::as_str).unwrap_or("mlp");
    let reps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(7);
    let steps_arg: Option<usize> = args.get(3).and_then(|s| s.parse().ok());
    match workload {
        "mlp" | "mlp_step" => {
            // langevin-models' hand-written MLP density (the default for
            // MLPs). "mlp_step": only this SGHMC step (for profiling it alone).
            let steps = steps_arg.unwrap_or(50);
            let batch = fast_mlp_batch(&mlp_batch(1));
            let sghmc = Sghmc::new(fast_mlp_density(threads), config()).unwrap();
            let mut rng = chain_rng(0, 0);
            let mut state = sghmc.init(mlp_init(0), &mut rng).unwrap();
            let t = time_blocks(reps, steps, || {
                black_box(sghmc.step(&mut state, &batch, &mut rng).unwrap());
            });
            report("mlp", "sghmc_step", threads, t, "");
            if workload == "mlp_step" {
                return;
            }
            let params = mlp_init(0);
            let mut grad = vec![0.0; params.len()];
            let d = fast_mlp_density(threads);
            let t = time_blocks(reps, steps, || {
                black_box(d.value_and_grad(&params, &batch, &mut grad).unwrap());
            });
            report(
                "mlp",
                "value_and_grad",
                threads,
                t,
                &format!(",\"flops\":{:.6e}", mlp_flops()),
            );
            // The candle-autograd density, for reference.
            let steps = (steps / 5).max(1);
            let batch = mlp_batch(1);
            let sghmc = Sghmc::new(mlp_density(), config()).unwrap();
            let mut state = sghmc.init(mlp_init(0), &mut rng).unwrap();
            let t = time_blocks(reps, steps, || {
                black_box(sghmc.step(&mut state, &batch, &mut rng).unwrap());
            });
            report("mlp", "sghmc_step_candle", threads, t, "");
            let d = mlp_density();
            let t = time_blocks(reps, steps, || {
                black_box(d.value_and_grad(&params, &batch, &mut grad).unwrap());
            });
            report("mlp", "value_and_grad_candle", threads, t, "");
        }
        "laplace" => {
            // (4) Diagonal empirical-Fisher Laplace over LAPLACE_N points:
            // one pass = LAPLACE_N / LAPLACE_BATCH transform steps (the
            // transform calls PerExampleLogLik::diag_fisher, which MlpDensity
            // fuses: no per-example gradients are formed).
            let steps = steps_arg.unwrap_or(1);
            let batches = laplace_batches(2);
            let laplace =
                DiagFisherLaplace::new(fast_mlp_density(threads), LaplaceConfig::default())
                    .unwrap();
            let mut rng = chain_rng(0, 0);
            let params = mlp_init(0);
            let t = time_blocks_warmup(reps, steps, 1, || {
                let mut state = laplace.init(params.clone(), &mut rng).unwrap();
                for b in &batches {
                    black_box(laplace.step(&mut state, b, &mut rng).unwrap());
                }
                black_box(&state.prec_diag);
            });
            report(
                "laplace",
                "diag_fisher_pass",
                threads,
                t,
                &format!(",\"points\":{LAPLACE_N},\"batch\":{LAPLACE_BATCH}"),
            );
            // The model's fused call alone, without the transform
            // (MlpDensity::accumulate_diag_fisher, two matmuls per layer).
            let d = fast_mlp_density(threads);
            let t = time_blocks_warmup(reps, steps, 1, || {
                let mut prec = vec![0.0; params.len()];
                for b in &batches {
                    black_box(d.accumulate_diag_fisher(&params, b, &mut prec).unwrap());
                }
                black_box(&prec);
            });
            report(
                "laplace",
                "diag_fisher_pass_fused",
                threads,
                t,
                &format!(",\"points\":{LAPLACE_N},\"batch\":{LAPLACE_BATCH}"),
            );
            // Per-example gradients of one 64-row minibatch (outer-product trick).
            let batch = fast_mlp_batch(&mlp_batch(1));
            let d = fast_mlp_density(threads);
            let t = time_blocks(reps, 10, || {
                black_box(d.per_example(&params, &batch).unwrap());
            });
            report("laplace", "per_example_grads_b64", threads, t, "");
        }
        "vi" => {
            // (5) Diagonal-Gaussian VI step (one Monte Carlo sample, Adam).
            let steps = steps_arg.unwrap_or(50);
            let batch = fast_mlp_batch(&mlp_batch(1));
            let vi = DiagVi::new(
                fast_mlp_density(threads),
                DiagViConfig {
                    optimizer: Optimizer::adam(LR),
                    temperature: TEMPERATURE.into(),
                    n_samples: 1,
                    stick_the_landing: true,
                    init_log_sd: VI_INIT_LOG_SD,
                },
            )
            .unwrap();
            let mut rng = chain_rng(0, 0);
            let mut state = vi.init(mlp_init(0), &mut rng).unwrap();
            let t = time_blocks(reps, steps, || {
                black_box(vi.step(&mut state, &batch, &mut rng).unwrap());
            });
            report("vi", "diag_step", threads, t, "");
        }
        "logreg" => {
            let steps = steps_arg.unwrap_or(20_000);
            let batch = logreg_batch(1);
            let sghmc = Sghmc::new(logreg_fn_density(), config()).unwrap();
            let mut rng = chain_rng(0, 0);
            let mut state = sghmc.init(logreg_init(0), &mut rng).unwrap();
            let t = time_blocks(reps, steps, || {
                black_box(sghmc.step(&mut state, &batch, &mut rng).unwrap());
            });
            report("logreg", "sghmc_step_fn_density", threads, t, "");
            let sghmc = Sghmc::new(logreg_candle_density(), config()).unwrap();
            let mut state = sghmc.init(logreg_init(0), &mut rng).unwrap();
            let t = time_blocks(reps, (steps / 20).max(1), || {
                black_box(sghmc.step(&mut state, &batch, &mut rng).unwrap());
            });
            report("logreg", "sghmc_step_candle_density", threads, t, "");
        }
        "chains" | "chains_batched" => {
            // "chains_batched": only the default ParallelSghmc (for profiling it alone).
            let only_batched = workload == "chains_batched";
            let steps = steps_arg.unwrap_or(20);
            let batch = logreg_batch(1);
            let sghmc = Sghmc::new(logreg_fn_density(), config()).unwrap();
            // One step of all chains, states kept in a Vec, one RNG per chain.
            let mut rngs: Vec<_> = (0..N_CHAINS).map(|k| chain_rng(0, k as u64)).collect();
            let mut states: Vec<_> = rngs
                .iter_mut()
                .enumerate()
                .map(|(k, r)| sghmc.init(logreg_init(k as u64), r).unwrap())
                .collect();
            let inits: Vec<Params> = (0..N_CHAINS).map(|k| logreg_init(k as u64)).collect();
            if !only_batched {
                let t = time_blocks(reps, steps, || {
                    for (s, r) in states.iter_mut().zip(rngs.iter_mut()) {
                        black_box(sghmc.step(s, &batch, r).unwrap());
                    }
                });
                report(
                    "chains",
                    "sghmc_loop_fn_density",
                    threads,
                    t,
                    &format!(",\"chains\":{N_CHAINS}"),
                );
                // run_chains (rayon over chains), keeping only the final draw;
                // per step of all chains = total / steps.
                let t = time_blocks(reps, 1, || {
                    let thin = Thinning {
                        burn_in: steps as u64 - 1,
                        thin: 1,
                    };
                    let out = run_chains(&sghmc, inits.clone(), 0, steps as u64, thin, |_, _| {
                        batch.clone()
                    })
                    .unwrap();
                    black_box(out);
                });
                let t: Vec<f64> = t.into_iter().map(|x| x / steps as f64).collect();
                // The work runs on rayon's pool, not on this thread: no CPU figure.
                CPU.with(|c| c.borrow_mut().iter_mut().for_each(|x| *x = f64::NAN));
                report(
                    "chains",
                    "sghmc_run_chains_fn_density",
                    threads,
                    t,
                    &format!(",\"chains\":{N_CHAINS}"),
                );
            }
            // Batched: all chains as one K × d buffer, the logistic density
            // as two matrix products per block of chains (`BatchedLogistic`),
            // one fused update; per-chain RNG streams as above (`Ziggurat`:
            // the same normals as the loop above; `BoxMuller`, the default:
            // bulk vectorised draws). Blocks run on rayon's pool, so the
            // calling thread's CPU time is reported only at one thread.
            let lb = LogisticBatch::new(batch.x.clone(), batch.y.clone(), LOGREG_DIM).unwrap();
            let dens = BatchedLogistic::new(N_DATA, PRIOR_VAR).unwrap();
            let configs = [
                (256, NoiseSampler::BoxMuller),
                (256, NoiseSampler::Ziggurat),
                (N_CHAINS, NoiseSampler::BoxMuller),
            ];
            for &(rows, noise) in &configs[..if only_batched { 1 } else { configs.len() }] {
                let ps = ParallelSghmc::new(
                    &dens,
                    ParallelSghmcConfig {
                        sghmc: config(),
                        chains_per_call: rows,
                        noise,
                    },
                )
                .unwrap();
                let mut st = ps.init(&inits, 0).unwrap();
                let t = time_blocks(reps, steps * 5, || {
                    black_box(ps.step(&mut st, &lb).unwrap());
                });
                if threads > 1 {
                    CPU.with(|c| c.borrow_mut().iter_mut().for_each(|x| *x = f64::NAN));
                }
                report(
                    "chains",
                    &format!("parallel_sghmc_batched_logistic_rows{rows}_{noise:?}"),
                    threads,
                    t,
                    &format!(",\"chains\":{N_CHAINS}"),
                );
            }
        }
        "matmul" => {
            // (8) Peak f32 matrix-product throughput: gemm (what the MLP
            // density and candle call) on the calling thread(s), and candle's
            // own matmul; 1024³ and the MLP's first-layer shape.
            let steps = steps_arg.unwrap_or(10);
            let par = if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            };
            for (m, k, n) in [(1024, 1024, 1024), (64, 784, 256)] {
                let a: Vec<f32> = (0..m * k)
                    .map(|i| ((i % 97) as f32 - 48.0) * 0.01)
                    .collect();
                let b: Vec<f32> = (0..k * n)
                    .map(|i| ((i % 89) as f32 - 44.0) * 0.01)
                    .collect();
                let mut c = vec![0f32; m * n];
                let reps_steps = if m == 1024 { steps } else { steps * 200 };
                let t = time_blocks(reps, reps_steps, || {
                    // SAFETY: row-major m×k, k×n and m×n buffers of exactly those sizes.
                    unsafe {
                        gemm::gemm(
                            m,
                            n,
                            k,
                            c.as_mut_ptr(),
                            1,
                            n as isize,
                            false,
                            a.as_ptr(),
                            1,
                            k as isize,
                            b.as_ptr(),
                            1,
                            n as isize,
                            1.0,
                            1.0,
                            false,
                            false,
                            false,
                            par,
                        );
                    }
                    black_box(&c);
                });
                let flops = 2.0 * (m * k * n) as f64;
                let variant = if m == 1024 {
                    "gemm_f32_1024".to_string()
                } else {
                    format!("gemm_f32_{m}x{k}x{n}")
                };
                report(
                    "matmul",
                    &variant,
                    threads,
                    t,
                    &format!(",\"flops\":{flops:.6e}"),
                );
            }
            let n = 1024;
            let a = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu).unwrap();
            let b = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu).unwrap();
            let t = time_blocks(reps, steps, || {
                black_box(a.matmul(&b).unwrap());
            });
            let flops = 2.0 * (n as f64).powi(3);
            report(
                "matmul",
                "candle_f32_1024",
                threads,
                t,
                &format!(",\"flops\":{flops:.6e}"),
            );
        }
        other => {
            eprintln!("unknown workload {other}: use mlp, laplace, vi, logreg, chains or matmul");
            std::process::exit(2);
        }
    }
}
