//! The run plan of `langevin fit`: every option resolved (defaults filled
//! in), validated, in one place for the samplers and the Gaussian methods.

use anyhow::Result;
use candle_core::{DType, Device};
use langevin::adapt::{AdaptConfig, MetricKind};
use langevin::run::{RunConfig, Thinning, Until};
use langevin_core::chain_rng;
use langevin_models::ModelKind;
use serde::Serialize;

use super::args::{AdaptArg, FitArgs, MethodArg};
use super::data::{check_positive, Prepared};
use crate::exit::bad_input;

/// Default steps of a sampler chain of fixed length (map, or --adapt none).
pub const DEFAULT_STEPS: u64 = 20_000;
/// Default most steps per chain of a run until converged.
pub const DEFAULT_MAX_STEPS: u64 = 200_000;
/// Default warm-up of a run until converged.
pub const DEFAULT_WARMUP: u64 = 5000;
/// Default friction of an adapted sampler: the preconditioned target has
/// curvature about 1 in every direction, and α = 1 damps it near critically
/// (docs/cli.md).
pub const ADAPTED_FRICTION: f64 = 1.0;
/// The convergence rule's defaults.
pub const DEFAULT_TARGET_ESS: f64 = 400.0;
pub const DEFAULT_TARGET_RHAT: f64 = 1.01;
/// A verdict needs this many draws per chain.
pub const MIN_VERDICT_DRAWS: usize = 100;

/// At most this many draws per chain are kept by default (and about
/// [`MAX_STORED`] stored numbers in all).
const MAX_DRAWS_PER_CHAIN: usize = 1000;
const MAX_STORED: usize = 4_000_000;

/// The configuration as resolved; saved in run.json and summary.json.
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
    /// What the warm-up adapts.
    pub adapt: AdaptArg,
    /// `Some`: a run until converged (`steps` is the maximum).
    pub until: Option<Until>,
    /// The convergence verdict's rule (also for runs of fixed length).
    pub target_ess: f64,
    pub target_rhat: f64,
    pub chains: usize,
    pub batch_size: usize,
    pub test_fraction: f64,
    pub seed: u64,
    pub standardize: bool,
    pub max_divergences: u64,
    /// The warm-up sets the step size (no --step-size given).
    pub adapt_step_size: bool,
    pub n_rows: usize,
    pub n_train: usize,
    pub n_test: usize,
    pub metrics_on: &'static str,
    /// Laplace: the prior precision by the evidence (`--marglik`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub marglik: bool,
    /// Laplace: the noise sd by the evidence too (`--marglik-noise`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub marglik_noise: bool,
    /// Laplace: the last layer only (`--last-layer`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub last_layer: bool,
    /// --control-variates and the step-size schedule (fit/cv.rs).
    #[serde(flatten)]
    pub cv: super::cv::CvPlan,
}

impl FitConfig {
    /// The library run loop's settings of a sampler run.
    pub fn run_config(&self, round: Option<u64>, threads: Option<usize>) -> RunConfig {
        RunConfig {
            steps: self.steps,
            thinning: if self.method == MethodArg::Map {
                Thinning::last_of(self.steps)
            } else {
                Thinning {
                    burn_in: self.burn_in,
                    thin: self.thin,
                }
            },
            round,
            max_divergences: self.max_divergences,
            threads,
            until: self.until.clone(),
        }
    }

    /// The warm-up's settings (`None`: no adaptation).
    pub fn adapt_config(&self) -> Option<AdaptConfig> {
        let metric = match self.adapt {
            AdaptArg::None => return None,
            AdaptArg::Diag => MetricKind::Diagonal,
            AdaptArg::Dense => MetricKind::Dense,
            AdaptArg::Step => MetricKind::Identity,
        };
        Some(AdaptConfig {
            metric,
            step_size: self.adapt_step_size,
            ..AdaptConfig::default()
        })
    }

    /// Draws kept per chain: a sampler's thinned draws, or the independent
    /// draws of a Gaussian approximation (at most 1000 per chain and about
    /// 4 million numbers in all).
    pub fn draws_per_chain(&self, n_params: usize) -> usize {
        if self.method == MethodArg::Analog {
            super::analog::ANALOG_DRAWS
        } else if self.method == MethodArg::Tngd {
            1
        } else if self.method.is_sampler() {
            self.run_config(None, None).thinning.n_draws(self.steps) as usize
        } else {
            max_draws(n_params, self.chains)
        }
    }
}

pub(super) fn max_draws(n_params: usize, chains: usize) -> usize {
    (MAX_STORED / (n_params * chains).max(1)).clamp(10, MAX_DRAWS_PER_CHAIN)
}

/// Default step size ε per method (batch-averaged log posterior, standardised data).
/// (Capped for stability by [`stable_step_size`] when the curvature is high.)
pub fn default_step_size(method: MethodArg) -> f64 {
    match method {
        MethodArg::Sgld => 1e-2,
        MethodArg::Sghmc | MethodArg::Sgnht | MethodArg::Baoa | MethodArg::Map => 1e-1,
        MethodArg::Tngd => super::tngd::TNGD_LR,
        m => gaussian_step_size(m),
    }
}

/// Default friction α per method: 0.1 for classification (tuned on the
/// default data set against NUTS, docs/cli.md), 1 for regression (whose noise
/// scale makes the curvature high, so the step size must shrink and more
/// damping mixes faster).
pub fn default_friction(method: MethodArg, classification: bool) -> f64 {
    match method {
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

/// Refuse the options that do not apply to `method` (one rule: an option
/// that would be ignored is an error, exit code 2).
fn check_applicable(args: &FitArgs) -> Result<()> {
    let m = args.method;
    if m == MethodArg::Nuts {
        return super::nuts::check_applicable(args);
    }
    if m == MethodArg::Tngd {
        super::tngd::check_applicable(args)?;
    }
    let name = m.name();
    let mut not_here: Vec<&str> = Vec::new();
    if !m.is_sampler() {
        for (given, opt) in [
            (args.friction.is_some(), "friction"),
            (args.burn_in.is_some(), "burn-in"),
            (args.thin.is_some(), "thin"),
        ] {
            if given {
                crate::bail_input!("--{opt} applies to the samplers only, not to --method {name}");
            }
        }
        for (given, opt) in [
            (args.adapt.is_some(), "adapt"),
            (args.max_steps.is_some(), "max-steps"),
        ] {
            if given {
                crate::bail_input!("--{opt} applies to the samplers only, not to --method {name}");
            }
        }
        if args.checkpoint_every.is_some() {
            crate::bail_input!(
                "--checkpoint-every applies to the samplers (sgld, sghmc, sgnht, baoa, map), \
                 not to a Gaussian fit (--method {name})"
            );
        }
    }
    if m == MethodArg::Analog {
        for (given, opt) in [
            (args.steps.is_some(), "steps"),
            (args.step_size.is_some(), "step-size"),
            (args.d.batch_size.is_some(), "batch-size"),
        ] {
            if given {
                crate::bail_input!(
                    "--{opt} does not apply to --method analog: the circuit's time steps, \
                     burn-in and read-out interval follow from the posterior's curvature \
                     (see docs/cli.md)"
                );
            }
        }
    }
    if matches!(m, MethodArg::Ekf | MethodArg::EkfDense) && args.step_size.is_some() {
        crate::bail_input!(
            "--step-size does not apply to --method {name}: the filter's step sizes follow \
             from --steps (see docs/cli.md)"
        );
    }
    if m == MethodArg::Sgld && args.friction.is_some() {
        not_here.push("friction");
    }
    if args.steps.is_some() && args.max_steps.is_some() {
        crate::bail_input!(
            "--max-steps bounds a run until converged; --steps makes a run of fixed length: give one of them"
        );
    }
    if m == MethodArg::Map {
        if args.adapt.is_some_and(|a| a != AdaptArg::None) {
            not_here.push("adapt");
        }
        for (given, opt) in [
            (args.max_steps.is_some(), "max-steps"),
            (args.target_ess.is_some(), "target-ess"),
            (args.target_rhat.is_some(), "target-rhat"),
            (args.require_converged, "require-converged"),
        ] {
            if given {
                not_here.push(opt);
            }
        }
        if args.burn_in.is_some_and(|b| b > 0) {
            not_here.push("burn-in");
        }
        if args.thin.is_some_and(|t| t > 1) {
            not_here.push("thin");
        }
    }
    if let Some(opt) = not_here.first() {
        crate::bail_input!("--{opt} does not apply to --method {name}");
    }
    Ok(())
}

/// Resolve every option of `args` on the prepared data.
pub fn resolve(args: &FitArgs, prep: &Prepared) -> Result<FitConfig> {
    check_applicable(args)?;
    super::cv::check(args)?;
    let method = args.method;
    let model = &prep.model;
    let classification = prep.classification();
    let n_train = prep.n_train();
    let step_size = args.step_size.unwrap_or(default_step_size(method));
    check_positive("step-size", step_size)?;
    if let Some(f) = args.friction {
        if !(f.is_finite() && f >= 0.0) {
            crate::bail_input!("--friction must be a finite number >= 0, got {f}");
        }
    }
    if args.steps == Some(0) {
        crate::bail_input!("--steps must be at least 1");
    }
    if args.thin == Some(0) {
        crate::bail_input!("--thin must be at least 1");
    }
    let is_map = method == MethodArg::Map;
    let target_ess = args.target_ess.unwrap_or(DEFAULT_TARGET_ESS);
    if !(target_ess.is_finite() && target_ess > 0.0) {
        crate::bail_input!("--target-ess must be a finite number > 0, got {target_ess}");
    }
    let target_rhat = args.target_rhat.unwrap_or(DEFAULT_TARGET_RHAT);
    if !(target_rhat.is_finite() && target_rhat > 1.0) {
        crate::bail_input!("--target-rhat must be a finite number > 1, got {target_rhat}");
    }
    if args.max_steps == Some(0) {
        crate::bail_input!("--max-steps must be at least 1");
    }
    let chains = args.chains.unwrap_or(if is_map { 1 } else { 4 });
    if chains == 0 {
        crate::bail_input!("--chains must be at least 1");
    }
    if chains > 1024 {
        crate::bail_input!("--chains {chains} is too many (at most 1024)");
    }
    let batch_size = args
        .d
        .batch_size
        .unwrap_or(if model.spec().kind == ModelKind::Mlp {
            128
        } else if n_train <= 2000 {
            n_train
        } else {
            256
        })
        .min(n_train);
    let mut cfg = FitConfig {
        data: prep.data_name.clone(),
        target: prep.target_name.clone(),
        model: model.spec().kind,
        task: if classification {
            "classification"
        } else {
            "regression"
        }
        .into(),
        hidden: model.spec().hidden.clone(),
        method,
        prior_sd: args.d.prior_sd,
        noise_sd: args.d.noise_sd,
        step_size,
        friction: 0.0,
        temperature: 1.0 / n_train as f64,
        steps: 0,
        burn_in: 0,
        thin: 1,
        adapt: AdaptArg::None,
        until: None,
        target_ess,
        target_rhat,
        chains,
        batch_size,
        test_fraction: args.d.test_fraction,
        seed: args.d.seed,
        standardize: !args.d.no_standardize,
        max_divergences: args.max_divergences,
        adapt_step_size: false,
        n_rows: prep.n_rows,
        n_train,
        n_test: prep.n_test,
        metrics_on: prep.metrics_on,
        marglik: args.marglik,
        marglik_noise: args.marglik_noise,
        last_layer: args.last_layer,
        cv: Default::default(),
    };
    // The parameters a dense method's matrices span.
    let mut approximated = model.n_params();
    if args.last_layer {
        if !matches!(family(method), Some(Family::Laplace(_))) {
            crate::bail_input!(
                "--last-layer restricts a Laplace approximation to the last layer; --method {} \
                 is not one (use a laplace-* method)",
                method.name()
            );
        }
        approximated = last_layer_size(model)?;
    }
    if args.marglik_noise {
        let ggn = matches!(
            family(method),
            Some(Family::Laplace(Curvature::DiagGgn | Curvature::DenseGgn))
        );
        if classification || args.d.noise_sd.is_none() || !ggn {
            crate::bail_input!(
                "--marglik-noise tunes the fixed noise sd of a regression (give --noise-sd) \
                 whose Laplace curvature is a GGN (--method laplace-diag-ggn or \
                 laplace-dense-ggn); this run has --method {}{}",
                method.name(),
                if classification {
                    " on a classification task"
                } else if args.d.noise_sd.is_none() {
                    " and a learned noise (the log_noise_sd parameter is fitted with the others)"
                } else {
                    ""
                }
            );
        }
    }
    if args.marglik && !matches!(family(method), Some(Family::Laplace(_))) {
        crate::bail_input!(
            "--marglik tunes the prior precision of a Laplace approximation; --method {} is not one \
             (use a laplace-* method)",
            method.name()
        );
    }
    if method == MethodArg::Analog {
        super::analog::check_model(model.spec().kind, model.spec().noise)?;
        cfg.steps = 0;
        return Ok(cfg);
    }
    if method == MethodArg::Tngd {
        super::tngd::resolve(args, &mut cfg)?;
        return Ok(cfg);
    }
    if !method.is_sampler() {
        let g = gaussian_plan(method, args.steps, n_train, batch_size, approximated)?;
        cfg.steps = g.steps;
        if let Some(eps) = g.step_size {
            cfg.step_size = eps;
        }
        return Ok(cfg);
    }
    if method == MethodArg::Nuts {
        super::nuts::resolve(args, &mut cfg, model.n_params())?;
        return Ok(cfg);
    }
    // An MLP posterior is far from Gaussian and its early draws are not
    // stationary: windowed metric estimates came out tiny and broke mixing
    // (digits, 2 hidden layers), so networks keep the fixed step size and a
    // run of fixed length unless asked (--adapt, --max-steps).
    let is_mlp = model.spec().kind == ModelKind::Mlp;
    // A cyclical step size spans a run of known length and is its own
    // step-size rule: it needs --steps and takes no adaptation.
    let cyclical = args.cv.step_schedule == Some(super::cv::StepScheduleArg::Cyclical);
    if cyclical {
        if args.steps.is_none() {
            crate::bail_input!(
                "--step-schedule cyclical needs --steps N: its cycles span a run of fixed length \
                 (a run until converged has no length to divide)"
            );
        }
        if args.adapt.is_some_and(|a| a != AdaptArg::None) {
            crate::bail_input!(
                "--adapt does not combine with --step-schedule cyclical: the schedule sets the \
                 step size (use --adapt none or a constant schedule)"
            );
        }
    }
    let adapt = args.adapt.unwrap_or(if is_map || is_mlp || cyclical {
        AdaptArg::None
    } else {
        AdaptArg::Diag
    });
    let until_mode = !is_map && args.steps.is_none() && (!is_mlp || args.max_steps.is_some());
    let steps = if until_mode {
        args.max_steps.unwrap_or(DEFAULT_MAX_STEPS)
    } else {
        args.steps.unwrap_or(DEFAULT_STEPS)
    };
    let burn_in = args.burn_in.unwrap_or(if is_map {
        0
    } else if until_mode {
        DEFAULT_WARMUP.min(steps / 2)
    } else {
        steps / 4
    });
    if burn_in >= steps {
        let opt = if until_mode { "--max-steps" } else { "--steps" };
        crate::bail_input!("--burn-in ({burn_in}) must be smaller than {opt} ({steps})");
    }
    let kept = if is_map { 1 } else { steps - burn_in };
    let per_chain = max_draws(model.n_params(), chains) as u64;
    let thin = args.thin.unwrap_or(if until_mode {
        1
    } else {
        kept.div_ceil(per_chain).max(1)
    });
    cfg.adapt = adapt;
    cfg.adapt_step_size = adapt != AdaptArg::None && args.step_size.is_none();
    cfg.until = until_mode.then(|| Until {
        target_ess,
        max_rhat: target_rhat,
        max_draws: (per_chain as usize).max(2 * MIN_VERDICT_DRAWS),
        min_draws: MIN_VERDICT_DRAWS,
    });
    if !is_map && thin > kept {
        crate::bail_input!(
            "--thin {thin} is larger than the {kept} steps after burn-in: no draw would be kept"
        );
    }
    cfg.friction = args.friction.unwrap_or(if adapt != AdaptArg::None {
        ADAPTED_FRICTION
    } else {
        default_friction(method, classification)
    });
    cfg.temperature = if is_map { 0.0 } else { cfg.temperature };
    cfg.steps = steps;
    cfg.burn_in = burn_in;
    cfg.thin = thin;
    cfg.cv = super::cv::plan(args, steps)?;
    // Without adaptation, a default step size is capped so that the
    // integrator is stable at the curvature found near the mode, from chain
    // 0's starting point.
    if args.step_size.is_none() && adapt == AdaptArg::None {
        let theta0 = model.init(&mut chain_rng(args.d.seed, 0));
        let density = model.density(DType::F64, &Device::Cpu);
        let batch = model.batch(&prep.train_x, &prep.train_y, DType::F64, &Device::Cpu)?;
        let c = langevin::tune::max_curvature(&density, &theta0, &batch, args.d.seed)?;
        let cap = stable_step_size(method, c, cfg.friction);
        if cap < cfg.step_size {
            if !args.quiet {
                eprintln!(
                    "note: largest curvature {c:.4} near the mode: default step size lowered from {} to {cap:.4} for stability",
                    cfg.step_size
                );
            }
            cfg.step_size = cap;
        }
    }
    cfg.run_config(None, args.threads)
        .validate()
        .map_err(bad_input)?;
    Ok(cfg)
}

// ---------------------------------------------------------------------------
// The Gaussian methods' plan
// ---------------------------------------------------------------------------

/// Largest number of parameters a dense method accepts (it stores P × P matrices).
pub const MAX_DENSE_PARAMS: usize = 2000;

/// Default VI steps and learning rate.
const VI_STEPS: u64 = 10_000;
const VI_LR: f64 = 1e-2;
/// Default IVON learning rate (its steps are VI's).
const IVON_LR: f64 = 0.1;
/// Default L-BFGS iterations (full batch) and Adam steps / learning rate (minibatches) of the MAP.
const MAP_LBFGS_ITERS: u64 = 1000;
const MAP_ADAM_STEPS: u64 = 5000;
const MAP_ADAM_LR: f64 = 1e-3;
/// Default EKF passes over the training rows.
const EKF_PASSES: u64 = 10;

/// The Laplace curvatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curvature {
    DiagFisher,
    DenseFisher,
    DiagGgn,
    DenseGgn,
    Hessian,
    /// Kronecker-factored GGN per linear layer (not dense: no P × P matrix).
    Kfac,
}

/// The kinds of Gaussian approximation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Vi { dense: bool },
    Ivon,
    Laplace(Curvature),
    Ekf { dense: bool },
}

/// The Gaussian family of `m` (`None` for the samplers).
pub fn family(m: MethodArg) -> Option<Family> {
    Some(match m {
        MethodArg::Vi => Family::Vi { dense: false },
        MethodArg::ViDense => Family::Vi { dense: true },
        MethodArg::Ivon => Family::Ivon,
        MethodArg::LaplaceDiagFisher => Family::Laplace(Curvature::DiagFisher),
        MethodArg::LaplaceDenseFisher => Family::Laplace(Curvature::DenseFisher),
        MethodArg::LaplaceDiagGgn => Family::Laplace(Curvature::DiagGgn),
        MethodArg::LaplaceDenseGgn => Family::Laplace(Curvature::DenseGgn),
        MethodArg::LaplaceHessian => Family::Laplace(Curvature::Hessian),
        MethodArg::LaplaceKfac => Family::Laplace(Curvature::Kfac),
        MethodArg::Ekf => Family::Ekf { dense: false },
        MethodArg::EkfDense => Family::Ekf { dense: true },
        _ => return None,
    })
}

fn is_dense(f: Family) -> bool {
    match f {
        Family::Vi { dense } | Family::Ekf { dense } => dense,
        Family::Ivon => false,
        Family::Laplace(c) => matches!(
            c,
            Curvature::DenseFisher | Curvature::DenseGgn | Curvature::Hessian
        ),
    }
}

/// The `--step-size` default of a Gaussian method (VI: Adam's learning rate;
/// IVON: its learning rate; Laplace: the learning rate of the Adam MAP with
/// minibatches).
fn gaussian_step_size(m: MethodArg) -> f64 {
    match family(m) {
        Some(Family::Vi { .. }) => VI_LR,
        Some(Family::Ivon) => IVON_LR,
        _ => MAP_ADAM_LR,
    }
}

/// The run lengths of a Gaussian method.
struct GaussianPlan {
    /// Optimiser steps (VI, the Adam MAP), L-BFGS iterations or filter updates.
    pub steps: u64,
    /// The step size fixed by the method (the EKF's `N / steps`), if any.
    pub step_size: Option<f64>,
}

/// The number of parameters in the model's last layer (`--last-layer`); a model
/// without layers (the linear models) is bad input.
pub fn last_layer_size(model: &langevin_models::Model) -> Result<usize> {
    let c = langevin::laplace::LaplaceConfig::last_layer(model.layout(), 1.0).map_err(|_| {
        crate::exit::bad_input(format!(
            "--last-layer needs a network with layers (--model mlp); the {} model is one \
             linear layer already: drop --last-layer",
            model.spec().kind.name()
        ))
    })?;
    let names = c.subset.unwrap_or_default();
    Ok(names
        .iter()
        .filter_map(|n| model.layout().range(n).map(|r| r.len()))
        .sum())
}

/// Resolve the steps of `method` (`steps`: the user's `--steps`) and refuse
/// a dense method on a model with more than [`MAX_DENSE_PARAMS`] parameters.
fn gaussian_plan(
    method: MethodArg,
    steps: Option<u64>,
    n_train: usize,
    batch_size: usize,
    n_params: usize,
) -> Result<GaussianPlan> {
    let Some(fam) = family(method) else {
        anyhow::bail!("internal error: {method:?} is not a Gaussian method");
    };
    let name = method.name();
    if is_dense(fam) && n_params > MAX_DENSE_PARAMS {
        crate::bail_input!(
            "--method {name} stores {n_params} x {n_params} matrices: at most \
             {MAX_DENSE_PARAMS} parameters are allowed, this model has {n_params}; use a \
             diagonal or Kronecker-factored method (vi, laplace-diag-ggn, laplace-diag-fisher, \
             laplace-kfac, ekf) or a smaller model"
        );
    }
    let full_batch = batch_size >= n_train;
    let steps = match steps {
        Some(s) => s,
        None => match fam {
            Family::Vi { .. } | Family::Ivon => VI_STEPS,
            Family::Laplace(_) if full_batch => MAP_LBFGS_ITERS,
            Family::Laplace(_) => MAP_ADAM_STEPS,
            Family::Ekf { .. } => EKF_PASSES * n_train.div_ceil(batch_size) as u64,
        },
    };
    let step_size = matches!(fam, Family::Ekf { .. }).then(|| n_train as f64 / steps as f64);
    Ok(GaussianPlan { steps, step_size })
}

#[cfg(test)]
mod tests {
    use super::*;
    use langevin_models::{Model, ModelSpec, Noise, Task};

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
        let density = model.density(DType::F64, &Device::Cpu);
        let batch = model.batch(&x, &y, DType::F64, &Device::Cpu).unwrap();
        let start = langevin_core::Params::new(model.layout().clone(), vec![0.7, -0.2]).unwrap();
        let got = langevin::tune::max_curvature(&density, &start, &batch, 3).unwrap();
        assert!((got - exact).abs() < 1e-4 * exact, "{got} vs {exact}");
        // And the caps keep the integrators stable at that curvature.
        assert!(stable_step_size(MethodArg::Sghmc, got, 0.1) * got < 0.1);
        assert!(stable_step_size(MethodArg::Sgld, got, 0.0) * got < 2.0);
        assert!(stable_step_size(MethodArg::Baoa, got, 0.1) * got.sqrt() < 2.0);
    }
}
