//! `langevin fit`: Bayesian learning on a CSV file or a bundled data set.
//!
//! Pipeline: load the table, split it (seeded), standardise features (and a
//! regression target) with training statistics, build the model's
//! batch-averaged log posterior, run `--chains` chains of the chosen sampler
//! in parallel at temperature T = 1/N (T = 0 for `--method map`), append the
//! kept draws to `samples.csv`, then summarise (ESS, R-hat), evaluate the
//! posterior predictive on the held-out rows, plot, and write `summary.json`
//! last (atomically).
//!
//! Reproducibility: chain `c` draws every random number (initial point,
//! momenta, minibatch order, noise) from `chain_rng(seed, c)`; the split uses
//! its own stream of the same seed. The result does not depend on the number
//! of threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use langevin::sgmcmc::{
    Baoa, BaoaConfig, MomentaInit, Sghmc, SghmcConfig, Sgld, SgldConfig, Sgnht, SgnhtConfig,
};
use langevin_core::{chain_rng, ChainRng, Transform, TransformState};
use langevin_models::bundled;
use langevin_models::data::{Dataset, Split, Standardizer};
use langevin_models::{Batch, Model, ModelKind, ModelSpec, Noise, Task};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::checkpoint::{ChainCheckpoint, Checkpoint, Cursor, CHECKPOINT_FILE, CHECKPOINT_VERSION};
use crate::evaluate::{classification_metrics, predictive, regression_metrics, Predictive};
use crate::exit::{bad_input, Diverged};
use crate::runio::{num, write_json_atomic, RunMeta, SamplesWriter, RUN_VERSION};

/// The bundled data set used when `--data` is not given.
pub const DEFAULT_DATA: &str = "iris_virginica";

/// Most draws used for the posterior predictive.
const MAX_PREDICTIVE_DRAWS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MethodArg {
    Sgld,
    Sghmc,
    Sgnht,
    Baoa,
    Map,
    // Gaussian approximations (crate::gaussian): fitted, then sampled.
    /// Diagonal-Gaussian variational inference.
    Vi,
    /// Dense-Gaussian variational inference.
    ViDense,
    /// Laplace at the MAP, diagonal empirical Fisher.
    LaplaceDiagFisher,
    /// Laplace at the MAP, dense empirical Fisher.
    LaplaceDenseFisher,
    /// Laplace at the MAP, diagonal generalised Gauss-Newton.
    LaplaceDiagGgn,
    /// Laplace at the MAP, dense generalised Gauss-Newton.
    LaplaceDenseGgn,
    /// Laplace at the MAP, dense Hessian.
    LaplaceHessian,
    /// Diagonal extended Kalman filter.
    Ekf,
    /// Dense extended Kalman filter.
    EkfDense,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelArg {
    Linear,
    Logistic,
    Softmax,
    Mlp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskArg {
    Classification,
    Regression,
}

/// Arguments of `langevin fit`.
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
pub struct FitArgs {
    /// CSV file with a header row, or a bundled data set: iris_virginica (default),
    /// iris, wine, breast_cancer, diabetes, digits.
    #[arg(long)]
    pub data: Option<String>,
    /// Target column (default for a bundled set: its target).
    #[arg(long)]
    pub target: Option<String>,
    /// Model (default: logistic for a two-class integer target, softmax for up
    /// to 20 integer classes, else linear).
    #[arg(long, value_enum)]
    pub model: Option<ModelArg>,
    /// Task of an MLP (default: classification for an integer target with at
    /// most 20 distinct values, else regression).
    #[arg(long, value_enum)]
    pub task: Option<TaskArg>,
    /// Hidden layer widths of the MLP, comma-separated.
    #[arg(long, default_value = "64,64")]
    pub hidden: String,
    /// Sampler, or `map` (the same SGHMC machinery at temperature 0).
    #[arg(long, value_enum, default_value = "sghmc")]
    pub method: MethodArg,
    /// Standard deviation of the Gaussian prior on every parameter.
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    pub prior_sd: f64,
    /// Fix the regression noise sd (in standardised target units) instead of learning it.
    #[arg(long, allow_hyphen_values = true)]
    pub noise_sd: Option<f64>,
    /// Step size ε (posteriors' `lr`). Default: see `docs/cli.md`.
    #[arg(long, allow_hyphen_values = true)]
    pub step_size: Option<f64>,
    /// Friction α of SGHMC, SGNHT and BAOA.
    #[arg(long, allow_hyphen_values = true)]
    pub friction: Option<f64>,
    /// Steps per chain.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Steps discarded at the start of each chain (default: a quarter of --steps).
    #[arg(long)]
    pub burn_in: Option<u64>,
    /// Keep every K-th step after burn-in (default: at most 1000 draws per chain).
    #[arg(long)]
    pub thin: Option<u64>,
    /// Number of chains, run in parallel (default 4; 1 for map).
    #[arg(long)]
    pub chains: Option<usize>,
    /// Minibatch size (default: MLP 128; other models all training rows up to 2000, else 256).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Fraction of rows held out for the test metrics; 0 fits on every row
    /// (metrics are then on the training rows).
    #[arg(long, default_value_t = 0.2, allow_hyphen_values = true)]
    pub test_fraction: f64,
    /// Seed of the split and of every chain.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory (default: runs/<UTC timestamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Do not standardise features (and a regression target).
    #[arg(long)]
    pub no_standardize: bool,
    /// Stop with exit code 3 after this many divergent (non-finite) steps in a chain.
    #[arg(long, default_value_t = 100)]
    pub max_divergences: u64,
    /// Skip the PNG plots.
    #[arg(long)]
    pub no_plots: bool,
    /// No progress bar and no report on stdout.
    #[arg(long, short)]
    pub quiet: bool,
    /// Worker threads for the chains (default: the number of cores, at most
    /// --chains). The draws do not depend on it.
    #[arg(long)]
    #[serde(skip)]
    pub threads: Option<usize>,
    /// Save the full state of every chain to DIR/checkpoint.json (atomically)
    /// every N steps, so that `--resume DIR` can continue the run after a crash.
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// Continue the checkpointed run in DIR (every other option comes from its
    /// checkpoint; only --quiet and --no-plots may be given). The result is
    /// byte-identical to an uninterrupted run.
    #[arg(long, value_name = "DIR", conflicts_with_all = RESUME_CONFLICTS)]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
}

/// Options fixed by a checkpoint, so not allowed with `--resume`.
const RESUME_CONFLICTS: [&str; 21] = [
    "data",
    "target",
    "model",
    "task",
    "hidden",
    "method",
    "prior_sd",
    "noise_sd",
    "step_size",
    "friction",
    "steps",
    "burn_in",
    "thin",
    "chains",
    "batch_size",
    "test_fraction",
    "seed",
    "out",
    "no_standardize",
    "max_divergences",
    "checkpoint_every",
];

/// The configuration as resolved (defaults filled in); saved in run.json and summary.json.
#[derive(Debug, Clone, Serialize)]
pub struct FitConfig {
    pub data: String,
    pub target: String,
    pub model: ModelKind,
    pub task: String,
    pub hidden: Vec<usize>,
    pub method: MethodArg,
    pub prior_sd: f64,
    pub noise_sd: Option<f64>,
    pub step_size: f64,
    pub friction: f64,
    pub temperature: f64,
    pub steps: u64,
    pub burn_in: u64,
    pub thin: u64,
    pub chains: usize,
    pub batch_size: usize,
    pub test_fraction: f64,
    pub seed: u64,
    pub standardize: bool,
    pub max_divergences: u64,
    pub n_rows: usize,
    pub n_train: usize,
    pub n_test: usize,
    pub metrics_on: &'static str,
}

/// Default step size ε per method (batch-averaged log posterior, standardised data).
/// (Capped for stability by [`stable_step_size`] when the curvature is high.)
pub fn default_step_size(method: MethodArg) -> f64 {
    match method {
        MethodArg::Sgld => 1e-2,
        MethodArg::Sghmc | MethodArg::Sgnht | MethodArg::Baoa | MethodArg::Map => 1e-1,
        m => crate::gaussian::default_step_size(m),
    }
}

/// Default friction α per method: 0.1 for classification (tuned on the
/// default data set against NUTS, docs/cli.md), 1 for regression (whose noise
/// scale makes the curvature high, so the step size must shrink and more
/// damping mixes faster).
pub fn default_friction(method: MethodArg, classification: bool) -> f64 {
    match method {
        MethodArg::Sgld => 0.0,
        MethodArg::Sghmc | MethodArg::Sgnht | MethodArg::Baoa if classification => 0.1,
        MethodArg::Sghmc | MethodArg::Sgnht | MethodArg::Baoa | MethodArg::Map => 1.0,
        _ => 0.0,
    }
}

/// The largest default step size that keeps the integrator stable with a
/// margin, for a largest curvature `c` of the batch-averaged negative log
/// posterior and friction `alpha`:
///
/// * SGHMC and SGNHT (explicit Euler on (θ, m)): a mode of curvature c is
///   stable for ε c < α, and its variance is inflated by about ε c / α;
///   we take ε ≤ α / (4 c) (a margin for the curvature growing away from the
///   starting point, as a regression's noise scale shrinks);
/// * SGLD: stable for ε c < 2, we take ε ≤ 0.5 / c;
/// * BAOA (leapfrog-like): stable for ε √c < 2, we take ε ≤ 0.5 / √c;
/// * MAP (heavy ball with learning rate ε², momentum 1 − εα): ε ≤ 1 / √c.
pub fn stable_step_size(method: MethodArg, c: f64, alpha: f64) -> f64 {
    if !(c.is_finite() && c > 0.0) {
        return f64::INFINITY;
    }
    match method {
        MethodArg::Sghmc | MethodArg::Sgnht => alpha / (4.0 * c),
        MethodArg::Sgld => 0.5 / c,
        MethodArg::Baoa => 0.5 / c.sqrt(),
        MethodArg::Map => 1.0 / c.sqrt(),
        _ => f64::INFINITY,
    }
}

/// Largest eigenvalue of the Hessian of the negative batch-averaged log
/// posterior near its mode, on the full training batch (f64): from `theta`,
/// 300 steps of gradient ascent with learning rate 1/c (c re-estimated every
/// 100 steps), then 30 power iterations with central finite differences of
/// the gradient. The curvature at a random starting point can be far from the
/// curvature where the chains spend their time (a regression's noise scale),
/// hence the ascent. Deterministic for a given `seed`.
pub fn max_curvature(
    model: &Model,
    theta: &[f64],
    train_x: &[f64],
    train_y: &[f64],
    seed: u64,
) -> Result<f64> {
    use langevin_core::LogDensity;
    let dev = Device::Cpu;
    let density = model.density(DType::F64, &dev);
    let batch = model.batch(train_x, train_y, DType::F64, &dev)?;
    let p = theta.len();
    let mut rng = chain_rng(seed, u64::MAX - 1);
    let mut v0 = vec![0.0; p];
    langevin_core::rng::fill_standard_normal(&mut rng, &mut v0);
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let power = |theta: &[f64], iters: usize| -> Result<f64> {
        let mut v = v0.clone();
        let mut lambda = 0.0;
        let h = 1e-4;
        let mut gp = vec![0.0; p];
        let mut gm = vec![0.0; p];
        for _ in 0..iters {
            let n = norm(&v);
            if !(n > 0.0 && n.is_finite()) {
                break;
            }
            v.iter_mut().for_each(|x| *x /= n);
            let plus: Vec<f64> = theta.iter().zip(&v).map(|(t, d)| t + h * d).collect();
            let minus: Vec<f64> = theta.iter().zip(&v).map(|(t, d)| t - h * d).collect();
            density.value_and_grad(&model_params(model, plus)?, &batch, &mut gp)?;
            density.value_and_grad(&model_params(model, minus)?, &batch, &mut gm)?;
            for i in 0..p {
                v[i] = -(gp[i] - gm[i]) / (2.0 * h);
            }
            lambda = norm(&v);
        }
        Ok(lambda)
    };
    let mut theta = theta.to_vec();
    let mut g = vec![0.0; p];
    let mut c = power(&theta, 20)?;
    for it in 0..300 {
        if it > 0 && it % 100 == 0 {
            c = power(&theta, 20)?;
        }
        if !(c.is_finite() && c > 0.0) {
            break;
        }
        let (value, ()) =
            density.value_and_grad(&model_params(model, theta.clone())?, &batch, &mut g)?;
        if !value.is_finite() || g.iter().any(|x| !x.is_finite()) {
            break;
        }
        for (t, gi) in theta.iter_mut().zip(&g) {
            *t += gi / c;
        }
    }
    power(&theta, 30)
}

fn model_params(model: &Model, values: Vec<f64>) -> Result<langevin_core::Params> {
    Ok(langevin_core::Params::new(model.layout().clone(), values)?)
}

fn parse_hidden(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|t| {
            let t = t.trim();
            match t.parse::<usize>() {
                Ok(v) if v > 0 => Ok(v),
                _ => Err(bad_input(format!(
                    "--hidden: `{t}` is not a positive integer (expected widths like 64,64)"
                ))),
            }
        })
        .collect()
}

/// Load `--data` (a file, or a bundled name) with `--target`.
pub fn load_data(data: Option<&str>, target: Option<&str>) -> Result<(Dataset, String)> {
    let data = data.unwrap_or(DEFAULT_DATA);
    let path = Path::new(data);
    if path.exists() && !path.is_file() {
        crate::bail_input!(
            "--data {data}: not a regular file (a CSV file with a header row, or a bundled name)"
        );
    }
    if path.is_file() {
        let Some(target) = target else {
            crate::bail_input!(
                "--target is required with a data file (the name of the target column of {data})"
            );
        };
        let ds = langevin_models::load_csv(path, target).map_err(bad_input)?;
        return Ok((ds, data.to_string()));
    }
    if let Some(b) = bundled::find(data) {
        let ds = b.load(target).map_err(bad_input)?;
        return Ok((ds, format!("bundled:{}", b.name)));
    }
    let names: Vec<&str> = bundled::BUNDLED.iter().map(|b| b.name).collect();
    crate::bail_input!(
        "--data {data}: no such file, and no bundled data set of that name (bundled: {})",
        names.join(", ")
    )
}

/// Classification-looking target: integer values, at most 20 distinct.
fn looks_categorical(ds: &Dataset) -> Option<usize> {
    let mut seen: Vec<f64> = Vec::new();
    for &v in &ds.y {
        if v.fract() != 0.0 {
            return None;
        }
        if !seen.contains(&v) {
            seen.push(v);
            if seen.len() > 20 {
                return None;
            }
        }
    }
    Some(seen.len())
}

fn check_positive(name: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        crate::bail_input!("--{name} must be a finite number > 0, got {v}");
    }
    Ok(())
}

/// Data prepared for fitting: standardised training and evaluation rows.
pub struct Prepared {
    pub model: Model,
    pub meta_standardizer: Option<Standardizer>,
    pub target_scaler: Option<(f64, f64)>,
    pub class_labels: Vec<f64>,
    pub train_x: Vec<f64>,
    /// Class indices, or model-unit regression targets.
    pub train_y: Vec<f64>,
    pub eval_x: Vec<f64>,
    pub eval_y: Vec<f64>,
    /// Evaluation targets in data units (regression) or class indices.
    pub eval_y_raw: Vec<f64>,
}

impl Prepared {
    /// `run.json` of a run on this data: what `predict` needs besides the draws.
    pub fn run_meta(&self, target: &str, config: serde_json::Value) -> RunMeta {
        RunMeta {
            version: RUN_VERSION,
            model: self.model.spec().clone(),
            standardizer: self.meta_standardizer.clone(),
            target_scaler: self.target_scaler,
            class_labels: self.class_labels.clone(),
            target: target.to_string(),
            param_names: self.model.param_names().to_vec(),
            config,
        }
    }
}

/// Resolve every option, validate, load and prepare the data.
pub fn prepare(args: &FitArgs) -> Result<(FitConfig, Prepared, String)> {
    let (ds, data_name) = load_data(args.data.as_deref(), args.target.as_deref())?;
    check_positive("prior-sd", args.prior_sd)?;
    if let Some(s) = args.noise_sd {
        check_positive("noise-sd", s)?;
    }
    let method = args.method;
    let step_size = args.step_size.unwrap_or(default_step_size(method));
    check_positive("step-size", step_size)?;
    if let Some(f) = args.friction {
        if !(f.is_finite() && f >= 0.0) {
            crate::bail_input!("--friction must be a finite number >= 0, got {f}");
        }
    }
    let is_map = method == MethodArg::Map;
    let steps = args.steps.unwrap_or(20_000);
    if steps == 0 {
        crate::bail_input!("--steps must be at least 1");
    }
    let burn_in = args.burn_in.unwrap_or(if is_map { 0 } else { steps / 4 });
    if burn_in >= steps {
        crate::bail_input!("--burn-in ({burn_in}) must be smaller than --steps ({steps})");
    }
    let chains = args.chains.unwrap_or(if is_map { 1 } else { 4 });
    if chains == 0 {
        crate::bail_input!("--chains must be at least 1");
    }
    if chains > 1024 {
        crate::bail_input!("--chains {chains} is too many (at most 1024)");
    }
    if args.thin == Some(0) {
        crate::bail_input!("--thin must be at least 1");
    }
    if args.batch_size == Some(0) {
        crate::bail_input!("--batch-size must be at least 1");
    }
    if !(args.test_fraction.is_finite() && (0.0..1.0).contains(&args.test_fraction)) {
        crate::bail_input!(
            "--test-fraction must be in [0, 1), got {}",
            args.test_fraction
        );
    }
    let hidden = parse_hidden(&args.hidden)?;

    // Model and task.
    let categorical = looks_categorical(&ds);
    let kind = match args.model {
        Some(ModelArg::Linear) => ModelKind::Linear,
        Some(ModelArg::Logistic) => ModelKind::Logistic,
        Some(ModelArg::Softmax) => ModelKind::Softmax,
        Some(ModelArg::Mlp) => ModelKind::Mlp,
        None => match categorical {
            Some(2) => ModelKind::Logistic,
            Some(k) if k > 2 => ModelKind::Softmax,
            _ => ModelKind::Linear,
        },
    };
    let classification = match kind {
        ModelKind::Linear => {
            if args.task == Some(TaskArg::Classification) {
                crate::bail_input!("--task classification does not fit --model linear");
            }
            false
        }
        ModelKind::Logistic | ModelKind::Softmax => {
            if args.task == Some(TaskArg::Regression) {
                crate::bail_input!("--task regression does not fit --model {kind}");
            }
            true
        }
        ModelKind::Mlp => match args.task {
            Some(t) => t == TaskArg::Classification,
            None => categorical.is_some_and(|k| k >= 2),
        },
    };
    let friction = args
        .friction
        .unwrap_or(default_friction(method, classification));
    let class_labels = if classification {
        ds.class_labels().map_err(bad_input)?
    } else {
        Vec::new()
    };
    let task = if classification {
        Task::Classification {
            n_classes: class_labels.len(),
        }
    } else {
        Task::Regression
    };

    // Split and standardise.
    let split = Split::new(ds.n(), args.test_fraction, args.seed)
        .map_err(|e| bad_input(format!("{data_name}: {e}")))?;
    let train = ds.subset(&split.train);
    let (eval, metrics_on) = if split.test.is_empty() {
        (train.clone(), "train")
    } else {
        (ds.subset(&split.test), "test")
    };
    let standardize = !args.no_standardize;
    let mut train_x = train.x.clone();
    let mut eval_x = eval.x.clone();
    let standardizer = if standardize {
        let s = Standardizer::fit(&train_x, ds.d());
        s.apply(&mut train_x);
        s.apply(&mut eval_x);
        Some(s)
    } else {
        None
    };
    let (train_y, eval_y, eval_y_raw, target_scaler) = if classification {
        let ty = train.class_indices(&class_labels).map_err(bad_input)?;
        let ey = eval.class_indices(&class_labels).map_err(bad_input)?;
        (ty, ey.clone(), ey, None)
    } else {
        let scaler = if standardize {
            let s = Standardizer::fit(&train.y, 1);
            Some((s.mean[0], s.sd[0]))
        } else {
            None
        };
        let (m, sd) = scaler.unwrap_or((0.0, 1.0));
        let ty = train.y.iter().map(|y| (y - m) / sd).collect();
        let ey = eval.y.iter().map(|y| (y - m) / sd).collect();
        (ty, ey, eval.y.clone(), scaler)
    };
    let n_train = train.n();
    if classification && class_labels.len() > n_train {
        crate::bail_input!(
            "{data_name}: target `{}` has {} classes but only {n_train} training rows \
             ({} rows, {} held out by --test-fraction {}): a classifier needs at least \
             one training row per class",
            ds.target_name,
            class_labels.len(),
            ds.n(),
            split.test.len(),
            args.test_fraction
        );
    }
    let spec = ModelSpec {
        kind,
        task,
        feature_names: ds.feature_names.clone(),
        hidden: if kind == ModelKind::Mlp {
            hidden.clone()
        } else {
            Vec::new()
        },
        prior_sd: args.prior_sd,
        noise: match args.noise_sd {
            Some(s) => Noise::Fixed(s),
            None => Noise::Learned,
        },
        n_train,
    };
    let model = Model::new(spec).map_err(bad_input)?;
    // A default step size is capped so that the integrator is stable at the
    // curvature found at chain 0's starting point.
    let step_size = if args.step_size.is_some() {
        step_size
    } else {
        let theta0 = model.init(&mut chain_rng(args.seed, 0));
        let c = max_curvature(&model, theta0.values(), &train_x, &train_y, args.seed)?;
        let cap = stable_step_size(method, c, friction);
        if cap < step_size {
            if !args.quiet {
                eprintln!(
                    "note: largest curvature {c:.4} near the mode: default step size lowered from {step_size} to {cap:.4} for stability"
                );
            }
            cap
        } else {
            step_size
        }
    };
    let batch_size = args
        .batch_size
        .unwrap_or(if kind == ModelKind::Mlp {
            128
        } else if n_train <= 2000 {
            n_train
        } else {
            256
        })
        .min(n_train);
    let kept = if is_map { 1 } else { steps - burn_in };
    // At most 1000 draws per chain and about 4 million stored numbers in all.
    let max_draws = (4_000_000 / (model.n_params() * chains).max(1)).clamp(10, 1000) as u64;
    let thin = args.thin.unwrap_or(kept.div_ceil(max_draws).max(1));
    let temperature = if is_map { 0.0 } else { 1.0 / n_train as f64 };
    let config = FitConfig {
        data: data_name.clone(),
        target: ds.target_name.clone(),
        model: kind,
        task: if classification {
            "classification"
        } else {
            "regression"
        }
        .into(),
        hidden: if kind == ModelKind::Mlp {
            hidden
        } else {
            Vec::new()
        },
        method,
        prior_sd: args.prior_sd,
        noise_sd: args.noise_sd,
        step_size,
        friction,
        temperature,
        steps,
        burn_in,
        thin,
        chains,
        batch_size,
        test_fraction: args.test_fraction,
        seed: args.seed,
        standardize,
        max_divergences: args.max_divergences,
        n_rows: ds.n(),
        n_train,
        n_test: split.test.len(),
        metrics_on,
    };
    Ok((
        config,
        Prepared {
            model,
            meta_standardizer: standardizer,
            target_scaler,
            class_labels,
            train_x,
            train_y,
            eval_x,
            eval_y,
            eval_y_raw,
        },
        data_name,
    ))
}

/// The minibatch of `cursor`'s next rows (the full batch when a minibatch is
/// every row; it is built once and reused).
fn next_batch<'a>(
    full: &'a Batch,
    size: usize,
    cursor: &mut Cursor,
    rng: &mut ChainRng,
) -> Result<std::borrow::Cow<'a, Batch>> {
    let Some(idx) = cursor.next(size, rng) else {
        return Ok(std::borrow::Cow::Borrowed(full));
    };
    let it = Tensor::from_slice(idx, idx.len(), full.x.device())?;
    Ok(std::borrow::Cow::Owned(Batch {
        x: full.x.index_select(&it, 0)?,
        y: full.y.index_select(&it, 0)?,
    }))
}

/// One chain in memory: its saved progress and the draws of the current round.
struct ChainRun<S> {
    ck: ChainCheckpoint<S>,
    new_draws: Vec<Vec<f64>>,
}

/// What all chains produced.
struct RunOutcome {
    draws: Vec<Vec<Vec<f64>>>,
    divergences: Vec<u64>,
    stopped: bool,
}

struct Ctx<'a> {
    cfg: &'a FitConfig,
    model: &'a Model,
    full: &'a Batch,
    writer: &'a SamplesWriter,
    progress: &'a ProgressBar,
    abort: &'a AtomicBool,
    out_dir: &'a Path,
    /// Steps per round (the checkpoint interval when checkpointing).
    round: u64,
    /// Worker threads (`None`: one per core).
    threads: Option<usize>,
    /// What to save in checkpoints (`None`: no checkpoints).
    checkpoint: Option<CheckpointBase>,
}

/// The parts of a checkpoint that do not change during the run.
struct CheckpointBase {
    args: FitArgs,
    config: serde_json::Value,
    data_fingerprint: u64,
}

/// Advance one chain up to step `end` (or until it stops on divergences).
fn advance<T>(t: &T, ctx: &Ctx<'_>, ch: &mut ChainRun<T::State>, end: u64) -> Result<()>
where
    T: Transform<Batch = Batch>,
{
    let cfg = ctx.cfg;
    let is_map = cfg.method == MethodArg::Map;
    let tick = 100u64;
    let ck = &mut ch.ck;
    while ck.step < end && !ck.stopped {
        if ctx.abort.load(Ordering::Relaxed) {
            break;
        }
        let step = ck.step;
        let batch = next_batch(ctx.full, cfg.batch_size, &mut ck.cursor, &mut ck.rng)?;
        match t.step(&mut ck.state, &batch, &mut ck.rng) {
            Ok(_) => {}
            Err(langevin_core::Error::NonFiniteLogDensity { .. }) => {
                ck.divergences += 1;
                if ck.divergences > cfg.max_divergences {
                    ck.stopped = true;
                    break;
                }
            }
            Err(e) => return Err(e.into()),
        }
        ck.step += 1;
        let keep = if is_map {
            step + 1 == cfg.steps
        } else {
            step >= cfg.burn_in && (step + 1 - cfg.burn_in).is_multiple_of(cfg.thin)
        };
        if keep {
            ch.new_draws.push(ck.state.params().values().to_vec());
        }
        if (step + 1) % tick == 0 {
            ctx.progress.inc(tick);
        }
    }
    Ok(())
}

/// Advance every chain to step `end`: `min(chains, cores)` worker threads
/// take chains in order; each chain's tensor operations run single-threaded
/// (see [`run`]).
fn run_round<T>(t: &T, ctx: &Ctx<'_>, chains: &[Mutex<ChainRun<T::State>>], end: u64) -> Result<()>
where
    T: Transform<Batch = Batch>,
{
    let n = chains.len();
    let workers = ctx
        .threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|p| p.get())
                .unwrap_or(1)
        })
        .clamp(1, n);
    let next = AtomicUsize::new(0);
    let first_err: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let c = next.fetch_add(1, Ordering::SeqCst);
                if c >= n {
                    break;
                }
                let r = match chains[c].lock() {
                    Ok(mut ch) => advance(t, ctx, &mut ch, end),
                    Err(_) => Err(anyhow::anyhow!("chain {c}: state poisoned")),
                };
                if let Err(e) = r {
                    ctx.abort.store(true, Ordering::Relaxed);
                    if let Ok(mut slot) = first_err.lock() {
                        slot.get_or_insert(e.context(format!("chain {c}")));
                    }
                }
            });
        }
    });
    match first_err.into_inner() {
        Ok(None) => Ok(()),
        Ok(Some(e)) => Err(e),
        Err(_) => Err(anyhow::anyhow!("a chain thread panicked")),
    }
}

/// Run every chain in rounds of `ctx.round` steps, from the start or from a
/// checkpoint. After each round the new draws go to `samples.csv` in
/// draw-major order (so the file does not depend on the round length or on
/// the number of threads), the file is synced, and a checkpoint is written.
fn run_all<T>(
    t: &T,
    ctx: &Ctx<'_>,
    resume: Option<&Checkpoint>,
    resumed_draws: Vec<Vec<Vec<f64>>>,
) -> Result<RunOutcome>
where
    T: Transform<Batch = Batch>,
{
    let cfg = ctx.cfg;
    let ck_path = ctx.out_dir.join(CHECKPOINT_FILE);
    let (chains, mut draws, mut steps_done) = match resume {
        None => {
            let mut chains = Vec::with_capacity(cfg.chains);
            for c in 0..cfg.chains {
                let mut rng = chain_rng(cfg.seed, c as u64);
                let p0 = ctx.model.init(&mut rng);
                let state = t.init(p0, &mut rng)?;
                chains.push(Mutex::new(ChainRun {
                    ck: ChainCheckpoint {
                        state,
                        rng,
                        cursor: Cursor::new(cfg.n_train),
                        step: 0,
                        draws: 0,
                        divergences: 0,
                        stopped: false,
                    },
                    new_draws: Vec::new(),
                }));
            }
            (chains, vec![Vec::new(); cfg.chains], 0)
        }
        Some(saved) => {
            if saved.chains.len() != cfg.chains {
                crate::bail_input!(
                    "{}: {} chains saved, the configuration has {}",
                    ck_path.display(),
                    saved.chains.len(),
                    cfg.chains
                );
            }
            let mut chains = Vec::with_capacity(cfg.chains);
            for (c, v) in saved.chains.iter().enumerate() {
                let ck = ChainCheckpoint::<T::State>::from_json(v, &ck_path, c)?;
                chains.push(Mutex::new(ChainRun {
                    ck,
                    new_draws: Vec::new(),
                }));
            }
            ctx.progress
                .inc(saved.steps_done / 100 * 100 * cfg.chains as u64);
            (chains, resumed_draws, saved.steps_done)
        }
    };
    let save = |chains: &[Mutex<ChainRun<T::State>>], steps_done: u64| -> Result<()> {
        let Some(base) = &ctx.checkpoint else {
            return Ok(());
        };
        let mut saved = Vec::with_capacity(chains.len());
        for m in chains {
            let ch = m
                .lock()
                .map_err(|_| anyhow::anyhow!("chain state poisoned"))?;
            saved.push(ch.ck.to_json()?);
        }
        let ck = Checkpoint {
            version: CHECKPOINT_VERSION,
            args: base.args.clone(),
            config: base.config.clone(),
            data_fingerprint: base.data_fingerprint,
            samples_len: ctx.writer.len()?,
            steps_done,
            chains: saved,
        };
        write_json_atomic(&ck_path, &ck)
    };
    if resume.is_none() {
        save(&chains, 0)?;
    }
    let mut stopped = false;
    while steps_done < cfg.steps && !stopped {
        let end = (steps_done + ctx.round).min(cfg.steps);
        let r = run_round(t, ctx, &chains, end);
        // Write what was collected, in draw-major order, even when stopping.
        let mut rounds: Vec<(usize, Vec<Vec<f64>>)> = Vec::with_capacity(chains.len());
        for m in &chains {
            let mut ch = m
                .lock()
                .map_err(|_| anyhow::anyhow!("chain state poisoned"))?;
            stopped |= ch.ck.stopped;
            let first = ch.ck.draws;
            ch.ck.draws += ch.new_draws.len();
            rounds.push((first, std::mem::take(&mut ch.new_draws)));
        }
        let longest = rounds.iter().map(|r| r.1.len()).max().unwrap_or(0);
        for i in 0..longest {
            for (c, (first, new)) in rounds.iter().enumerate() {
                if let Some(v) = new.get(i) {
                    ctx.writer.append(c, first + i, v)?;
                }
            }
        }
        ctx.writer.flush()?;
        for (c, (_, new)) in rounds.into_iter().enumerate() {
            draws[c].extend(new);
        }
        r?;
        steps_done = end;
        if !stopped {
            save(&chains, steps_done)?;
        }
    }
    let divergences = chains
        .iter()
        .map(|m| m.lock().map(|ch| ch.ck.divergences).unwrap_or(0))
        .collect();
    Ok(RunOutcome {
        draws,
        divergences,
        stopped,
    })
}

pub(crate) fn default_out_dir() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let base = format!(
        "runs/{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let mut p = PathBuf::from(&base);
    let mut i = 2;
    while p.exists() {
        p = PathBuf::from(format!("{base}-{i}"));
        i += 1;
    }
    p
}

/// Prepare DIR: create it, and remove the files a previous run left there
/// (so a stale summary.json never claims success for this run).
pub(crate) fn prepare_out_dir(dir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))
        .map_err(|e| bad_input(format!("{e:#}")))?;
    let lock = lock_run_dir(dir)?;
    for f in [
        "summary.json",
        "summary.json.tmp",
        "checkpoint.json",
        "checkpoint.json.tmp",
        "samples.csv",
        "run.json",
        "trace.png",
        "marginals.png",
        "reliability.png",
    ] {
        let p = dir.join(f);
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing stale {}", p.display()))?;
        }
    }
    Ok(lock)
}

/// Take an exclusive lock on `DIR/.lock` for the life of the returned file,
/// so that two processes never write one run directory (a second `fit` or
/// `--resume` on a directory in use is refused). The operating system drops
/// the lock when the process dies, `kill -9` included.
pub(crate) fn lock_run_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))
        .map_err(|e| bad_input(format!("{e:#}")))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(bad_input(format!(
            "{} is in use by another langevin process (locked: {})",
            dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(anyhow::Error::new(e).context(format!("locking {}", path.display())))
        }
    }
}

/// Run `langevin fit`.
pub fn run(args: FitArgs) -> Result<()> {
    if crate::gaussian::is_gaussian(args.method) {
        if args.checkpoint_every.is_some() {
            crate::bail_input!(
                "--checkpoint-every applies to the samplers (sgld, sghmc, sgnht, baoa, map), \
                 not to a Gaussian fit (--method {})",
                args.method
                    .to_possible_value()
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default()
            );
        }
        return crate::gaussian::run(args);
    }
    let t0 = Instant::now();
    // Parallelism is over chains. candle's CPU matmul asks rayon for threads
    // on every call (even on tiny matrices), which costs more than it gains
    // here and fights the chain threads: keep each chain's tensor operations
    // on its own thread unless the user chose otherwise.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    // `--resume DIR`: every option comes from the checkpoint.
    let (args, resume, resume_lock) = match &args.resume {
        Some(dir) => {
            if dir.join("summary.json").is_file() {
                if !args.quiet {
                    eprintln!("{}: the run is already complete", dir.display());
                }
                return Ok(());
            }
            // Lock first, so the checkpoint cannot change under us.
            let lock = if dir.is_dir() {
                Some(lock_run_dir(dir)?)
            } else {
                None
            };
            let ck = crate::checkpoint::load(dir)?;
            let mut saved = ck.args.clone();
            saved.out = Some(dir.clone());
            saved.quiet = args.quiet;
            saved.no_plots = args.no_plots;
            saved.threads = args.threads;
            (saved, Some(ck), lock)
        }
        None => (args, None, None),
    };
    if args.threads == Some(0) {
        crate::bail_input!("--threads must be at least 1");
    }
    if args.checkpoint_every == Some(0) {
        crate::bail_input!("--checkpoint-every must be at least 1");
    }
    let (cfg, prep, data_name) = prepare(&args)?;
    let config_json = serde_json::to_value(&cfg)?;
    let data_fingerprint = crate::checkpoint::fingerprint(&[
        &prep.train_x,
        &prep.train_y,
        &prep.eval_x,
        &prep.eval_y_raw,
    ]);
    let out_dir = args.out.clone().unwrap_or_else(default_out_dir);
    if let Some(ck) = &resume {
        if ck.config != config_json || ck.data_fingerprint != data_fingerprint {
            crate::bail_input!(
                "--resume {}: the data or the resolved configuration differ from the \
                 checkpoint's (was the data file changed?); cannot continue this run",
                out_dir.display()
            );
        }
        if !args.quiet {
            eprintln!(
                "resuming {} at step {} of {}",
                out_dir.display(),
                ck.steps_done,
                cfg.steps
            );
        }
    }
    // Held until the run ends: no second process writes this directory.
    let _lock = match resume_lock {
        Some(lock) => lock,
        None => prepare_out_dir(&out_dir)?,
    };
    if !args.quiet {
        if args.data.is_none() {
            eprintln!(
                "no --data given: using the bundled data set `{DEFAULT_DATA}` (target `{}`)",
                cfg.target
            );
        }
        eprintln!(
            "fitting {} ({}) on {} ({} rows: {} train, {} test) with {}: {} chains x {} steps",
            cfg.model,
            cfg.task,
            data_name,
            cfg.n_rows,
            cfg.n_train,
            cfg.n_test,
            cfg.method_name(),
            cfg.chains,
            cfg.steps
        );
    }
    let model = &prep.model;
    let meta = prep.run_meta(&cfg.target, config_json.clone());
    let samples_path = out_dir.join("samples.csv");
    let (writer, resumed_draws) = match &resume {
        None => {
            write_json_atomic(&out_dir.join("run.json"), &meta)?;
            (
                SamplesWriter::create(&samples_path, model.param_names())?,
                Vec::new(),
            )
        }
        Some(ck) => {
            let expected: Vec<usize> = ck
                .chains
                .iter()
                .map(|c| c["draws"].as_u64().unwrap_or(0) as usize)
                .collect();
            let draws = crate::checkpoint::truncate_and_read_draws(
                &samples_path,
                ck.samples_len,
                model.n_params(),
                &expected,
            )?;
            (SamplesWriter::open_append(&samples_path)?, draws)
        }
    };
    // Rounds: the checkpoint interval, or about 20 per run (draws reach the
    // disk at the end of each round).
    let round = args
        .checkpoint_every
        .unwrap_or_else(|| (cfg.steps / 20).max(1000));
    let checkpoint = args.checkpoint_every.map(|_| {
        let mut saved = args.clone();
        saved.resume = None;
        // A data file is found again from any working directory.
        if let Some(d) = &saved.data {
            if Path::new(d).is_file() {
                if let Ok(abs) = std::fs::canonicalize(d) {
                    saved.data = Some(abs.display().to_string());
                }
            }
        }
        CheckpointBase {
            args: saved,
            config: config_json.clone(),
            data_fingerprint,
        }
    });

    let device = Device::Cpu;
    let dtype = DType::F32;
    let full = model.batch(&prep.train_x, &prep.train_y, dtype, &device)?;
    let density = model.density(dtype, &device);
    let progress = if args.quiet {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::new(cfg.steps / 100 * 100 * cfg.chains as u64);
        pb.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} steps ({eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    };
    let abort = AtomicBool::new(false);
    let ctx = Ctx {
        cfg: &cfg,
        model,
        full: &full,
        writer: &writer,
        progress: &progress,
        abort: &abort,
        out_dir: &out_dir,
        round,
        threads: args.threads,
        checkpoint,
    };
    let resume = resume.as_ref();
    let eps = cfg.step_size;
    let temp = cfg.temperature;
    let outs = match cfg.method {
        MethodArg::Sgld => {
            let t = Sgld::new(
                &density,
                SgldConfig {
                    step_size: eps.into(),
                    temperature: temp.into(),
                    beta: 0.0,
                },
            )
            .map_err(bad_input)?;
            run_all(&t, &ctx, resume, resumed_draws)
        }
        MethodArg::Sghmc | MethodArg::Map => {
            let t = Sghmc::new(
                &density,
                SghmcConfig {
                    step_size: eps.into(),
                    temperature: temp.into(),
                    friction: cfg.friction,
                    beta: 0.0,
                    sigma: 1.0,
                    momenta: if cfg.method == MethodArg::Map {
                        MomentaInit::Constant(0.0)
                    } else {
                        MomentaInit::Normal
                    },
                },
            )
            .map_err(bad_input)?;
            run_all(&t, &ctx, resume, resumed_draws)
        }
        MethodArg::Sgnht => {
            let t = Sgnht::new(
                &density,
                SgnhtConfig {
                    step_size: eps.into(),
                    temperature: temp.into(),
                    friction: cfg.friction,
                    beta: 0.0,
                    sigma: 1.0,
                    momenta: MomentaInit::Normal,
                    thermostat: None,
                },
            )
            .map_err(bad_input)?;
            run_all(&t, &ctx, resume, resumed_draws)
        }
        MethodArg::Baoa => {
            let t = Baoa::new(
                &density,
                BaoaConfig {
                    step_size: eps.into(),
                    temperature: temp.into(),
                    friction: cfg.friction,
                    sigma: 1.0,
                    momenta: MomentaInit::Normal,
                },
            )
            .map_err(bad_input)?;
            run_all(&t, &ctx, resume, resumed_draws)
        }
        m => anyhow::bail!("internal error: --method {m:?} is not a sampler (crate::gaussian)"),
    };
    progress.finish_and_clear();
    writer.flush()?;
    let outcome = outs?;
    let divergences = outcome.divergences;
    if outcome.stopped {
        return Err(anyhow::Error::new(Diverged(format!(
            "stopped: more than {} divergent steps (non-finite log posterior) in a chain \
             (per chain: {divergences:?}); the draws collected so far are in {}. \
             Try a smaller --step-size.",
            cfg.max_divergences,
            samples_path.display()
        ))));
    }
    let chains = outcome.draws;
    let summary = summarize_and_report(&cfg, &prep, &chains, &divergences, &out_dir, &args, t0)?;
    write_json_atomic(&out_dir.join("summary.json"), &summary)?;
    // The run is complete: its checkpoint is no longer needed.
    let ck_path = out_dir.join(CHECKPOINT_FILE);
    if ck_path.exists() {
        std::fs::remove_file(&ck_path)
            .with_context(|| format!("removing {}", ck_path.display()))?;
    }
    if !args.quiet {
        println!("wrote {}", out_dir.display());
    }
    Ok(())
}

/// Per-parameter summaries (mean, sd, ESS, R-hat) of draws `chains[c][i][j]`.
pub fn param_summaries(names: &[String], chains: &[Vec<Vec<f64>>]) -> Vec<serde_json::Value> {
    let min_draws = chains.iter().map(|c| c.len()).min().unwrap_or(0);
    names
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let per_chain: Vec<Vec<f64>> = chains
                .iter()
                .map(|c| c[..min_draws].iter().map(|d| d[j]).collect())
                .collect();
            let pooled: Vec<f64> = per_chain.iter().flatten().copied().collect();
            let n = pooled.len().max(1) as f64;
            let mean = pooled.iter().sum::<f64>() / n;
            let sd = if pooled.len() > 1 {
                (pooled.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
            } else {
                f64::NAN
            };
            let refs: Vec<&[f64]> = per_chain.iter().map(|c| c.as_slice()).collect();
            let (ess_bulk, ess_tail, rhat) = match langevin::diagnostics::summarize(&refs) {
                Ok(s) if min_draws >= langevin::diagnostics::MIN_DRAWS => {
                    (s.ess_bulk, s.ess_tail, s.rhat)
                }
                _ => (f64::NAN, f64::NAN, f64::NAN),
            };
            json!({
                "name": name,
                "mean": num(mean),
                "sd": num(sd),
                "ess_bulk": num(ess_bulk),
                "ess_tail": num(ess_tail),
                "rhat": num(rhat),
            })
        })
        .collect()
}

pub(crate) fn summarize_and_report(
    cfg: &FitConfig,
    prep: &Prepared,
    chains: &[Vec<Vec<f64>>],
    divergences: &[u64],
    out_dir: &Path,
    args: &FitArgs,
    t0: Instant,
) -> Result<serde_json::Value> {
    let model = &prep.model;
    let names = model.param_names();
    let params = param_summaries(names, chains);
    let all: Vec<&[f64]> = chains
        .iter()
        .flat_map(|c| c.iter().map(|d| d.as_slice()))
        .collect();
    if all.is_empty() {
        anyhow::bail!("no draws were collected");
    }
    let draws: Vec<&[f64]> = if all.len() > MAX_PREDICTIVE_DRAWS {
        (0..MAX_PREDICTIVE_DRAWS)
            .map(|i| all[i * all.len() / MAX_PREDICTIVE_DRAWS])
            .collect()
    } else {
        all
    };
    let pred = predictive(model, &draws, &prep.eval_x)?;
    let on = cfg.metrics_on;
    let mut metrics = serde_json::Map::new();
    let mut reliability = None;
    match &pred {
        Predictive::Classification { probs, k, .. } => {
            let y: Vec<usize> = prep.eval_y.iter().map(|&v| v as usize).collect();
            let m = classification_metrics(probs, *k, &y, 10)?;
            metrics.insert(format!("{on}_nll"), num(m.nll));
            metrics.insert(format!("{on}_accuracy"), num(m.accuracy));
            metrics.insert("ece".into(), num(m.calibration.ece));
            metrics.insert("brier".into(), num(m.brier));
            reliability = Some(m.calibration);
        }
        Predictive::Regression { means, sds } => {
            let (shift, scale) = prep.target_scaler.unwrap_or((0.0, 1.0));
            let (rmse, nll) = regression_metrics(means, sds, &prep.eval_y_raw, scale, shift);
            metrics.insert(format!("{on}_nll"), num(nll));
            metrics.insert(format!("{on}_rmse"), num(rmse));
        }
    }
    metrics.insert("metrics_on".into(), json!(on));
    metrics.insert("n_eval".into(), json!(prep.eval_y.len()));
    metrics.insert("predictive_draws".into(), json!(draws.len()));

    let mut plots = Vec::new();
    if !args.no_plots {
        let max_plot = 12.min(names.len());
        let plot_names: Vec<String> = names[..max_plot].to_vec();
        let more = if names.len() > max_plot {
            format!(" (first {max_plot} of {} parameters)", names.len())
        } else {
            String::new()
        };
        let min_draws = chains.iter().map(|c| c.len()).min().unwrap_or(0);
        let title = format!("{} {} on {}", cfg.method_name(), cfg.model, cfg.data);
        if min_draws >= 2 {
            let traces: Vec<Vec<Vec<f64>>> = (0..max_plot)
                .map(|j| {
                    chains
                        .iter()
                        .map(|c| c.iter().map(|d| d[j]).collect())
                        .collect()
                })
                .collect();
            let pooled: Vec<Vec<f64>> = traces.iter().map(|t| t.concat()).collect();
            plot(
                &mut plots,
                "trace.png",
                langevin_plot::trace_grid_png(
                    out_dir.join("trace.png"),
                    &format!("trace: {title}{more}"),
                    &plot_names,
                    &traces,
                ),
            );
            plot(
                &mut plots,
                "marginals.png",
                langevin_plot::marginals_grid_png(
                    out_dir.join("marginals.png"),
                    &format!("posterior marginals: {title}{more}"),
                    &plot_names,
                    &pooled,
                    30,
                ),
            );
        }
        if let Some(cal) = &reliability {
            plot(
                &mut plots,
                "reliability.png",
                langevin_plot::reliability_png(
                    out_dir.join("reliability.png"),
                    &format!("reliability ({on} rows): {title}"),
                    &cal.bin_confidence,
                    &cal.bin_accuracy,
                    &cal.bin_counts,
                ),
            );
        }
    }

    let summary = json!({
        "params": params,
        "metrics": metrics,
        "divergences": divergences.iter().sum::<u64>(),
        "divergences_per_chain": divergences,
        "draws_per_chain": chains.iter().map(|c| c.len()).collect::<Vec<_>>(),
        "plots": plots,
        "config": serde_json::to_value(cfg)?,
        "seconds": t0.elapsed().as_secs_f64(),
    });
    if !args.quiet {
        print_report(cfg, &summary);
    }
    Ok(summary)
}

fn plot(done: &mut Vec<String>, name: &str, r: std::result::Result<(), langevin_plot::PlotError>) {
    match r {
        Ok(()) => done.push(name.to_string()),
        Err(e) => eprintln!("warning: plot {name} not written: {e}"),
    }
}

impl FitConfig {
    fn method_name(&self) -> &'static str {
        match self.method {
            MethodArg::Sgld => "SGLD",
            MethodArg::Sghmc => "SGHMC",
            MethodArg::Sgnht => "SGNHT",
            MethodArg::Baoa => "BAOA",
            MethodArg::Map => "MAP",
            m => crate::gaussian::method_label(m),
        }
    }
}

fn print_report(cfg: &FitConfig, summary: &serde_json::Value) {
    let params = summary["params"].as_array().cloned().unwrap_or_default();
    if params.len() <= 40 {
        println!("{}", crate::diagnose::table(&params));
    } else {
        println!("({} parameters: see summary.json)", params.len());
    }
    let m = &summary["metrics"];
    let on = cfg.metrics_on;
    let mut line = format!("{on} metrics ({} rows):", m["n_eval"]);
    for key in ["nll", "accuracy", "rmse"] {
        if let Some(v) = m[format!("{on}_{key}")].as_f64() {
            line += &format!(" {key} {v:.4}");
        }
    }
    for key in ["ece", "brier"] {
        if let Some(v) = m[key].as_f64() {
            line += &format!(" {key} {v:.4}");
        }
    }
    println!("{line}");
    let div = summary["divergences"].as_u64().unwrap_or(0);
    if div > 0 {
        println!("divergent steps (skipped): {div}");
    }
    println!("time: {:.2} s", summary["seconds"].as_f64().unwrap_or(0.0));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linear regression with a fixed noise sd of 1 has a constant Hessian:
    /// the batch-averaged negative log posterior's is `E[x̃ x̃ᵀ] + I / (N s²)`
    /// with `x̃ = (x, 1)`; its largest eigenvalue in closed form for one feature.
    #[test]
    fn max_curvature_matches_closed_form() {
        let x: Vec<f64> = (0..40)
            .map(|i| (i as f64 * 0.37).sin() * 2.0 + 0.5)
            .collect();
        let y: Vec<f64> = x.iter().map(|v| 0.3 * v - 1.0).collect();
        let n = x.len() as f64;
        let spec = ModelSpec {
            kind: ModelKind::Linear,
            task: Task::Regression,
            feature_names: vec!["x".into()],
            hidden: vec![],
            prior_sd: 2.0,
            noise: Noise::Fixed(1.0),
            n_train: x.len(),
        };
        let model = Model::new(spec).unwrap();
        let (a, b) = (
            x.iter().map(|v| v * v).sum::<f64>() / n + 1.0 / (4.0 * n),
            x.iter().sum::<f64>() / n,
        );
        let c = 1.0 + 1.0 / (4.0 * n);
        let exact = 0.5 * (a + c) + (0.25 * (a - c).powi(2) + b * b).sqrt();
        let got = max_curvature(&model, &[0.7, -0.2], &x, &y, 3).unwrap();
        assert!((got - exact).abs() < 1e-4 * exact, "{got} vs {exact}");
        // And the caps keep the integrators stable at that curvature.
        assert!(stable_step_size(MethodArg::Sghmc, got, 0.1) * got < 0.1);
        assert!(stable_step_size(MethodArg::Sgld, got, 0.0) * got < 2.0);
        assert!(stable_step_size(MethodArg::Baoa, got, 0.1) * got.sqrt() < 2.0);
    }
}
