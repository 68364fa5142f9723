//! Workloads shared by the criterion benches and the `bench_posteriors`
//! example (which compares langevin with posteriors/PyTorch).
//!
//! Every workload is defined identically in `bench/posteriors/bench.py`:
//! same shapes, same batch-averaged log posterior, same hyper-parameters.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use langevin::core::{CandleDensity, FnDensity, ParamLayout, Params};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// Layer widths of the MLP: 784-256-256-10.
pub const MLP_SIZES: [usize; 4] = [784, 256, 256, 10];
/// Minibatch size of the MLP workload.
pub const MLP_BATCH: usize = 64;
/// Nominal data-set size N (the prior enters as `log prior / N`).
pub const N_DATA: f64 = 60_000.0;
/// Prior variance of every parameter (isotropic Gaussian prior).
pub const PRIOR_VAR: f64 = 1.0;

/// SGHMC hyper-parameters used on both sides (posteriors' names).
pub const LR: f64 = 1e-3;
pub const ALPHA: f64 = 0.01;
pub const BETA: f64 = 0.0;
pub const SIGMA: f64 = 1.0;
/// Temperature 1/N: sampling the posterior with a batch-averaged log posterior.
pub const TEMPERATURE: f64 = 1.0 / N_DATA;

/// Logistic regression: dimension and batch size.
pub const LOGREG_DIM: usize = 20;
pub const LOGREG_BATCH: usize = 32;

/// Set the thread count of rayon and of candle (its gemm and its barrier
/// pool read these variables once, at first use). Call before any candle op.
pub fn set_threads(n: usize) {
    let s = n.to_string();
    std::env::set_var("RAYON_NUM_THREADS", &s);
    std::env::set_var("CANDLE_NUM_THREADS", &s);
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
}

/// Threads from `LANGEVIN_BENCH_THREADS` (default 1), applied with [`set_threads`].
pub fn threads_from_env() -> usize {
    let n = std::env::var("LANGEVIN_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1);
    set_threads(n);
    n
}

/// The MLP's parameter layout: (in, out) weights and biases, in ravel order.
pub fn mlp_layout() -> ParamLayout {
    let s = MLP_SIZES;
    ParamLayout::new([
        ("w1", vec![s[0], s[1]]),
        ("b1", vec![s[1]]),
        ("w2", vec![s[1], s[2]]),
        ("b2", vec![s[2]]),
        ("w3", vec![s[2], s[3]]),
        ("b3", vec![s[3]]),
    ])
    .expect("valid layout")
}

/// He-style random initial parameters.
pub fn mlp_init(seed: u64) -> Params {
    let layout = mlp_layout();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(layout.len());
    for spec in layout.specs() {
        let fan_in = spec.shape[0] as f64;
        let scale = if spec.shape.len() == 2 {
            (2.0 / fan_in).sqrt()
        } else {
            0.0
        };
        for _ in 0..spec.numel() {
            let z: f64 = StandardNormal.sample(&mut rng);
            values.push(scale * z);
        }
    }
    Params::new(layout, values).expect("matching length")
}

/// One MLP minibatch: inputs (B, 784) f32, labels (B,) u32.
pub struct MlpBatch {
    pub x: Tensor,
    pub y: Tensor,
}

/// A random minibatch (standard normal pixels, uniform labels).
pub fn mlp_batch(seed: u64) -> MlpBatch {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f32> = (0..MLP_BATCH * MLP_SIZES[0])
        .map(|_| {
            let z: f64 = StandardNormal.sample(&mut rng);
            z as f32
        })
        .collect();
    let y: Vec<u32> = (0..MLP_BATCH)
        .map(|_| rng.random_range(0..MLP_SIZES[3] as u32))
        .collect();
    MlpBatch {
        x: Tensor::from_vec(x, (MLP_BATCH, MLP_SIZES[0]), &Device::Cpu).expect("x"),
        y: Tensor::from_vec(y, MLP_BATCH, &Device::Cpu).expect("y"),
    }
}

type MlpFn = fn(&[Tensor], &MlpBatch) -> candle_core::Result<Tensor>;

/// Batch-averaged log posterior of the MLP: `-mean CE + log prior / N`
/// (ReLU hidden layers, softmax cross-entropy, N(0, PRIOR_VAR) prior).
fn mlp_log_posterior(ts: &[Tensor], b: &MlpBatch) -> candle_core::Result<Tensor> {
    let h = b.x.matmul(&ts[0])?.broadcast_add(&ts[1])?.relu()?;
    let h = h.matmul(&ts[2])?.broadcast_add(&ts[3])?.relu()?;
    let logits = h.matmul(&ts[4])?.broadcast_add(&ts[5])?;
    let nll = candle_nn::loss::cross_entropy(&logits, &b.y)?;
    let mut sq = ts[0].sqr()?.sum_all()?;
    for t in &ts[1..] {
        sq = (sq + t.sqr()?.sum_all()?)?;
    }
    let log_prior_over_n = (sq * (-0.5 / (PRIOR_VAR * N_DATA)))?;
    log_prior_over_n - nll
}

/// The MLP log posterior as an f32 candle density.
pub fn mlp_density() -> CandleDensity<MlpBatch, MlpFn> {
    CandleDensity::new(mlp_log_posterior as MlpFn)
}

/// FLOPs of one value-and-gradient evaluation of the MLP: forward matmuls,
/// weight gradients, and activation gradients of layers 2 and 3 (the input
/// gradient of layer 1 is not needed). Element-wise work is not counted.
pub fn mlp_flops() -> f64 {
    let s = MLP_SIZES;
    let b = MLP_BATCH as f64;
    let mm = |k: usize, n: usize| 2.0 * b * k as f64 * n as f64;
    let fwd = mm(s[0], s[1]) + mm(s[1], s[2]) + mm(s[2], s[3]);
    let act_grad = mm(s[1], s[2]) + mm(s[2], s[3]);
    2.0 * fwd + act_grad
}

/// Logistic-regression minibatch (f64, row-major x of shape (B, d); y in {0, 1}).
#[derive(Clone)]
pub struct LogregBatch {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    pub xt: Tensor,
    pub yt: Tensor,
}

pub fn logreg_batch(seed: u64) -> LogregBatch {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let d = LOGREG_DIM;
    let truth: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
    let mut x = Vec::with_capacity(LOGREG_BATCH * d);
    let mut y = Vec::with_capacity(LOGREG_BATCH);
    for _ in 0..LOGREG_BATCH {
        let row: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
        let z: f64 = row.iter().zip(&truth).map(|(a, b)| a * b).sum();
        let p = 1.0 / (1.0 + (-z).exp());
        y.push(if rng.random::<f64>() < p { 1.0 } else { 0.0 });
        x.extend(row);
    }
    let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let yf: Vec<f32> = y.iter().map(|&v| v as f32).collect();
    LogregBatch {
        xt: Tensor::from_vec(xf, (LOGREG_BATCH, d), &Device::Cpu).expect("x"),
        yt: Tensor::from_vec(yf, LOGREG_BATCH, &Device::Cpu).expect("y"),
        x,
        y,
    }
}

type LogregFn = fn(&[f64], &LogregBatch, &mut [f64]) -> f64;

/// `mean_i [y_i z_i - softplus(z_i)] - |θ|² / (2 N PRIOR_VAR)` with its
/// analytic gradient, in f64.
fn logreg_log_posterior(theta: &[f64], b: &LogregBatch, grad: &mut [f64]) -> f64 {
    let d = theta.len();
    let inv_b = 1.0 / b.y.len() as f64;
    let prior = 1.0 / (PRIOR_VAR * N_DATA);
    let mut value = 0.0;
    for (g, t) in grad.iter_mut().zip(theta) {
        *g = -prior * t;
        value -= 0.5 * prior * t * t;
    }
    for (row, &y) in b.x.chunks_exact(d).zip(&b.y) {
        let z: f64 = row.iter().zip(theta).map(|(a, t)| a * t).sum();
        // softplus(z) = max(z, 0) + log1p(exp(-|z|))
        let sp = z.max(0.0) + (-z.abs()).exp().ln_1p();
        value += inv_b * (y * z - sp);
        let r = inv_b * (y - 1.0 / (1.0 + (-z).exp()));
        for (g, a) in grad.iter_mut().zip(row) {
            *g += r * a;
        }
    }
    value
}

/// Logistic regression with a hand-written gradient (no autograd).
pub fn logreg_fn_density() -> FnDensity<LogregBatch, LogregFn> {
    FnDensity::new(logreg_log_posterior as LogregFn)
}

type LogregCandleFn = fn(&[Tensor], &LogregBatch) -> candle_core::Result<Tensor>;

/// The same log posterior through candle autograd (f32).
fn logreg_candle_log_posterior(ts: &[Tensor], b: &LogregBatch) -> candle_core::Result<Tensor> {
    let z = b.xt.matmul(&ts[0].unsqueeze(1)?)?.squeeze(1)?;
    let softplus = (z.exp()? + 1.0)?.log()?;
    let loglik = ((&b.yt * &z)? - softplus)?.mean_all()?;
    let log_prior_over_n = (ts[0].sqr()?.sum_all()? * (-0.5 / (PRIOR_VAR * N_DATA)))?;
    loglik + log_prior_over_n
}

pub fn logreg_candle_density() -> CandleDensity<LogregBatch, LogregCandleFn> {
    CandleDensity::new(logreg_candle_log_posterior as LogregCandleFn)
}

pub fn logreg_init(seed: u64) -> Params {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f64> = (0..LOGREG_DIM)
        .map(|_| {
            let z: f64 = StandardNormal.sample(&mut rng);
            0.1 * z
        })
        .collect();
    Params::new(ParamLayout::vector("w", LOGREG_DIM), v).expect("layout")
}

/// A cheap analytic standard Gaussian: value `-|θ|²/2`, gradient `-θ`.
pub type GaussFn = fn(&[f64], &(), &mut [f64]) -> f64;

fn gauss(theta: &[f64], _: &(), grad: &mut [f64]) -> f64 {
    let mut v = 0.0;
    for (g, t) in grad.iter_mut().zip(theta) {
        *g = -t;
        v -= 0.5 * t * t;
    }
    v
}

pub fn gauss_density() -> FnDensity<(), GaussFn> {
    FnDensity::new(gauss as GaussFn)
}

/// f32 dtype used by the candle workloads.
pub const DTYPE: DType = DType::F32;
