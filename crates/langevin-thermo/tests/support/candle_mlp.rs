//! A user-defined candle model for TNGD: a tanh MLP built from `candle_nn::Linear`
//! layers on the bundled digits, wrapped as the library expects — a
//! `langevin_core::CandleDensity` (the batch-averaged log posterior, for
//! gradients and Adam) and a `langevin::curvature::CandleOutputModel` (the
//! logits with a categorical likelihood, for Jacobian-free GGN-vector
//! products) — and a TNGD loop with `langevin_thermo::tngd::Tngd`.
//! Shared by `examples/tngd_candle.rs` and `tests/tngd_candle.rs`.
#![allow(dead_code)]

use candle_core::{DType, Device, Module, Tensor};
use langevin::curvature::{ggnvp, CandleOutputModel, OutputLikelihood, OutputModel};
use langevin_core::{chain_rng, LogDensity, ParamLayout, Params};
use langevin_thermo::tngd::{Dataset, Integrator, OuConfig, Tngd};
use rand_distr::{Distribution, Normal};

/// A minibatch: features `[n, d]` (f64) and labels `[n]` (u32).
pub struct CandleBatch {
    pub x: Tensor,
    pub y: Tensor,
}

impl CandleBatch {
    pub fn new(data: &Dataset, rows: &[usize]) -> candle_core::Result<Self> {
        let x: Vec<f64> = rows
            .iter()
            .flat_map(|&i| data.x[i * data.d..(i + 1) * data.d].iter().copied())
            .collect();
        let y: Vec<u32> = rows.iter().map(|&i| data.y[i] as u32).collect();
        Ok(Self {
            x: Tensor::from_vec(x, (rows.len(), data.d), &Device::Cpu)?,
            y: Tensor::from_vec(y, rows.len(), &Device::Cpu)?,
        })
    }

    pub fn rows(&self) -> usize {
        self.x.dims()[0]
    }
}

/// The network: `d → hidden (tanh) → k`, its parameters in the layout
/// `w1 [hidden, d], b1 [hidden], w2 [k, hidden], b2 [k]` (candle-nn's `Linear`
/// convention).
#[derive(Clone, Copy, Debug)]
pub struct Net {
    pub d: usize,
    pub hidden: usize,
    pub k: usize,
}

impl Net {
    pub fn layout(&self) -> ParamLayout {
        ParamLayout::new([
            ("w1", vec![self.hidden, self.d]),
            ("b1", vec![self.hidden]),
            ("w2", vec![self.k, self.hidden]),
            ("b2", vec![self.k]),
        ])
        .expect("layout")
    }

    /// Glorot-scaled normal weights, zero biases.
    pub fn init(&self, seed: u64) -> Params {
        let mut rng = chain_rng(seed, 0);
        let (h, d, k) = (self.hidden, self.d, self.k);
        let mut v = Vec::with_capacity(h * d + h + k * h + k);
        let n1 = Normal::new(0.0, (1.0 / d as f64).sqrt()).unwrap();
        v.extend((0..h * d).map(|_| n1.sample(&mut rng)));
        v.extend(std::iter::repeat_n(0.0, h));
        let n2 = Normal::new(0.0, (1.0 / h as f64).sqrt()).unwrap();
        v.extend((0..k * h).map(|_| n2.sample(&mut rng)));
        v.extend(std::iter::repeat_n(0.0, k));
        Params::new(self.layout(), v).expect("params")
    }
}

/// The logits `[n, k]` from the parameter tensors (in layout order).
pub fn logits(ts: &[Tensor], x: &Tensor) -> candle_core::Result<Tensor> {
    let l1 = candle_nn::Linear::new(ts[0].clone(), Some(ts[1].clone()));
    let l2 = candle_nn::Linear::new(ts[2].clone(), Some(ts[3].clone()));
    l2.forward(&l1.forward(x)?.tanh()?)
}

/// The objective's density: `mean log softmax(yᵢ) + log N(θ; 0, s² I) / n_train`.
pub fn density(
    prior_sd: f64,
    n_train: usize,
) -> langevin_core::CandleDensity<
    CandleBatch,
    impl Fn(&[Tensor], &CandleBatch) -> candle_core::Result<Tensor> + Send + Sync,
> {
    let w = 0.5 / (prior_sd * prior_sd * n_train as f64);
    langevin_core::CandleDensity::new(move |ts: &[Tensor], b: &CandleBatch| {
        let nll = candle_nn::loss::cross_entropy(&logits(ts, &b.x)?, &b.y)?;
        let mut sq = ts[0].sqr()?.sum_all()?;
        for t in &ts[1..] {
            sq = (sq + t.sqr()?.sum_all()?)?;
        }
        (nll.neg()? - (sq * w)?)?.to_dtype(DType::F64)
    })
    .with_dtype(DType::F64)
}

/// The logits with a categorical likelihood: the GGN's output model.
pub fn output_model() -> CandleOutputModel<
    CandleBatch,
    impl Fn(&[Tensor], &CandleBatch) -> candle_core::Result<Tensor> + Send + Sync,
> {
    CandleOutputModel::new(
        OutputLikelihood::Categorical,
        |ts: &[Tensor], b: &CandleBatch| logits(ts, &b.x),
    )
    .with_dtype(DType::F64)
}

/// `−ℓ(θ)` on `batch`.
pub fn loss<D: LogDensity<Batch = CandleBatch>>(d: &D, theta: &Params, batch: &CandleBatch) -> f64 {
    d.value(theta, batch).map(|(v, _)| -v).unwrap_or(f64::NAN)
}

/// Test accuracy of `theta` on `batch`.
pub fn accuracy(theta: &Params, batch: &CandleBatch) -> f64 {
    let om = output_model();
    let (out, k) = om.forward(theta, batch).expect("forward");
    let y = batch.y.to_vec1::<u32>().expect("labels");
    let hits = out
        .chunks_exact(k)
        .zip(&y)
        .filter(|(row, &lab)| {
            let best = (0..k).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            best == lab as usize
        })
        .count();
    hits as f64 / y.len().max(1) as f64
}

/// Settings of [`train_tngd`].
#[derive(Clone, Copy, Debug)]
pub struct TngdRun {
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub damping: f64,
    /// Analog time per step (τ).
    pub time: f64,
    pub prior_sd: f64,
    pub seed: u64,
}

/// What a training run gave: final parameters, the minibatch loss per step,
/// GGN-vector products, analog seconds (τ = 1 µs).
pub struct Run {
    pub theta: Params,
    pub losses: Vec<f64>,
    pub products: usize,
    pub analog_seconds: f64,
}

/// The minibatch rows of step `t` (a fixed cyclic order of shuffled rows).
pub fn rows_of_step(order: &[usize], batch: usize, t: usize) -> Vec<usize> {
    let n = order.len();
    let b = batch.min(n);
    (0..b).map(|i| order[(t * b + i) % n]).collect()
}

/// TNGD with the library's optimiser on the candle model: gradient from the
/// `CandleDensity`, curvature `G/B + I/(N s²)` from `ggnvp` of the
/// `CandleOutputModel`, the device simulated by Euler-Maruyama with the step
/// `1/(1.5 λ̂)` (`λ̂` by 3 warm-started power iterations per step).
pub fn train_tngd(data: &Dataset, net: Net, order: &[usize], cfg: TngdRun) -> anyhow::Result<Run> {
    let dens = density(cfg.prior_sd, data.n);
    let om = output_model();
    let mut theta = net.init(cfg.seed);
    let p = theta.len();
    let prior_prec = 1.0 / (cfg.prior_sd * cfg.prior_sd * data.n as f64);
    let ou = OuConfig {
        time: cfg.time,
        ..OuConfig::default()
    };
    let mut opt = Tngd::new(p, cfg.damping, ou, 1e-6, cfg.seed)?;
    let mut grad = vec![0.0; p];
    let mut eig: Vec<f64> = (0..p).map(|i| 1.0 + 0.1 * (i as f64).sin()).collect();
    let mut products = 0usize;
    let mut losses = Vec::with_capacity(cfg.steps);
    for t in 0..cfg.steps {
        let b = CandleBatch::new(data, &rows_of_step(order, cfg.batch, t))?;
        let (lp, ()) = dens.value_and_grad(&theta, &b, &mut grad)?;
        losses.push(-lp);
        let g: Vec<f64> = grad.iter().map(|x| -x).collect();
        let before = theta.clone();
        let rows = b.rows() as f64;
        let count = std::cell::Cell::new(0usize);
        let gvp = |v: &[f64], out: &mut [f64]| {
            count.set(count.get() + 1);
            let gv = ggnvp(&om, &before, &b, v).expect("GGN-vector product");
            for ((o, gi), vi) in out.iter_mut().zip(&gv).zip(v) {
                *o = gi / rows + prior_prec * vi;
            }
        };
        // λ̂ by power iteration, then the Euler-Maruyama step.
        let mut w = vec![0.0; p];
        let mut lam = 0.0;
        for _ in 0..if t == 0 { 20 } else { 3 } {
            let nrm = eig.iter().map(|x| x * x).sum::<f64>().sqrt();
            eig.iter_mut().for_each(|x| *x /= nrm);
            gvp(&eig, &mut w);
            lam = eig.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>();
            eig.copy_from_slice(&w);
        }
        let dt = 1.0 / (1.5 * (lam + opt.damping()));
        opt.set_ou(OuConfig {
            integrator: Integrator::EulerMaruyama { dt },
            ..ou
        })?;
        opt.step(theta.values_mut(), &g, gvp, cfg.lr)?;
        products += count.get();
    }
    Ok(Run {
        theta,
        losses,
        products,
        analog_seconds: opt.analog_seconds(),
    })
}

/// Adam (the library's `langevin::optim`) over the same minibatches from the same start.
pub fn train_adam(
    data: &Dataset,
    net: Net,
    order: &[usize],
    cfg: TngdRun,
    lr: f64,
) -> anyhow::Result<Run> {
    use langevin::optim::{Optim, OptimConfig, Optimizer};
    use langevin_core::Transform;
    let t = Optim::new(
        density(cfg.prior_sd, data.n),
        OptimConfig {
            optimizer: Optimizer::adam(lr),
            ..OptimConfig::default()
        },
    )?;
    let mut rng = chain_rng(cfg.seed, 1);
    let mut state = t.init(net.init(cfg.seed), &mut rng)?;
    let mut losses = Vec::with_capacity(cfg.steps);
    for s in 0..cfg.steps {
        let b = CandleBatch::new(data, &rows_of_step(order, cfg.batch, s))?;
        losses.push(-t.step(&mut state, &b, &mut rng)?.value);
    }
    Ok(Run {
        theta: state.params,
        losses,
        products: 0,
        analog_seconds: 0.0,
    })
}
