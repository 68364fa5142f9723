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
use langevin::ekf::{DenseEkf, DiagEkf, EkfConfig};
use langevin::laplace::{
    DenseFisherLaplace, DenseGgnLaplace, DenseHessianConfig, DenseHessianLaplace,
    DiagFisherLaplace, DiagGgnLaplace, LaplaceConfig,
};
use langevin::optim::{Lbfgs, LbfgsConfig, Optim, OptimConfig, Optimizer};
use langevin::vi::{DenseVi, DenseViConfig, DiagVi, DiagViConfig, Ivon, IvonConfig};
use langevin_core::{chain_rng, ChainRng, LogDensity, Params, Schedule, Transform};
use langevin_models::curvature::{output_model, per_example_loglik};
use langevin_models::{Batch, Model, ModelKind};
use rand::seq::SliceRandom;
use serde_json::json;

use langevin::samples::{CsvDrawWriter, Samples};

use super::data::Prepared;
use super::plan::{family, Curvature, Family, FitConfig};
use super::report::{summarize_and_report, ReportArgs};
use crate::exit::{bad_input, Diverged};
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
    };
    let fitted = fitter.fit()?;

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
    if let Some(obj) = summary.as_object_mut() {
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
        let n = self.prep.train_y.len();
        let cb = self.cfg.batch_size.clamp(1, CURVATURE_BATCH);
        // One pass over the training rows, in order (the sums do not depend on it).
        let batches: Vec<Batch> = (0..n)
            .step_by(cb)
            .map(|lo| slice_batch(full, lo, (lo + cb).min(n)))
            .collect::<Result<_>>()?;
        let prior_prec = 1.0 / model.spec().prior_sd.powi(2);
        let base = LaplaceConfig {
            init_prec_diag: prior_prec,
            subset: None,
        };
        info.insert("curvature_batch_size".into(), json!(cb));
        info.insert("curvature_passes".into(), json!(1));
        let name = self.name.clone();
        let pe = per_example_loglik(model);
        let om = output_model(model);
        let fitted = match c {
            Curvature::DiagFisher | Curvature::DiagGgn => {
                let mut state = if c == Curvature::DiagFisher {
                    let t = DiagFisherLaplace::new(&pe, base)?;
                    let mut s = t.init(theta, rng)?;
                    accumulate(&t, &mut s, &batches, rng, &name)?;
                    s
                } else {
                    let t = DiagGgnLaplace::new(&om, base)?;
                    let mut s = t.init(theta, rng)?;
                    accumulate(&t, &mut s, &batches, rng, &name)?;
                    s
                };
                state.log_posterior = lp;
                let sd = state.sd(1.0).map_err(|e| not_pd(e, &name))?;
                let mean = state.params.values().to_vec();
                Fitted {
                    kind: "diag",
                    mean,
                    sd,
                    sampler: Box::new(move |n, rng| state.sample(n, 1.0, rng)),
                    info,
                    divergences,
                }
            }
            Curvature::DenseFisher | Curvature::DenseGgn | Curvature::Hessian => {
                let mut state = match c {
                    Curvature::DenseFisher => {
                        let t = DenseFisherLaplace::new(&pe, base)?;
                        let mut s = t.init(theta, rng)?;
                        accumulate(&t, &mut s, &batches, rng, &name)?;
                        s
                    }
                    Curvature::DenseGgn => {
                        let t = DenseGgnLaplace::new(&om, base)?;
                        let mut s = t.init(theta, rng)?;
                        accumulate(&t, &mut s, &batches, rng, &name)?;
                        s
                    }
                    _ => {
                        // The density holds the prior (`/ N` per row): rescaling
                        // each batch's Hessian by its size sums to the full
                        // posterior precision after one pass.
                        let density = model.density(DType::F64, &Device::Cpu);
                        let cfg = |rescale: f64| DenseHessianConfig {
                            init_prec_diag: 0.0,
                            subset: None,
                            rescale,
                            jitter: 0.0,
                        };
                        let t0 = DenseHessianLaplace::new(&density, cfg(1.0))?;
                        let mut s = t0.init(theta, rng)?;
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
                let cov = state.covariance(1.0).map_err(|e| not_pd(e, &name))?;
                let p = state.params.len();
                let sd = (0..p).map(|j| cov[j * p + j].sqrt()).collect();
                let mean = state.params.values().to_vec();
                Fitted {
                    kind: "dense",
                    mean,
                    sd,
                    sampler: Box::new(move |n, rng| state.sample(n, 1.0, rng)),
                    info,
                    divergences,
                }
            }
        };
        Ok(fitted)
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
            Ok(Fitted {
                kind: "dense",
                mean,
                sd,
                sampler: Box::new(move |n, rng| state.sample(n, rng)),
                info,
                divergences: 0,
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
            })
        }
    }
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
struct Batcher {
    perm: Vec<u32>,
    pos: usize,
    size: usize,
}

impl Batcher {
    fn new(n: usize, size: usize) -> Self {
        Self {
            perm: (0..n as u32).collect(),
            pos: n,
            size: size.clamp(1, n.max(1)),
        }
    }

    fn next(&mut self, full: &Batch, rng: &mut ChainRng) -> Result<Batch> {
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
