//! `langevin fit --method vi|vi-dense|ivon|laplace-*|ekf|ekf-dense`: Gaussian
//! approximations of the posterior, with the same data pipeline and the same
//! output directory as the samplers.
//!
//! Every method sees what the samplers see ([`super::data::prepare`]: the split, the
//! standardisation, the model and its batch-averaged log posterior
//! `ℓ(θ) = mean log lik + log prior / N`), fits a Gaussian `q = N(μ, Σ)` in
//! f64, then writes `--chains` × D independent draws of `q` to `samples.csv`
//! (D = 1000, fewer for large models, as the samplers' thinning), so that
//! `summary.json` (ESS, R-hat, posterior-predictive metrics), the plots,
//! `langevin predict` and `langevin diagnose` work unchanged. `summary.json`
//! adds `gaussian: {kind, method, mean, sd, ...}` (the exact marginal means
//! and sds of q, and what the fit did).
//!
//! | method | q | fit (defaults) |
//! |---|---|---|
//! | `vi` | diagonal | Adam on the NELBO at T = 1/N (stick the landing, 1 sample per step), 10 000 steps, learning rate 1e-2 cosine-decayed to 1e-4, mean started at chain 0's starting point, sds at 0.1 · min(prior sd, 1) |
//! | `vi-dense` | dense | the same with `q = N(m, L Lᵀ)`, `L` started at 0.1 · min(prior sd, 1) · I |
//! | `ivon` | diagonal | IVON (`langevin::vi::Ivon`) with λ = N, 10 000 steps, learning rate 0.1 cosine-decayed to 1e-3, β₂ = 0.999 (short runs), 1 sample per step, mean as `vi`, `h₀` such that the sds start at 0.1 · min(prior sd, 1) |
//! | `laplace-diag-fisher` | diagonal | MAP, then `P = I/s² + Σᵢ gᵢ²` (per-example log-likelihood gradients) |
//! | `laplace-dense-fisher` | dense | MAP, then `P = I/s² + Σᵢ gᵢ gᵢᵀ` |
//! | `laplace-diag-ggn` | diagonal | MAP, then `P = I/s² + diag Σᵢ Jᵢᵀ Hᵢ Jᵢ` (network Jacobian, output-likelihood Hessian) |
//! | `laplace-dense-ggn` | dense | MAP, then `P = I/s² + Σᵢ Jᵢᵀ Hᵢ Jᵢ` |
//! | `laplace-kfac` | Kronecker-factored | MAP, then per linear layer `P = (Σᵢ ãᵢãᵢᵀ / N) ⊗ Σᵢ gᵢgᵢᵀ + I/s²` (KFAC of the GGN, exact factors: `ã` the layer input with a 1 appended, `g` the output-Hessian square roots backpropagated; laplace-torch's `kron`); a learned `log_noise_sd` gets its diagonal GGN; not dense (any size) |
//! | `laplace-hessian` | dense | MAP, then `P = −∇² log posterior`: exact for the MLP (an R-operator), central differences of f64 gradients for the linear models (whose log posteriors are smooth: about 1e-10 relative) |
//! | `ekf` | diagonal | extended Kalman filter from the prior `N(0, s² I)`, empirical Fisher, 10 passes over the training set |
//! | `ekf-dense` | dense | the same with a dense covariance |
//!
//! **MAP** (Laplace): with full batches (the default for the linear models
//! up to 2000 training rows) L-BFGS on the full-batch log posterior (memory
//! 10, Armijo backtracking) for at most `--steps` (default 1000) iterations,
//! stopping when the largest gradient entry is below 1e-9; with minibatches
//! (the MLP, or `--batch-size` below N) Adam for `--steps` (default 5000)
//! steps at learning rate `--step-size` (default 1e-3) cosine-decayed to
//! 1/100 of it. The curvature is then accumulated over one pass of the
//! training rows in minibatches of `min(batch size, 256)`; q = N(θ*, P⁻¹).
//!
//! **GGN output likelihoods**: Gaussian with the fixed noise variance;
//! Bernoulli-logit (logistic); categorical-softmax (softmax and the MLP
//! classifier). A learned noise scale makes the output two-dimensional,
//! `(f, log σ)`, with the Fisher information of `N(f, σ²)` in `(f, log σ)`,
//! `diag(1/σ², 2)`, as the output Hessian (so `log_noise_sd` gets curvature).
//!
//! **EKF**: `--steps` filter updates (default 10 passes: 10 · ⌈N / B⌉), each
//! over one minibatch of the per-example log likelihoods, starting from the
//! prior (mean 0 for the linear models, the MLP's random starting point for
//! the MLP, sd = prior sd, no transition noise). An update over b rows has
//! step size `ε = b · N / (steps · B)`, so the updates together absorb the
//! data once (each pass contributes `1/passes` of its Fisher information).
//!
//! **Dense methods** (`vi-dense`, `laplace-dense-*`, `laplace-hessian`,
//! `ekf-dense`) store `P × P` matrices: they are refused (exit code 2) above
//! [`super::plan::MAX_DENSE_PARAMS`] parameters.
//!
//! **Failures**: a non-finite log posterior during VI or the Adam MAP is a
//! skipped step (counted in `divergences`); more than `--max-divergences`, a
//! non-finite MAP, or a precision/covariance that is not positive definite
//! stops the run with exit code 3 (no `summary.json`).
//!
//! Reproducibility: the fit draws its random numbers (starting point,
//! minibatch order, VI noise) from `chain_rng(seed, 0)`'s stream for the
//! fit (`chain_rng(seed, u64::MAX - 2)`), and chain `c`'s draws of q come
//! from `chain_rng(seed, c)`.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use langevin::curvature::Subset;
use langevin::ekf::{DenseEkf, DiagEkf, EkfConfig};
use langevin::laplace::marglik::Curvature as Evidence;
use langevin::laplace::{
    DenseFisherLaplace, DenseGgnLaplace, DenseHessianConfig, DenseHessianLaplace,
    DiagFisherLaplace, DiagGgnLaplace, KronLaplace, LaplaceConfig,
};
use langevin::optim::{Lbfgs, LbfgsConfig, Optim, OptimConfig, Optimizer};
use langevin::vi::{DenseVi, DenseViConfig, DiagVi, DiagViConfig, Ivon, IvonConfig};
use langevin_core::{chain_rng, ChainRng, LogDensity, Params, Schedule, Transform};
use langevin_models::curvature::{kron_model, output_model, per_example_loglik};
use langevin_models::{Batch, Model, ModelKind};
use rand::seq::SliceRandom;
use serde_json::json;

use langevin::samples::{CsvDrawWriter, Samples};

use super::data::Prepared;
use super::plan::{family, Curvature, Family, FitConfig};
use super::report::{predictive_metrics, summarize_and_report, ReportArgs};
use crate::exit::{bad_input, Diverged};
use crate::glm::{glm_predictive, GaussianCov, StoredGaussian};
use crate::rundir::num;

/// Largest minibatch for the curvature (per-example gradients and Jacobians are held in memory).
const CURVATURE_BATCH: usize = 256;

/// Draws `n` parameter values of q with the given generator.
type Sampler = Box<dyn Fn(usize, &mut ChainRng) -> langevin_core::Result<Vec<Params>>>;

/// The fitted Gaussian: marginal means and sds, and how to draw from it.
struct Fitted {
    kind: &'static str,
    mean: Vec<f64>,
    sd: Vec<f64>,
    /// `n` draws with the given generator.
    sampler: Sampler,
    /// What the fit did (saved under `gaussian` in summary.json).
    info: serde_json::Map<String, serde_json::Value>,
    divergences: u64,
    /// The dense covariance (row-major d × d) of a dense method; `None`: diagonal,
    /// `sd²`.
    dense_cov: Option<Vec<f64>>,
    /// The approximated parameters (`--last-layer`), `None` for all: `dense_cov` is then
    /// over these only, and `sd` is 0 for the others (fixed at the mean).
    subset: Option<Vec<usize>>,
    /// A KFAC Laplace state (its covariance is stored as the factors).
    kron: Option<Box<langevin::laplace::KronLaplaceState>>,
}

/// Fit the Gaussian of `r.cfg.method`, write `--chains` x D independent
/// draws of it to `samples.csv`, and summarise them: the content of
/// `summary.json` (with the fitted Gaussian under `gaussian`).
pub fn run(r: &ReportArgs<'_>) -> Result<serde_json::Value> {
    let (cfg, prep) = (r.cfg, r.prep);
    let method = cfg.method;
    let Some(fam) = family(method) else {
        anyhow::bail!("internal error: {method:?} is not a Gaussian method");
    };
    let name = method.name();
    let model = &prep.model;
    let fitter = Fitter {
        cfg,
        prep,
        fam,
        steps: cfg.steps,
        lr: cfg.step_size,
        // The run loop's rule: at most a tenth of the steps.
        max_divergences: langevin::run::RunConfig {
            steps: cfg.steps,
            max_divergences: cfg.max_divergences,
            ..Default::default()
        }
        .divergence_limit(),
        name: name.clone(),
        tuned_noise: std::cell::Cell::new(None),
    };
    let mut fitted = fitter.fit()?;
    // `--marglik` with a fixed regression noise tunes the noise too: the model (and
    // run.json) get the evidence's noise sd, so the report and `predict` use it.
    let tuned_prep;
    let tuned_report;
    let (r, prep, model) = match fitter.tuned_noise.get() {
        None => (r, prep, model),
        Some(sd) => {
            let mut spec = model.spec().clone();
            spec.noise = langevin_models::Noise::Fixed(sd);
            let mut p2 = prep.clone();
            p2.model = Model::new(spec).map_err(bad_input)?;
            tuned_prep = p2;
            let path = r.out_dir.join("run.json");
            let mut meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
            meta["model"]["noise"] = serde_json::to_value(langevin_models::Noise::Fixed(sd))?;
            langevin::run::write_json_atomic(&path, &meta)?;
            tuned_report = ReportArgs {
                prep: &tuned_prep,
                ..*r
            };
            (&tuned_report, &tuned_prep, &tuned_prep.model)
        }
    };

    // Draws of q, chain by chain, in the samplers' format.
    let draws_per_chain = cfg.draws_per_chain(model.n_params());
    let mut samples = Samples::new(model.param_names().to_vec(), cfg.chains);
    for (c, trace) in samples.chains.iter_mut().enumerate() {
        let mut rng = chain_rng(cfg.seed, c as u64);
        let ds = (fitted.sampler)(draws_per_chain, &mut rng).map_err(|e| not_pd(e, &name))?;
        for d in ds {
            if d.values().iter().any(|v| !v.is_finite()) {
                return Err(anyhow::Error::new(Diverged(format!(
                    "--method {name}: the fitted Gaussian has non-finite draws"
                ))));
            }
            trace.push(d.values(), f64::NAN)?;
        }
    }
    write_samples(r.out_dir, &samples)?;
    // q itself, for `langevin predict --predictive glm`, and its linearised predictive.
    let stored = StoredGaussian {
        mean: fitted.mean.clone(),
        cov: match (fitted.kron.take(), fitted.dense_cov.take()) {
            (Some(k), _) => GaussianCov::Kron(k),
            (None, Some(c)) => GaussianCov::Dense(c),
            (None, None) => GaussianCov::Diag(match &fitted.subset {
                Some(ix) => ix.iter().map(|&j| fitted.sd[j] * fitted.sd[j]).collect(),
                None => fitted.sd.iter().map(|s| s * s).collect(),
            }),
        },
        subset: fitted.subset.clone(),
    };
    stored.write(r.out_dir)?;
    let glm = glm_predictive(
        model,
        &stored,
        &prep.eval_x,
        super::report::MAX_PREDICTIVE_DRAWS,
        cfg.seed,
    )?;
    let (mut glm_metrics, _) = predictive_metrics(&glm, prep, cfg.metrics_on)?;
    glm_metrics.insert(
        "predictive".into(),
        json!("linearised (GLM) at the mean, Monte Carlo over the outputs"),
    );
    glm_metrics.insert(
        "draws_per_row".into(),
        json!(super::report::MAX_PREDICTIVE_DRAWS),
    );
    let divergences = vec![fitted.divergences];
    let mut summary = summarize_and_report(r, &samples, &divergences, None)?;
    let mut g = serde_json::Map::new();
    g.insert("kind".into(), json!(fitted.kind));
    g.insert("method".into(), json!(name));
    g.insert(
        "mean".into(),
        json!(fitted.mean.iter().map(|&v| num(v)).collect::<Vec<_>>()),
    );
    g.insert(
        "sd".into(),
        json!(fitted.sd.iter().map(|&v| num(v)).collect::<Vec<_>>()),
    );
    g.extend(fitted.info);
    if !r.quiet {
        let on = cfg.metrics_on;
        let show = |k: &str| glm_metrics.get(k).and_then(|v| v.as_f64());
        let mut line = format!("linearised (GLM) predictive on the {on} rows:");
        for k in ["nll", "accuracy", "rmse"] {
            if let Some(v) = show(&format!("{on}_{k}")) {
                line += &format!(" {k} {v:.4}");
            }
        }
        if let Some(v) = show("ece") {
            line += &format!(" ece {v:.4}");
        }
        println!("{line} (langevin predict --predictive glm)");
    }
    if let Some(obj) = summary.as_object_mut() {
        obj.insert("glm".into(), serde_json::Value::Object(glm_metrics));
        obj.insert("gaussian".into(), serde_json::Value::Object(g));
        obj.insert("seconds".into(), json!(r.t0.elapsed().as_secs_f64()));
    }
    Ok(summary)
}

/// Every chain's draws to `samples.csv` in `out_dir`, in the samplers' format.
pub(super) fn write_samples(out_dir: &std::path::Path, samples: &Samples) -> Result<()> {
    let mut writer =
        CsvDrawWriter::create(out_dir.join(langevin::run::SAMPLES_FILE), &samples.names)?;
    for (c, trace) in samples.chains.iter().enumerate() {
        for i in 0..trace.n_draws() {
            writer.write(c, i, trace.draw(i))?;
        }
    }
    writer.sync()?;
    Ok(())
}

/// A precision or covariance that is not positive definite stops the run (exit code 3).
fn not_pd(e: langevin_core::Error, name: &str) -> anyhow::Error {
    match e {
        langevin_core::Error::NotPositiveDefinite { context } => {
            anyhow::Error::new(Diverged(format!(
                "--method {name}: the fitted {} is not positive definite{}; the optimiser may \
                 not have reached a mode (try more --steps), or use a GGN or diagonal method",
                "precision/covariance",
                context.map(|c| format!(" ({c})")).unwrap_or_default()
            )))
        }
        e => e.into(),
    }
}

fn diverged(name: &str, what: &str) -> anyhow::Error {
    anyhow::Error::new(Diverged(format!("--method {name}: {what}")))
}

struct Fitter<'a> {
    cfg: &'a FitConfig,
    prep: &'a Prepared,
    fam: Family,
    /// The regression noise sd `--marglik` chose (a fixed noise with a GGN curvature).
    tuned_noise: std::cell::Cell<Option<f64>>,
    steps: u64,
    lr: f64,
    max_divergences: u64,
    name: String,
}

impl Fitter<'_> {
    fn model(&self) -> &Model {
        &self.prep.model
    }

    fn fit(&self) -> Result<Fitted> {
        let dev = Device::Cpu;
        let model = self.model();
        let full = model.batch(&self.prep.train_x, &self.prep.train_y, DType::F64, &dev)?;
        let mut rng = chain_rng(self.cfg.seed, u64::MAX - 2);
        match self.fam {
            Family::Vi { dense } => self.vi(dense, &full, &mut rng),
            Family::Ivon => self.ivon(&full, &mut rng),
            Family::Laplace(c) => self.laplace(c, &full, &mut rng),
            Family::Ekf { dense } => self.ekf(dense, &full, &mut rng),
        }
    }

    /// Starting point: chain 0's, as the samplers.
    fn start(&self) -> Params {
        self.model().init(&mut chain_rng(self.cfg.seed, 0))
    }

    fn init_sd(&self) -> f64 {
        0.1 * self.model().spec().prior_sd.min(1.0)
    }

    /// `self.steps` updates of `t` on `batcher`'s minibatches, a non-finite
    /// step skipped and counted (the run loop's divergence rule).
    fn optimise<T: Transform<Batch = Batch>>(
        &self,
        t: &T,
        state: &mut T::State,
        batcher: &mut Batcher,
        full: &Batch,
        rng: &mut ChainRng,
        divergences: &mut u64,
    ) -> Result<()> {
        for step in 0..self.steps {
            super::sample::check_interrupt(step)?;
            let b = batcher.next(full, rng)?;
            match t.step(state, &b, rng) {
                Ok(_) => {}
                Err(e) if e.is_recoverable() => self.skip(divergences, step)?,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Count a non-finite step; an error past the divergence limit.
    fn skip(&self, divergences: &mut u64, step: u64) -> Result<()> {
        *divergences += 1;
        if *divergences > self.max_divergences {
            return Err(diverged(
                &self.name,
                &format!(
                    "stopped at step {step}: more than {} steps with a non-finite log posterior. \
                     Try a smaller --step-size.",
                    self.max_divergences
                ),
            ));
        }
        Ok(())
    }

    fn vi(&self, dense: bool, full: &Batch, rng: &mut ChainRng) -> Result<Fitted> {
        let model = self.model();
        let density = model.density(DType::F64, &Device::Cpu);
        let temperature = 1.0 / self.prep.train_y.len() as f64;
        let optimizer = Optimizer::adam(Schedule::cosine(self.lr, self.lr / 100.0, self.steps));
        let mut batcher = Batcher::new(self.prep.train_y.len(), self.cfg.batch_size);
        let start = self.start();
        let s0 = self.init_sd();
        let mut divergences = 0;
        let mut info = serde_json::Map::new();
        info.insert("optimizer".into(), json!("adam"));
        info.insert("steps".into(), json!(self.steps));
        info.insert("learning_rate".into(), json!(self.lr));
        info.insert(
            "learning_rate_schedule".into(),
            json!("cosine to 1/100 of the initial rate"),
        );
        info.insert("mc_samples_per_step".into(), json!(1));
        info.insert("temperature".into(), json!(temperature));
        if dense {
            let t = DenseVi::new(
                &density,
                DenseViConfig {
                    optimizer,
                    temperature: temperature.into(),
                    n_samples: 1,
                    stick_the_landing: true,
                    init_scale: s0,
                },
            )
            .map_err(bad_input)?;
            let p = start.len();
            let mut chol = vec![0.0; p * p];
            for j in 0..p {
                chol[j * p + j] = s0;
            }
            let mut state = t.init_with(start, chol)?;
            self.optimise(&t, &mut state, &mut batcher, full, rng, &mut divergences)?;
            check_params(&state.params, &state.chol, &self.name)?;
            let cov = state.covariance();
            info.insert("nelbo".into(), num(state.nelbo));
            let mean = state.params.values().to_vec();
            let sd = (0..p).map(|j| cov[j * p + j].sqrt()).collect();
            Ok(Fitted {
                kind: "dense",
                mean,
                sd,
                sampler: Box::new(move |n, rng| Ok(state.sample(n, rng))),
                info,
                divergences,
                dense_cov: Some(cov),
                subset: None,
                kron: None,
            })
        } else {
            let t = DiagVi::new(
                &density,
                DiagViConfig {
                    optimizer,
                    temperature: temperature.into(),
                    n_samples: 1,
                    stick_the_landing: true,
                    init_log_sd: s0.ln(),
                },
            )
            .map_err(bad_input)?;
            let mut state = t.init(start, rng)?;
            self.optimise(&t, &mut state, &mut batcher, full, rng, &mut divergences)?;
            check_params(&state.params, &state.log_sd, &self.name)?;
            info.insert("nelbo".into(), num(state.nelbo));
            let mean = state.params.values().to_vec();
            let sd = state.sd();
            Ok(Fitted {
                kind: "diag",
                mean,
                sd,
                sampler: Box::new(move |n, rng| Ok(state.sample(n, rng))),
                info,
                divergences,
                dense_cov: None,
                subset: None,
                kron: None,
            })
        }
    }

    /// IVON with λ = N (the posterior), started as `vi`.
    fn ivon(&self, full: &Batch, rng: &mut ChainRng) -> Result<Fitted> {
        let model = self.model();
        let density = model.density(DType::F64, &Device::Cpu);
        let n = self.prep.train_y.len() as f64;
        let s0 = self.init_sd();
        // σ₀ = 1/sqrt(λ h₀).
        let hess_init = 1.0 / (n * s0 * s0);
        let config = IvonConfig {
            step_size: Schedule::cosine(self.lr, self.lr / 100.0, self.steps),
            ess: n,
            beta2: 0.999,
            hess_init,
            ..IvonConfig::default()
        };
        let mut info = serde_json::Map::new();
        info.insert("optimizer".into(), json!("ivon"));
        info.insert("steps".into(), json!(self.steps));
        info.insert("learning_rate".into(), json!(self.lr));
        info.insert(
            "learning_rate_schedule".into(),
            json!("cosine to 1/100 of the initial rate"),
        );
        info.insert("mc_samples_per_step".into(), json!(config.n_samples));
        info.insert("ess".into(), json!(n));
        info.insert("beta1".into(), json!(config.beta1));
        info.insert("beta2".into(), json!(config.beta2));
        info.insert("hess_init".into(), json!(hess_init));
        let t = Ivon::new(&density, config).map_err(bad_input)?;
        let mut batcher = Batcher::new(self.prep.train_y.len(), self.cfg.batch_size);
        let mut state = t.init(self.start(), rng)?;
        let mut divergences = 0;
        self.optimise(&t, &mut state, &mut batcher, full, rng, &mut divergences)?;
        check_params(&state.params, &state.hess, &self.name)?;
        let mean = state.params.values().to_vec();
        let sd = t.sd(&state);
        if sd.iter().any(|v| !v.is_finite()) {
            return Err(diverged(&self.name, "the fitted Gaussian is not finite"));
        }
        // q = N(m, diag(sd²)), drawn as `Ivon::sample` draws (which borrows the density).
        let (m, s) = (state.params, sd.clone());
        let sampler: Sampler = Box::new(move |n, rng| {
            let mut xi = vec![0.0; s.len()];
            Ok((0..n)
                .map(|_| {
                    langevin_core::rng::fill_standard_normal(rng, &mut xi);
                    let mut p = m.clone();
                    for ((t, sj), z) in p.values_mut().iter_mut().zip(&s).zip(&xi) {
                        *t += sj * z;
                    }
                    p
                })
                .collect())
        });
        Ok(Fitted {
            kind: "diag",
            mean,
            sd,
            sampler,
            info,
            divergences,
            dense_cov: None,
            subset: None,
            kron: None,
        })
    }

    /// The MAP: L-BFGS on full batches, Adam on minibatches.
    fn map(
        &self,
        full: &Batch,
        rng: &mut ChainRng,
        info: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<(Params, f64, u64)> {
        let model = self.model();
        let density = model.density(DType::F64, &Device::Cpu);
        let start = self.start();
        let n = self.prep.train_y.len();
        let mut divergences = 0;
        let theta = if self.cfg.batch_size >= n {
            let r = Lbfgs::new(LbfgsConfig {
                max_iters: self.steps as usize,
                tol: 1e-9,
                ..LbfgsConfig::default()
            })
            .map_err(bad_input)?
            .run(&density, start, full)
            .map_err(|e| match e {
                langevin_core::Error::NonFiniteLogDensity { .. } => diverged(
                    &self.name,
                    "the log posterior is not finite at the starting point of the MAP search",
                ),
                e => e.into(),
            })?;
            info.insert("map_optimizer".into(), json!("lbfgs"));
            info.insert("map_iterations".into(), json!(r.iterations));
            info.insert("map_max_abs_gradient".into(), num(r.max_abs_grad));
            r.params
        } else {
            let t = Optim::new(
                &density,
                OptimConfig {
                    optimizer: Optimizer::adam(Schedule::cosine(
                        self.lr,
                        self.lr / 100.0,
                        self.steps,
                    )),
                    ..OptimConfig::default()
                },
            )
            .map_err(bad_input)?;
            let mut state = t.init(start, rng)?;
            let mut batcher = Batcher::new(n, self.cfg.batch_size);
            self.optimise(&t, &mut state, &mut batcher, full, rng, &mut divergences)?;
            info.insert("map_optimizer".into(), json!("adam"));
            info.insert("map_steps".into(), json!(self.steps));
            info.insert("map_learning_rate".into(), json!(self.lr));
            state.params
        };
        let (lp, ()) = density.value(&theta, full)?;
        if !lp.is_finite() || theta.values().iter().any(|v| !v.is_finite()) {
            return Err(diverged(
                &self.name,
                "the MAP search ended at a non-finite point",
            ));
        }
        info.insert("map_log_posterior".into(), num(lp));
        Ok((theta, lp, divergences))
    }

    fn laplace(&self, c: Curvature, full: &Batch, rng: &mut ChainRng) -> Result<Fitted> {
        let model = self.model();
        let mut info = serde_json::Map::new();
        let (theta, lp, divergences) = self.map(full, rng, &mut info)?;
        let t_curv = std::time::Instant::now();
        let n = self.prep.train_y.len();
        let d = theta.len();
        let cb = self.cfg.batch_size.clamp(1, CURVATURE_BATCH);
        let prior_prec = 1.0 / model.spec().prior_sd.powi(2);
        // --last-layer on an MLP (but KFAC, whose factors cost little): the curvature of
        // the last layer's own model on the penultimate features, the same log likelihood
        // of the same parameters without the network's full Jacobian.
        let feature =
            if self.cfg.last_layer && model.spec().kind == ModelKind::Mlp && c != Curvature::Kfac {
                let (fm, range) = model.last_layer_model(theta.values())?;
                let phi = model.last_layer_features(theta.values(), &self.prep.train_x)?;
                let ffull = fm.batch(&phi, &self.prep.train_y, DType::F64, &Device::Cpu)?;
                Some((fm, range, ffull))
            } else {
                None
            };
        let (cm, ctheta, cfull) = match &feature {
            Some((fm, range, ffull)) => (
                fm,
                Params::new(fm.layout().clone(), theta.values()[range.clone()].to_vec())?,
                ffull,
            ),
            None => (model, theta.clone(), full),
        };
        // The approximated parameters in the full model's indices (for the evidence and
        // the output), from the state's subset of the curvature model's.
        let full_subset = |s: &Subset| -> Result<Subset> {
            Ok(match &feature {
                Some((_, range, _)) => Subset::from_indices(range.clone().collect(), d)?,
                None => s.clone(),
            })
        };
        // Draws of the curvature model's parameters, embedded in θ*.
        let embed = {
            let range = feature.as_ref().map(|f| f.1.clone());
            let theta = theta.clone();
            move |draws: Vec<Params>| -> Vec<Params> {
                match &range {
                    None => draws,
                    Some(r) => draws
                        .into_iter()
                        .map(|p| {
                            let mut q = theta.clone();
                            q.values_mut()[r.clone()].copy_from_slice(p.values());
                            q
                        })
                        .collect(),
                }
            }
        };
        // One pass over the training rows, in order (the sums do not depend on it).
        let batches: Vec<Batch> = (0..n)
            .step_by(cb)
            .map(|lo| slice_batch(cfull, lo, (lo + cb).min(n)))
            .collect::<Result<_>>()?;
        let base = if self.cfg.last_layer && feature.is_none() {
            LaplaceConfig::last_layer(model.layout(), prior_prec).map_err(bad_input)?
        } else {
            LaplaceConfig {
                init_prec_diag: prior_prec,
                subset: None,
            }
        };
        if self.cfg.last_layer {
            let names = LaplaceConfig::last_layer(model.layout(), prior_prec)
                .map_err(bad_input)?
                .subset;
            info.insert("subset".into(), json!(names));
        }
        if feature.is_some() {
            info.insert(
                "last_layer_curvature".into(),
                json!("on the penultimate features (the last layer as a model of its own)"),
            );
        }
        info.insert("curvature_batch_size".into(), json!(cb));
        info.insert("curvature_passes".into(), json!(1));
        let name = self.name.clone();
        let pe = per_example_loglik(cm);
        let om = output_model(cm);
        let mut fitted = match c {
            Curvature::Kfac => {
                self.laplace_kfac((ctheta, lp, divergences), &batches, base, info, rng)?
            }
            Curvature::DiagFisher | Curvature::DiagGgn => {
                let mut state = if c == Curvature::DiagFisher {
                    let t = DiagFisherLaplace::new(&pe, base)?;
                    let mut s = t.init(ctheta.clone(), rng)?;
                    accumulate(&t, &mut s, &batches, rng, &name)?;
                    s
                } else {
                    let t = DiagGgnLaplace::new(&om, base)?;
                    let mut s = t.init(ctheta.clone(), rng)?;
                    accumulate(&t, &mut s, &batches, rng, &name)?;
                    s
                };
                state.log_posterior = lp;
                if self.cfg.marglik {
                    // H = P − δ₀ I, then P = H + δ* (or G/σ*² + δ* with the noise).
                    let mut h: Vec<f64> = state
                        .prec_diag
                        .iter()
                        .map(|p| (p - prior_prec).max(0.0))
                        .collect();
                    let subset = full_subset(&state.subset)?;
                    let delta = self.marglik(c, &theta, &subset, lp, &mut h, None, &mut info)?;
                    for (p, h) in state.prec_diag.iter_mut().zip(&h) {
                        *p = h + delta;
                    }
                }
                let sd_m = state.sd(1.0).map_err(|e| not_pd(e, &name))?;
                let (sd, subset) = spread(&sd_m, &full_subset(&state.subset)?, d);
                let mean = theta.values().to_vec();
                Fitted {
                    kind: "diag",
                    mean,
                    sd,
                    sampler: Box::new(move |n, rng| Ok(embed(state.sample(n, 1.0, rng)?))),
                    info,
                    divergences,
                    dense_cov: None,
                    subset,
                    kron: None,
                }
            }
            Curvature::DenseFisher | Curvature::DenseGgn | Curvature::Hessian => {
                let mut state = match c {
                    Curvature::DenseFisher => {
                        let t = DenseFisherLaplace::new(&pe, base)?;
                        let mut s = t.init(ctheta.clone(), rng)?;
                        accumulate(&t, &mut s, &batches, rng, &name)?;
                        s
                    }
                    Curvature::DenseGgn => {
                        let t = DenseGgnLaplace::new(&om, base)?;
                        let mut s = t.init(ctheta.clone(), rng)?;
                        accumulate(&t, &mut s, &batches, rng, &name)?;
                        s
                    }
                    _ => {
                        // The density holds the prior (`/ N` per row): rescaling
                        // each batch's Hessian by its size sums to the full
                        // posterior precision after one pass.
                        let density = cm.density(DType::F64, &Device::Cpu);
                        let cfg = |rescale: f64| DenseHessianConfig {
                            init_prec_diag: 0.0,
                            subset: base.subset.clone(),
                            rescale,
                            jitter: 0.0,
                        };
                        let t0 = DenseHessianLaplace::new(&density, cfg(1.0))?;
                        let mut s = t0.init(ctheta.clone(), rng)?;
                        for b in &batches {
                            let rows = b.x.dim(0)? as f64;
                            let t = DenseHessianLaplace::new(&density, cfg(rows))?;
                            t.step(&mut s, b, rng)
                                .map_err(|e| curvature_err(e, &name))?;
                        }
                        info.insert(
                            "hessian".into(),
                            json!(match density {
                                langevin_models::mlp_fast::ModelDensity::Mlp(_) =>
                                    "exact Hessian-vector products (R-operator, f64)",
                                _ => "central differences of gradients (f64)",
                            }),
                        );
                        s
                    }
                };
                state.log_posterior = lp;
                let p = state.subset.len();
                if self.cfg.marglik {
                    // The Hessian variant holds the whole posterior (prior included, no
                    // initial diagonal); the others start from δ₀ I. Either way H = P − δ₀ I.
                    let mut h = state.prec.clone();
                    for j in 0..p {
                        h[j * p + j] -= prior_prec;
                    }
                    let subset = full_subset(&state.subset)?;
                    let delta = self.marglik(c, &theta, &subset, lp, &mut h, Some(p), &mut info)?;
                    for j in 0..p {
                        h[j * p + j] += delta;
                    }
                    state.prec = h;
                }
                let cov = state.covariance(1.0).map_err(|e| not_pd(e, &name))?;
                let sd_m: Vec<f64> = (0..p).map(|j| cov[j * p + j].sqrt()).collect();
                let (sd, subset) = spread(&sd_m, &full_subset(&state.subset)?, d);
                let mean = theta.values().to_vec();
                Fitted {
                    kind: "dense",
                    mean,
                    sd,
                    sampler: Box::new(move |n, rng| Ok(embed(state.sample(n, 1.0, rng)?))),
                    info,
                    divergences,
                    dense_cov: Some(cov),
                    subset,
                    kron: None,
                }
            }
        };
        // The Laplace step after the MAP: curvature, --marglik and the covariance.
        fitted.info.insert(
            "laplace_seconds".into(),
            json!(t_curv.elapsed().as_secs_f64()),
        );
        Ok(fitted)
    }

    /// `--method laplace-kfac` after the MAP `(θ*, ℓ(θ*), divergences)`: the KFAC GGN
    /// (`langevin::laplace::KronLaplace`, exact-GGN factors per linear layer, a learned
    /// `log_noise_sd` on its diagonal GGN) over `batches`, the prior precision of `base`
    /// or `--marglik`'s from the Kronecker eigenvalues; q = N(θ*, P⁻¹) drawn through the
    /// factors' eigenbases. Its covariance is stored dense up to `MAX_DENSE_PARAMS`
    /// approximated parameters (for the linearised predictive), as variances above.
    fn laplace_kfac(
        &self,
        (theta, lp, divergences): (Params, f64, u64),
        batches: &[Batch],
        base: LaplaceConfig,
        mut info: serde_json::Map<String, serde_json::Value>,
        rng: &mut ChainRng,
    ) -> Result<Fitted> {
        let name = self.name.clone();
        let km = kron_model(self.model())?;
        let t = KronLaplace::new(&km, base)?;
        let mut state = t.init(theta, rng)?;
        accumulate(&t, &mut state, batches, rng, &name)?;
        state.log_posterior = lp;
        info.insert(
            "curvature".into(),
            json!("KFAC-GGN: exact GGN Kronecker factors (KFLR) per linear layer"),
        );
        info.insert(
            "kfac_precision".into(),
            json!(
                "per layer (Σ ããᵀ / N) ⊗ (Σ ggᵀ) + δ I, ã = (layer input, 1), g = output-Hessian \
                 square roots backpropagated to the layer's output (laplace-torch's KronLaplace \
                 scaling); weight and bias share one block"
            ),
        );
        let names = self.model().layout().scalar_names();
        let layers: Vec<_> = state
            .blocks()
            .iter()
            .map(|b| {
                json!({
                    "first": names[b.layer.offset],
                    "inputs": b.layer.n_in,
                    "outputs": b.layer.n_out,
                    "bias": b.layer.bias,
                })
            })
            .collect();
        info.insert("kfac_layers".into(), json!(layers));
        let diag: Vec<_> = state.other_diag().iter().map(|o| &names[o.0]).collect();
        if !diag.is_empty() {
            info.insert("kfac_diagonal_ggn".into(), json!(diag));
        }
        if self.cfg.marglik {
            let eig = state.curvature_eigenvalues()?;
            let delta = self.tune_prior(
                &state.params,
                &state.subset,
                lp,
                Evidence::Diag(&eig),
                &mut info,
            )?;
            state = state.with_prior_precision(delta)?;
        }
        let sd_m = state.sd(1.0).map_err(|e| not_pd(e, &name))?;
        info.insert(
            "log_det_precision".into(),
            num(state.log_det().map_err(|e| not_pd(e, &name))?),
        );
        let (sd, subset) = spread(&sd_m, &state.subset, state.params.len());
        let mean = state.params.values().to_vec();
        let kron = Some(Box::new(state.clone()));
        Ok(Fitted {
            kind: "kron",
            mean,
            sd,
            sampler: Box::new(move |n, rng| state.sample(n, 1.0, rng)),
            info,
            divergences,
            dense_cov: None,
            subset,
            kron,
        })
    }

    /// `--marglik` on the likelihood curvature `h` (diagonal, or dense `m × m`): the
    /// tuned prior precision δ*; with `--marglik-noise`, `h` is rescaled to the tuned
    /// noise (`G/σ*²`).
    #[allow(clippy::too_many_arguments)]
    fn marglik(
        &self,
        c: Curvature,
        theta: &Params,
        subset: &Subset,
        lp: f64,
        h: &mut Vec<f64>,
        dense: Option<usize>,
        info: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<f64> {
        fn evidence(v: &[f64], dense: Option<usize>) -> Evidence<'_> {
            match dense {
                Some(m) => Evidence::Dense { h: v, m },
                None => Evidence::Diag(v),
            }
        }
        match self.fixed_noise(c) {
            Some(sd) => {
                let g: Vec<f64> = h.iter().map(|v| v * sd * sd).collect();
                let (delta, sd2) =
                    self.tune_prior_and_noise(theta, subset, evidence(&g, dense), info)?;
                *h = g.iter().map(|v| v / (sd2 * sd2)).collect();
                Ok(delta)
            }
            None => self.tune_prior(theta, subset, lp, evidence(h, dense), info),
        }
    }

    /// With `--marglik-noise`, the fixed noise sd of a regression whose curvature is a
    /// GGN (`G/σ²`): σ is then tuned with the prior precision.
    fn fixed_noise(&self, c: Curvature) -> Option<f64> {
        if !self.cfg.marglik_noise {
            return None;
        }
        let spec = self.model().spec();
        match (spec.task, spec.noise, c) {
            (
                langevin_models::Task::Regression,
                langevin_models::Noise::Fixed(sd),
                Curvature::DiagGgn | Curvature::DenseGgn,
            ) if self.model().layout().range("log_noise_sd").is_none() => Some(sd),
            _ => None,
        }
    }

    /// `--marglik` with a fixed regression noise: the prior precision and the noise sd
    /// that maximise the Laplace evidence at the mode, for the GGN at unit noise `g`
    /// (MacKay's updates `δ = γ/‖θ*‖²`, `σ² = rss/(n − γ)`); the noise sd is kept for
    /// the report and `predict`.
    fn tune_prior_and_noise(
        &self,
        state_params: &Params,
        subset: &Subset,
        g: Evidence<'_>,
        info: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<(f64, f64)> {
        let all = state_params.values();
        let t: Vec<f64> = subset.indices().iter().map(|&j| all[j]).collect();
        let prep = self.prep;
        let langevin_models::PointPrediction::Gaussian { mean, sd: old_sd } =
            self.model().predict(all, &prep.train_x)?
        else {
            anyhow::bail!("internal error: a regression without a Gaussian prediction");
        };
        let rss: f64 = mean
            .iter()
            .zip(&prep.train_y)
            .map(|(f, y)| (y - f).powi(2))
            .sum();
        let ev = langevin::laplace::marglik::optimize_prior_precision_and_noise(
            prep.train_y.len(),
            rss,
            &t,
            g,
        )
        .map_err(|e| {
            diverged(
                &self.name,
                &format!("--marglik: the evidence cannot be optimised: {e}"),
            )
        })?;
        let sd = ev.noise_sd.unwrap_or(old_sd);
        let s2 = self.model().spec().prior_sd.powi(2);
        info.insert(
            "marglik".into(),
            marglik_record(
                &ev,
                s2,
                Some((sd, old_sd)),
                "post hoc: the MAP was found with the fixed prior (--prior-sd) and noise (--noise-sd) and is not refitted; the noise sd (standardised target units) replaces --noise-sd in run.json",
            ),
        );
        self.tuned_noise.set(Some(sd));
        Ok((ev.prior_precision, sd))
    }

    /// `--marglik`: the prior precision δ* that maximises the Laplace evidence at the
    /// mode θ* (over `subset`) for the log likelihood's curvature `h` (the precision
    /// without the prior), recorded in `info`. The log likelihood is `N ℓ(θ*) − log prior(θ*)`
    /// (ℓ is the batch-averaged log posterior, the prior `N(0, s² I)`).
    fn tune_prior(
        &self,
        state_params: &Params,
        subset: &Subset,
        lp: f64,
        h: Evidence<'_>,
        info: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<f64> {
        let n = self.prep.train_y.len() as f64;
        let s2 = self.model().spec().prior_sd.powi(2);
        let all = state_params.values();
        let t: Vec<f64> = subset.indices().iter().map(|&j| all[j]).collect();
        let t = &t[..];
        // The prior of every parameter (the subset's and the fixed ones').
        let log_prior = all
            .iter()
            .map(|v| -0.5 * v * v / s2 - 0.5 * (2.0 * std::f64::consts::PI * s2).ln())
            .sum::<f64>();
        let log_lik = n * lp - log_prior;
        let ev =
            langevin::laplace::marglik::optimize_prior_precision(log_lik, t, h).map_err(|e| {
                diverged(
                    &self.name,
                    &format!("--marglik: the evidence cannot be optimised: {e}"),
                )
            })?;
        info.insert(
            "marglik".into(),
            marglik_record(
                &ev,
                s2,
                None,
                "post hoc: the MAP was found with the fixed prior (--prior-sd) and is not refitted",
            ),
        );
        Ok(ev.prior_precision)
    }

    fn ekf(&self, dense: bool, full: &Batch, rng: &mut ChainRng) -> Result<Fitted> {
        let model = self.model();
        let n = self.prep.train_y.len();
        let bsz = self.cfg.batch_size.min(n).max(1);
        let epoch = n.div_ceil(bsz) as u64;
        let last = n - (epoch as usize - 1) * bsz;
        let (steps, nf) = (self.steps, n as f64);
        // ε = b · N / (steps · B) for a batch of b rows.
        let step_size = Schedule::from_fn(move |t| {
            let b = if t % epoch == epoch - 1 { last } else { bsz };
            b as f64 * nf / (steps as f64 * bsz as f64)
        });
        let config = EkfConfig {
            step_size,
            transition_sd: 0.0,
            init_sd: model.spec().prior_sd,
        };
        let start = if model.spec().kind == ModelKind::Mlp {
            self.start()
        } else {
            Params::zeros(model.layout().clone())
        };
        let mut info = serde_json::Map::new();
        info.insert("updates".into(), json!(steps));
        info.insert("passes".into(), json!(steps as f64 * bsz as f64 / nf));
        info.insert("batch_size".into(), json!(bsz));
        info.insert(
            "step_size".into(),
            json!("rows in the batch x N / (updates x batch size)"),
        );
        let pe = per_example_loglik(model);
        let mut batcher = Batcher::new(n, bsz);
        let name = self.name.clone();
        if dense {
            let t = DenseEkf::new(&pe, config)?;
            let mut state = t.init(start, rng)?;
            for step in 0..steps {
                super::sample::check_interrupt(step)?;
                let b = batcher.next(full, rng)?;
                accumulate(&t, &mut state, std::slice::from_ref(&b), rng, &name)?;
            }
            check_params(&state.params, &state.cov, &name)?;
            let p = state.params.len();
            let sd = (0..p).map(|j| state.cov[j * p + j].sqrt()).collect();
            let mean = state.params.values().to_vec();
            let cov = state.cov.clone();
            Ok(Fitted {
                kind: "dense",
                mean,
                sd,
                sampler: Box::new(move |n, rng| state.sample(n, rng)),
                info,
                divergences: 0,
                dense_cov: Some(cov),
                subset: None,
                kron: None,
            })
        } else {
            let t = DiagEkf::new(&pe, config)?;
            let mut state = t.init(start, rng)?;
            for step in 0..steps {
                super::sample::check_interrupt(step)?;
                let b = batcher.next(full, rng)?;
                accumulate(&t, &mut state, std::slice::from_ref(&b), rng, &name)?;
            }
            check_params(&state.params, &state.sd_diag, &name)?;
            let sd = state.sd_diag.clone();
            let mean = state.params.values().to_vec();
            Ok(Fitted {
                kind: "diag",
                mean,
                sd,
                sampler: Box::new(move |n, rng| Ok(state.sample(n, rng))),
                info,
                divergences: 0,
                dense_cov: None,
                subset: None,
                kron: None,
            })
        }
    }
}

/// `gaussian.marglik` of summary.json: the evidence's optimum, the fixed prior it
/// replaced (`s2`: the prior variance) and, with `--marglik-noise`, the tuned and the
/// fixed noise sd.
fn marglik_record(
    ev: &langevin::laplace::marglik::Evidence,
    s2: f64,
    noise: Option<(f64, f64)>,
    note: &str,
) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("prior_precision".into(), num(ev.prior_precision));
    m.insert("prior_sd".into(), num(ev.prior_precision.sqrt().recip()));
    m.insert("fixed_prior_precision".into(), num(1.0 / s2));
    if let Some((sd, old_sd)) = noise {
        m.insert("noise_sd".into(), num(sd));
        m.insert("fixed_noise_sd".into(), num(old_sd));
    }
    m.insert("log_evidence".into(), num(ev.log_evidence));
    m.insert("effective_params".into(), num(ev.effective_params));
    m.insert("note".into(), json!(note));
    serde_json::Value::Object(m)
}

/// Marginal sds over a subset spread to every parameter (0 for the fixed ones), and the
/// subset's indices (`None` when it is every parameter).
fn spread(sd: &[f64], subset: &Subset, d: usize) -> (Vec<f64>, Option<Vec<usize>>) {
    if subset.len() == d {
        return (sd.to_vec(), None);
    }
    let mut full = vec![0.0; d];
    for (&j, s) in subset.indices().iter().zip(sd) {
        full[j] = *s;
    }
    (full, Some(subset.indices().to_vec()))
}

/// One curvature or filter update of `t` per batch, in order; a failure
/// stops the run ([`curvature_err`]).
fn accumulate<T: Transform<Batch = Batch>>(
    t: &T,
    state: &mut T::State,
    batches: &[Batch],
    rng: &mut ChainRng,
    name: &str,
) -> Result<()> {
    for (i, b) in batches.iter().enumerate() {
        super::sample::check_interrupt(i as u64)?;
        t.step(state, b, rng).map_err(|e| curvature_err(e, name))?;
    }
    Ok(())
}

/// A non-finite curvature or filter update stops the run (exit code 3).
fn curvature_err(e: langevin_core::Error, name: &str) -> anyhow::Error {
    match e {
        langevin_core::Error::NonFiniteLogDensity { step, .. } => diverged(
            name,
            &format!("non-finite log likelihood or gradient at update {step}"),
        ),
        langevin_core::Error::Density(msg) => diverged(name, &msg),
        e @ langevin_core::Error::NotPositiveDefinite { .. } => not_pd(e, name),
        e => e.into(),
    }
}

fn check_params(p: &Params, other: &[f64], name: &str) -> Result<()> {
    if p.values().iter().chain(other).any(|v| !v.is_finite()) {
        return Err(diverged(name, "the fitted Gaussian is not finite"));
    }
    Ok(())
}

/// Rows `lo..hi` of a batch.
fn slice_batch(full: &Batch, lo: usize, hi: usize) -> Result<Batch> {
    Ok(Batch {
        x: full.x.narrow(0, lo, hi - lo)?,
        y: full.y.narrow(0, lo, hi - lo)?,
    })
}

/// Minibatches of a fixed size, the rows reshuffled every epoch (the full
/// batch itself when the size is every row).
pub(super) struct Batcher {
    perm: Vec<u32>,
    pos: usize,
    size: usize,
}

impl Batcher {
    pub(super) fn new(n: usize, size: usize) -> Self {
        Self {
            perm: (0..n as u32).collect(),
            pos: n,
            size: size.clamp(1, n.max(1)),
        }
    }

    pub(super) fn next(&mut self, full: &Batch, rng: &mut ChainRng) -> Result<Batch> {
        let n = self.perm.len();
        if self.size >= n {
            return Ok(full.clone());
        }
        if self.pos >= n {
            self.perm.shuffle(rng);
            self.pos = 0;
        }
        let hi = (self.pos + self.size).min(n);
        let idx = &self.perm[self.pos..hi];
        self.pos = hi;
        let it = Tensor::from_slice(idx, idx.len(), full.x.device())?;
        Ok(Batch {
            x: full.x.index_select(&it, 0)?,
            y: full.y.index_select(&it, 0)?,
        })
    }
}
