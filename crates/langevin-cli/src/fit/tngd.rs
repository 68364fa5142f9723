//! `langevin fit --method tngd`: thermodynamic natural gradient descent (TNGD,
//! Donatella et al. 2024) as a point estimate on the user's data, the solves
//! simulated on a model of the analog device, with a tuned Adam and NGD-CG over
//! the same steps and minibatches as the baselines.
//!
//! **What it minimises.** The negative of the batch-averaged log posterior of
//! every other method (`−ℓ(θ) = −mean log lik − log prior / N`), on the same
//! split, standardisation, model and minibatches ([`super::data::prepare`]).
//!
//! **One step.** On a minibatch of `B` rows: the gradient `g = −∇ℓ(θ)` and the
//! curvature `F = G/B + I/(N s²) + λI` (the minibatch's generalised Gauss-Newton
//! matrix `G = Σᵢ Jᵢᵀ Hᵢ Jᵢ` from the library's Jacobian-free GGN-vector products
//! of [`langevin_models::curvature::output_model`], the prior's precision per
//! row, and the damping λ). The simulated device
//! ([`langevin_thermo::tngd::Tngd`]) runs its Ornstein-Uhlenbeck process
//! `dd = −(F d − g) dt` for [`ANALOG_TIME`] τ from its previous state (it is not
//! reset, so it keeps relaxing towards `F⁻¹g` across steps), and the parameters
//! move by `θ ← θ − lr · d`. With a long analog time this is natural gradient
//! descent (Gauss-Newton with damping); with a short one the direction lags.
//!
//! **Adaptive damping.** λ starts at [`DAMPING`] and adapts Levenberg-Marquardt
//! style on the same minibatch: a step that raises its loss (or makes it
//! non-finite) is undone and λ grows by [`LM_REJECT`]; an accepted step shrinks
//! it by [`LM_DOWN`] unless it achieved under a quarter of the quadratic model's
//! decrease; λ stays in `[DAMPING, DAMPING_MAX]`. For an MLP the products come
//! from the hand-written network ([`MlpGgn`], the step's forward pass kept), not
//! candle.
//!
//! **Simulation.** The device is simulated exactly (the transition from the
//! eigendecomposition of `F`, assembled from `P` products) when the model has at
//! most [`EXACT_MAX_PARAMS`] parameters and that is no more products than
//! Euler-Maruyama needs; otherwise by Euler-Maruyama from products only, with the
//! step `dt = 1 / (1.5 λ̂)` from a power-iteration estimate `λ̂` of `λ_max(F)`
//! refreshed every step (stability needs `dt λ_max < 2`). Either way the state
//! relaxes to the same `F⁻¹g`; the analog time does not depend on the simulation.
//!
//! **Analog time and energy** ([`HardwareModel`] of `langevin_thermo::linalg`,
//! the thermodynamic linear-algebra device's first-order model; representative
//! constants, not measurements): per step the `P × P` matrix `F` and the vector
//! `g` are loaded through `P` DACs, the device runs [`ANALOG_TIME`] τ with
//! τ = RC = 1 µs, and the `P` entries of `d` are read out; energy = conversions
//! (1 pJ each) + `P²` coupled cells at 1 µW during the run. The digital seconds
//! (this computer: gradients, GGN-vector products and the simulation of the
//! device) are reported next to them.
//!
//! **Output.** As `--method map`: one chain with one draw, the final parameters,
//! in `samples.csv`, summarised by the same path (`summary.json`'s `metrics` are
//! the point estimate's predictive metrics); `summary.json` adds `tngd` (the
//! hyper-parameters, final train/test loss and metrics, analog time, energy,
//! digital seconds), `baseline_adam` (Adam over the same steps and minibatches,
//! from the same start, its learning rate chosen from [`ADAM_LR_GRID`] by the
//! loss on a validation split of the training rows: [`tune_adam`]) and
//! `baseline_ngd_cg` (the same damped system solved digitally by [`CG_ITERS`]
//! conjugate-gradient iterations per step: [`run_ngd_cg`]).
//!
//! **Failures.** A step with a non-finite log posterior, gradient or curvature
//! product is skipped and counted in `divergences`; more than the run loop's
//! limit (`--max-divergences`, at most a tenth of the steps) stops the run with
//! exit code 3.

use std::cell::{Cell, RefCell};
use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device};
use langevin::curvature::{cg, ggnvp, CgConfig};
use langevin::optim::{Optim, OptimConfig, Optimizer};
use langevin::samples::Samples;
use langevin_core::{chain_rng, LogDensity, Params, Transform};
use langevin_models::curvature::{output_model, ModelOutputs};
use langevin_models::{Batch, MlpGgn, Task};
use langevin_thermo::error::ThermoError;
use langevin_thermo::linalg::HardwareModel;
use langevin_thermo::tngd::{Integrator, OuConfig, Tngd};
use serde_json::json;

use super::args::{FitArgs, MethodArg};
use super::data::Prepared;
use super::gaussian::Batcher;
use super::plan::FitConfig;
use super::report::{summarize_and_report, ReportArgs};
use crate::evaluate::{classification_metrics, predictive, regression_metrics, Predictive};
use crate::exit::{bad_input, Diverged};
use crate::rundir::num;

/// Default steps.
pub const TNGD_STEPS: u64 = 200;
/// Default learning rate (`--step-size`) of the update `θ ← θ − lr · d` with
/// minibatches, and with every training row in each step (a damped Gauss-Newton
/// step on the exact objective).
pub const TNGD_LR: f64 = 0.5;
pub const TNGD_LR_FULL_BATCH: f64 = 1.0;
/// Damping λ added to the curvature at the start, and its floor: the
/// damping adapts Levenberg-Marquardt style ([`LM_REJECT`], [`LM_DOWN`]) but
/// never goes below this.
pub const DAMPING: f64 = 0.1;
/// Largest adaptive damping. It bounds the cost of the Euler-Maruyama
/// simulation too (its step is `1 / (1.5 (λ̂ + λ))`): at 10 a step's direction
/// is at least about `λ_max / (λ_max + 10)` of the undamped one's.
pub const DAMPING_MAX: f64 = 10.0;
/// The damping's factor after a rejected step (the minibatch loss went up, or
/// is not finite, at the new parameters): the step is undone.
pub const LM_REJECT: f64 = 4.0;
/// Its factor after an accepted step, unless the actual decrease of the
/// minibatch loss is under a quarter of the quadratic model's (`ρ < 1/4`:
/// then it stays).
pub const LM_DOWN: f64 = 2.0 / 3.0;
/// Analog run per step, in units of τ.
pub const ANALOG_TIME: f64 = 20.0;
/// τ = RC (s).
pub const TAU_SECONDS: f64 = 1e-6;
/// Adam's default learning rate (PyTorch's): the first of [`ADAM_LR_GRID`],
/// and the baseline's when the training rows are too few to hold any out.
pub const ADAM_LR: f64 = 1e-3;
/// The learning rates the Adam baseline is tuned over (on a validation split).
pub const ADAM_LR_GRID: &[f64] = &[1e-3, 3e-3, 1e-2, 3e-2, 0.1];
/// Most steps of each tuning run (fewer when `--steps` is smaller).
pub const ADAM_TUNE_STEPS: u64 = 200;
/// Conjugate-gradient iterations per step of the NGD-CG baseline.
pub const CG_ITERS: usize = 10;
/// Largest model simulated with the exact transition (`P` products and an
/// `O(P³)` eigendecomposition per step).
pub const EXACT_MAX_PARAMS: usize = 300;
/// Euler-Maruyama step `1 / (EM_SAFETY λ̂)`.
const EM_SAFETY: f64 = 1.5;
/// Power iterations for `λ̂` at the start, and per step (warm-started).
const POWER_ITERS_FIRST: usize = 30;
const POWER_ITERS: usize = 3;
/// Points of the loss traces in `summary.json`.
const TRACE_POINTS: u64 = 50;

/// Refuse the options `--method tngd` does not take (exit code 2).
pub fn check_applicable(args: &FitArgs) -> Result<()> {
    if args.chains.is_some_and(|c| c != 1) {
        crate::bail_input!(
            "--chains does not apply to --method tngd: it is a point estimate from one start \
             (one chain with one draw, as --method map's default)"
        );
    }
    for (given, opt) in [
        (args.target_ess.is_some(), "target-ess"),
        (args.target_rhat.is_some(), "target-rhat"),
        (args.require_converged, "require-converged"),
    ] {
        if given {
            crate::bail_input!(
                "--{opt} does not apply to --method tngd (a point estimate has no convergence \
                 diagnostics)"
            );
        }
    }
    Ok(())
}

/// The plan of `--method tngd`: `--steps` (default [`TNGD_STEPS`]); the step
/// size is the learning rate (checked by the caller; default [`TNGD_LR`], or
/// [`TNGD_LR_FULL_BATCH`] when every step sees every training row).
pub fn resolve(args: &FitArgs, cfg: &mut FitConfig) -> Result<()> {
    cfg.steps = args.steps.unwrap_or(TNGD_STEPS);
    cfg.chains = 1;
    if args.step_size.is_none() && cfg.batch_size >= cfg.n_train {
        cfg.step_size = TNGD_LR_FULL_BATCH;
    }
    Ok(())
}

/// The curvature of one step as the device sees it: `v ↦ (G/B + I/(N s²)) v`
/// (the damping is the device's), counting products and keeping the first error.
struct Curvature<'a> {
    om: &'a ModelOutputs,
    /// The MLP's GGN with this step's forward pass kept (no autograd).
    mlp: Option<MlpGgn>,
    params: &'a Params,
    batch: &'a Batch,
    rows: f64,
    prior_prec: f64,
    products: &'a Cell<u64>,
    error: RefCell<Option<langevin_core::Error>>,
}

impl Curvature<'_> {
    fn apply(&self, v: &[f64], out: &mut [f64]) {
        self.products.set(self.products.get() + 1);
        let gv = match &self.mlp {
            Some(op) => {
                let mut gv = vec![0.0; v.len()];
                op.apply(v, &mut gv).map(|()| gv)
            }
            None => ggnvp(self.om, self.params, self.batch, v),
        };
        match gv {
            Ok(gv) => {
                for ((o, g), vi) in out.iter_mut().zip(&gv).zip(v) {
                    *o = g / self.rows + self.prior_prec * vi;
                }
            }
            Err(e) => {
                out.iter_mut().for_each(|o| *o = f64::NAN);
                self.error.borrow_mut().get_or_insert(e);
            }
        }
    }

    /// Rayleigh quotient after `iters` power iterations from `v` (updated in place).
    fn lambda_max(&self, v: &mut [f64], iters: usize) -> f64 {
        let mut w = vec![0.0; v.len()];
        let mut lam = f64::NAN;
        for _ in 0..iters {
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if !(norm.is_finite() && norm > 0.0) {
                return f64::NAN;
            }
            v.iter_mut().for_each(|x| *x /= norm);
            self.apply(v, &mut w);
            lam = v.iter().zip(&w).map(|(a, b)| a * b).sum();
            v.copy_from_slice(&w);
        }
        lam
    }
}

/// What a run of the optimiser gave.
struct Trained {
    params: Params,
    divergences: u64,
    /// `(step, minibatch loss)`, thinned to about [`TRACE_POINTS`].
    trace: Vec<(u64, f64)>,
    seconds: f64,
}

fn keep(step: u64, steps: u64) -> bool {
    let every = steps.div_ceil(TRACE_POINTS).max(1);
    step.is_multiple_of(every) || step + 1 == steps
}

pub fn run(r: &ReportArgs<'_>) -> Result<serde_json::Value> {
    let (cfg, prep) = (r.cfg, r.prep);
    if cfg.method != MethodArg::Tngd {
        anyhow::bail!("internal error: {:?} is not tngd", cfg.method);
    }
    // The Jacobian-free GGN-vector products take `J v` by a double
    // vector-Jacobian product, which needs candle to keep gradient graphs (read
    // on this thread's first backward pass: nothing ran one yet). Without it
    // they take one backward pass per output row: exact but slower.
    let double_backward = langevin_core::candle_density::enable_double_backward();
    let model = &prep.model;
    let p = model.n_params();
    let dev = Device::Cpu;
    let density = model.density(DType::F64, &dev);
    let full = model.batch(&prep.train_x, &prep.train_y, DType::F64, &dev)?;
    let start = model.init(&mut chain_rng(cfg.seed, 0));
    let max_divergences = langevin::run::RunConfig {
        steps: cfg.steps,
        max_divergences: cfg.max_divergences,
        ..Default::default()
    }
    .divergence_limit();
    let n = prep.n_train();
    let prior_prec = 1.0 / (model.spec().prior_sd.powi(2) * n as f64);
    let om = output_model(model);

    // TNGD.
    let t0 = Instant::now();
    let ou = OuConfig {
        time: ANALOG_TIME,
        ..OuConfig::default()
    };
    let mut opt = Tngd::new(p, DAMPING, ou, TAU_SECONDS, cfg.seed).map_err(bad_input)?;
    let mut rng = chain_rng(cfg.seed, u64::MAX - 2);
    let mut batcher = Batcher::new(prep.train_y.len(), cfg.batch_size);
    let mut theta = start.clone();
    let mut grad = vec![0.0; p];
    let mut divergences = 0u64;
    let mut trace = Vec::new();
    let products = Cell::new(0u64);
    let mut em_substeps = 0u64;
    let mut integrator_name = "";
    let mut eig_v: Vec<f64> = (0..p).map(|i| 1.0 + 0.1 * (i as f64).sin()).collect();
    let (mut lam_first, mut lam_last) = (f64::NAN, f64::NAN);
    let mut rejected = 0u64;
    let mut lam_max_seen = DAMPING;
    let mut damping_trace: Vec<(u64, f64)> = Vec::new();
    let skip = |divergences: &mut u64, step: u64| -> Result<()> {
        *divergences += 1;
        if *divergences > max_divergences {
            return Err(anyhow::Error::new(Diverged(format!(
                "--method tngd: stopped at step {step}: more than {max_divergences} steps with a \
                 non-finite log posterior, gradient or curvature. Try a smaller --step-size."
            ))));
        }
        Ok(())
    };
    for step in 0..cfg.steps {
        super::sample::check_interrupt(step)?;
        let b = batcher.next(&full, &mut rng)?;
        let Some(lp) = log_posterior_and_grad(&density, &theta, &b, &mut grad)? else {
            skip(&mut divergences, step)?;
            continue;
        };
        if keep(step, cfg.steps) {
            trace.push((step, -lp));
        }
        let g: Vec<f64> = grad.iter().map(|x| -x).collect();
        let before = theta.clone();
        let mlp = match om.mlp_ggn(&before, &b) {
            None => None,
            Some(Ok(op)) => Some(op),
            Some(Err(e)) if e.is_recoverable() || matches!(e, langevin_core::Error::Density(_)) => {
                skip(&mut divergences, step)?;
                continue;
            }
            Some(Err(e)) => return Err(e.into()),
        };
        let curv = Curvature {
            om: &om,
            mlp,
            params: &before,
            batch: &b,
            rows: b.x.dim(0)? as f64,
            prior_prec,
            products: &products,
            error: RefCell::new(None),
        };
        // The simulation: chosen on the first step, the Euler-Maruyama step
        // refreshed every step.
        if integrator_name.is_empty() || integrator_name == "euler-maruyama" {
            let iters = if integrator_name.is_empty() {
                POWER_ITERS_FIRST
            } else {
                POWER_ITERS
            };
            let lam = curv.lambda_max(&mut eig_v, iters) + opt.damping();
            if !lam.is_finite() || lam <= 0.0 {
                eig_v = (0..p).map(|i| 1.0 + 0.1 * (i as f64).sin()).collect();
                curvature_error(&curv)?;
                skip(&mut divergences, step)?;
                continue;
            }
            let dt = 1.0 / (EM_SAFETY * lam);
            let em_cost = (ANALOG_TIME / dt).ceil() as usize + POWER_ITERS;
            if integrator_name.is_empty() {
                lam_first = lam;
                integrator_name = if p <= EXACT_MAX_PARAMS && p <= em_cost {
                    "exact"
                } else {
                    "euler-maruyama"
                };
            }
            if integrator_name == "euler-maruyama" {
                lam_last = lam;
                em_substeps += (ANALOG_TIME / dt).ceil() as u64;
                opt.set_ou(OuConfig {
                    integrator: Integrator::EulerMaruyama { dt },
                    ..ou
                })
                .map_err(bad_input)?;
            }
        }
        let res = opt.step(
            theta.values_mut(),
            &g,
            |v, o| curv.apply(v, o),
            cfg.step_size,
        );
        curvature_error(&curv)?;
        match res {
            Ok(()) => {}
            Err(ThermoError::NonFinite { .. })
            | Err(ThermoError::InvalidConfig { field: "dt", .. }) => {
                theta = before;
                skip(&mut divergences, step)?;
                continue;
            }
            Err(e) => return Err(anyhow::Error::new(e)),
        }
        // Levenberg-Marquardt: the step `s` against the quadratic model
        // `gᵀs + ½ sᵀ(G/B + I/(N s²))s` of the same minibatch's loss (one more
        // product and one forward pass).
        let s_vec: Vec<f64> = theta
            .values()
            .iter()
            .zip(before.values())
            .map(|(a, b)| a - b)
            .collect();
        let mut cs = vec![0.0; p];
        curv.apply(&s_vec, &mut cs);
        let predicted = dot(&g, &s_vec) + 0.5 * dot(&s_vec, &cs);
        let loss_after = loss_at(&density, &theta, &b)?;
        let lam = opt.damping();
        let new_lam = match lm_verdict(-lp, loss_after, predicted) {
            Lm::Reject => {
                // Back to the previous parameters, the device from rest.
                theta = before;
                opt.reset();
                rejected += 1;
                lam * LM_REJECT
            }
            Lm::Keep => lam,
            Lm::Down => lam * LM_DOWN,
        };
        let new_lam = new_lam.clamp(DAMPING, DAMPING_MAX);
        if new_lam != lam {
            opt.set_damping(new_lam).map_err(bad_input)?;
        }
        lam_max_seen = lam_max_seen.max(new_lam);
        if keep(step, cfg.steps) {
            damping_trace.push((step, new_lam));
        }
    }
    let tngd = Trained {
        params: theta,
        divergences,
        trace,
        seconds: t0.elapsed().as_secs_f64(),
    };
    if tngd.params.values().iter().any(|v| !v.is_finite()) {
        return Err(anyhow::Error::new(Diverged(
            "--method tngd: the parameters are not finite".into(),
        )));
    }

    // Adam, its learning rate tuned on a validation split of the training
    // rows, then over the same minibatches from the same start as TNGD.
    let tune = tune_adam(r, &density, &start)?;
    let adam = run_adam(r, &density, &full, &start, tune.lr, cfg.steps)?;

    // NGD-CG: the same damped system, solved digitally.
    let ngd_cg = run_ngd_cg(r, &density, &om, &full, &start, prior_prec, max_divergences)?;

    // The point estimate as the one draw of one chain, summarised as `map`'s.
    let mut samples = Samples::new(model.param_names().to_vec(), 1);
    samples.chains[0].push(tngd.params.values(), f64::NAN)?;
    super::gaussian::write_samples(r.out_dir, &samples)?;
    let mut summary = summarize_and_report(r, &samples, &[tngd.divergences], None)?;

    let steps_run = opt.steps();
    let hw = HardwareModel {
        rc: TAU_SECONDS,
        ..HardwareModel::default()
    };
    let per_step = hw.cost(p, ANALOG_TIME, 1);
    let k = steps_run as f64;
    let fin_t = evaluate(prep, &density, &full, &tngd.params)?;
    let fin_a = evaluate(prep, &density, &full, &adam.params)?;
    let loss = |v: &serde_json::Value| v["train_loss"].as_f64().unwrap_or(f64::NAN);
    let helped = loss(&fin_t) < loss(&fin_a);
    let trace_json = |t: &[(u64, f64)]| {
        t.iter()
            .map(|&(s, l)| json!([s, num(l)]))
            .collect::<Vec<_>>()
    };
    let tngd_json = json!({
        "steps": cfg.steps,
        "steps_run": steps_run,
        "learning_rate": cfg.step_size,
        "damping": DAMPING,
        "damping_adaptive": {
            "rule": "Levenberg-Marquardt on the minibatch loss: a step that raises it (or makes it non-finite) is undone and the damping multiplied by 4 (the device restarts from rest); an accepted step multiplies it by 2/3 unless rho = actual / predicted decrease (quadratic model with the undamped curvature) is below 1/4 (then it stays); kept within [damping, damping_max]",
            "damping_max": DAMPING_MAX,
            "final": opt.damping(),
            "max": lam_max_seen,
            "rejected_steps": rejected,
            "trace": trace_json(&damping_trace),
        },
        "analog_time_per_step_tau": ANALOG_TIME,
        "batch_size": cfg.batch_size,
        "curvature": "GGN of the minibatch's mean negative log likelihood + prior precision / N + damping (Jacobian-free GGN-vector products)",
        "simulation": integrator_name,
        "lambda_max_first": num(lam_first),
        "lambda_max_last": num(lam_last),
        "euler_maruyama_substeps": em_substeps,
        "ggn_vector_products": products.get(),
        "double_backward": double_backward,
        "divergences": tngd.divergences,
        "final": fin_t,
        "minibatch_loss_trace": trace_json(&tngd.trace),
        "digital_seconds": tngd.seconds,
        "analog": {
            "tau_seconds": TAU_SECONDS,
            "analog_time_tau": opt.analog_time(),
            "analog_seconds": opt.analog_seconds(),
            "load_seconds": per_step.load_seconds * k,
            "device_seconds": per_step.total_seconds * k,
            "energy_joules": per_step.energy_joules * k,
            "energy_per_step_joules": per_step.energy_joules,
            "cells": p * p,
            "hardware_model": hw,
            "note": "first-order device model of langevin_thermo::linalg::HardwareModel (representative constants, not measurements): per step the P x P curvature and the gradient are loaded through P DACs (1 GS/s, 1 pJ each), the device runs analog_time_per_step_tau x tau, the direction is read out (1 pJ per value), and P^2 coupled cells draw 1 uW each during the run; digital_seconds is this computer simulating it",
        },
    });
    let fin_n = evaluate(prep, &density, &full, &ngd_cg.trained.params)?;
    let adam_json = json!({
        "optimizer": "adam",
        "learning_rate": tune.lr,
        "learning_rate_grid": ADAM_LR_GRID,
        "validation_loss": tune.losses.iter().map(|&(lr, l)| json!({"learning_rate": lr, "loss": num(l)})).collect::<Vec<_>>(),
        "tuning": {
            "steps": tune.steps,
            "fit_rows": tune.fit_rows,
            "validation_rows": tune.validation_rows,
            "seconds": tune.seconds,
            "rule": "each rate of the grid runs Adam from the same start for min(steps, 200) steps on the first 80% of the training rows (order fixed by the seed) and is scored by the loss -l on the other 20%; the lowest finite validation loss is re-run on every training row for the same steps and minibatches as TNGD",
        },
        "steps": cfg.steps,
        "divergences": adam.divergences,
        "final": fin_a,
        "minibatch_loss_trace": trace_json(&adam.trace),
        "digital_seconds": adam.seconds,
        "note": "Adam at the learning rate tuned on the validation split, over the same minibatches from the same start",
    });
    let ngd_cg_json = json!({
        "optimizer": "ngd-cg",
        "learning_rate": cfg.step_size,
        "cg_iterations_per_step": CG_ITERS,
        "cg_iterations": ngd_cg.cg_iterations,
        "ggn_vector_products": ngd_cg.products,
        "damping": DAMPING,
        "damping_final": ngd_cg.damping_final,
        "damping_max_seen": ngd_cg.damping_max,
        "rejected_steps": ngd_cg.rejected,
        "steps": cfg.steps,
        "divergences": ngd_cg.trained.divergences,
        "final": fin_n,
        "minibatch_loss_trace": trace_json(&ngd_cg.trained.trace),
        "digital_seconds": ngd_cg.trained.seconds,
        "note": "natural gradient descent with the device replaced by 10 conjugate-gradient iterations (langevin::curvature::cg, warm-started from the previous direction) on the same damped system (G/B + I/(N s^2) + lambda I) d = g, the same learning rate, minibatches, start and Levenberg-Marquardt damping rule",
    });
    if !r.quiet {
        let metric = |v: &serde_json::Value| {
            let on = cfg.metrics_on;
            ["accuracy", "rmse"]
                .iter()
                .find_map(|m| {
                    v[format!("{on}_{m}")]
                        .as_f64()
                        .map(|x| format!(", {on} {m} {x:.4}"))
                })
                .unwrap_or_default()
        };
        println!(
            "TNGD: train loss {:.4}{} ({} steps, lr {})",
            loss(&fin_t),
            metric(&fin_t),
            cfg.steps,
            cfg.step_size,
        );
        println!(
            "Adam (lr {} tuned on a validation split from {:?}, same steps): train loss {:.4}{}",
            tune.lr,
            ADAM_LR_GRID,
            loss(&fin_a),
            metric(&fin_a),
        );
        println!(
            "NGD-CG ({CG_ITERS} CG iterations per step, lr {}, same damping rule): train loss \
             {:.4}{} ({:.2} s)",
            cfg.step_size,
            loss(&fin_n),
            metric(&fin_n),
            ngd_cg.trained.seconds,
        );
        println!(
            "TNGD device (model): {:.3e} s analog run, {:.3e} s with loading, {:.3e} J; this \
             computer: {:.2} s (simulation included), Adam {:.2} s (+ {:.2} s tuning)",
            opt.analog_seconds(),
            per_step.total_seconds * k,
            per_step.energy_joules * k,
            tngd.seconds,
            adam.seconds,
            tune.seconds,
        );
    }
    if let Some(obj) = summary.as_object_mut() {
        obj.insert("tngd".into(), tngd_json);
        obj.insert("baseline_adam".into(), adam_json);
        obj.insert("baseline_ngd_cg".into(), ngd_cg_json);
        obj.insert("tngd_lower_train_loss_than_adam".into(), json!(helped));
        obj.insert("seconds".into(), json!(r.t0.elapsed().as_secs_f64()));
    }
    Ok(summary)
}

/// Adam's learning rate as tuned on a validation split of the training rows.
struct AdamTuning {
    lr: f64,
    /// `(learning rate, validation loss)` per rate of [`ADAM_LR_GRID`].
    losses: Vec<(f64, f64)>,
    steps: u64,
    fit_rows: usize,
    validation_rows: usize,
    seconds: f64,
}

/// Adam from `start` over `steps` minibatches of `full` (the minibatch stream
/// of TNGD's when `full` is every training row).
fn run_adam<D: LogDensity<Batch = Batch>>(
    r: &ReportArgs<'_>,
    density: &D,
    full: &Batch,
    start: &Params,
    lr: f64,
    steps: u64,
) -> Result<Trained> {
    let cfg = r.cfg;
    let t0 = Instant::now();
    let t = Optim::new(
        density,
        OptimConfig {
            optimizer: Optimizer::adam(lr),
            ..OptimConfig::default()
        },
    )
    .map_err(bad_input)?;
    let mut rng = chain_rng(cfg.seed, u64::MAX - 2);
    let mut batcher = Batcher::new(full.x.dim(0)?, cfg.batch_size);
    let mut state = t.init(start.clone(), &mut rng)?;
    let (mut divergences, mut trace) = (0u64, Vec::new());
    for step in 0..steps {
        super::sample::check_interrupt(step)?;
        let b = batcher.next(full, &mut rng)?;
        match t.step(&mut state, &b, &mut rng) {
            Ok(info) => {
                if keep(step, steps) {
                    trace.push((step, -info.value));
                }
            }
            Err(e) if e.is_recoverable() => divergences += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Trained {
        params: state.params,
        divergences,
        trace,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Adam's learning rate from [`ADAM_LR_GRID`]: each rate runs
/// `min(steps, ADAM_TUNE_STEPS)` steps on the first 80 % of the training rows
/// (in an order fixed by the seed) and is scored by the loss `−ℓ` on the other
/// 20 %; the lowest finite validation loss wins (the smallest rate if none is
/// finite).
fn tune_adam<D: LogDensity<Batch = Batch>>(
    r: &ReportArgs<'_>,
    density: &D,
    start: &Params,
) -> Result<AdamTuning> {
    use rand::seq::SliceRandom;
    let (cfg, prep) = (r.cfg, r.prep);
    let t0 = Instant::now();
    let n = prep.train_y.len();
    let d = prep.train_x.len() / n.max(1);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut chain_rng(cfg.seed, u64::MAX - 3));
    let n_val = (n / 5).max(1).min(n.saturating_sub(1));
    let (fit_idx, val_idx) = order.split_at(n - n_val);
    let subset = |idx: &[usize]| -> Result<Batch> {
        let x: Vec<f64> = idx
            .iter()
            .flat_map(|&i| prep.train_x[i * d..(i + 1) * d].iter().copied())
            .collect();
        let y: Vec<f64> = idx.iter().map(|&i| prep.train_y[i]).collect();
        Ok(prep.model.batch(&x, &y, DType::F64, &Device::Cpu)?)
    };
    let steps = cfg.steps.min(ADAM_TUNE_STEPS);
    let mut losses = Vec::new();
    if fit_idx.is_empty() || val_idx.is_empty() {
        // Too few rows to hold any out: the default rate.
        losses.push((ADAM_LR, f64::NAN));
    } else {
        let (fit, val) = (subset(fit_idx)?, subset(val_idx)?);
        for &lr in ADAM_LR_GRID {
            let t = run_adam(r, density, &fit, start, lr, steps)?;
            let loss = density
                .value(&t.params, &val)
                .map(|(v, _)| -v)
                .unwrap_or(f64::NAN);
            losses.push((lr, loss));
        }
    }
    let lr = losses
        .iter()
        .filter(|(_, l)| l.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(ADAM_LR_GRID[0], |&(lr, _)| lr);
    Ok(AdamTuning {
        lr,
        losses,
        steps,
        fit_rows: fit_idx.len(),
        validation_rows: val_idx.len(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// What the NGD-CG baseline gave.
struct NgdCg {
    trained: Trained,
    products: u64,
    cg_iterations: u64,
    rejected: u64,
    damping_final: f64,
    damping_max: f64,
}

/// NGD-CG: TNGD's step with the device replaced by [`CG_ITERS`] iterations of
/// conjugate gradients (`langevin::curvature::cg`) on the same damped system
/// `(G/B + I/(N s²) + λI) d = g`, warm-started from the previous direction
/// (as the device keeps its state; from zero after a rejected step), with the
/// same learning rate, minibatches, start and Levenberg-Marquardt damping.
fn run_ngd_cg<D: LogDensity<Batch = Batch>>(
    r: &ReportArgs<'_>,
    density: &D,
    om: &ModelOutputs,
    full: &Batch,
    start: &Params,
    prior_prec: f64,
    max_divergences: u64,
) -> Result<NgdCg> {
    let (cfg, prep) = (r.cfg, r.prep);
    let t0 = Instant::now();
    let p = start.len();
    let mut rng = chain_rng(cfg.seed, u64::MAX - 2);
    let mut batcher = Batcher::new(prep.train_y.len(), cfg.batch_size);
    let mut theta = start.clone();
    let mut grad = vec![0.0; p];
    let mut dir = vec![0.0; p];
    let (mut divergences, mut rejected, mut cg_iterations) = (0u64, 0u64, 0u64);
    let mut trace = Vec::new();
    let products = Cell::new(0u64);
    let (mut lam, mut lam_max_seen) = (DAMPING, DAMPING);
    let skip = |divergences: &mut u64, step: u64| -> Result<()> {
        *divergences += 1;
        if *divergences > max_divergences {
            return Err(anyhow::Error::new(Diverged(format!(
                "--method tngd: the NGD-CG baseline stopped at step {step}: more than \
                 {max_divergences} steps with a non-finite log posterior, gradient or curvature. \
                 Try a smaller --step-size."
            ))));
        }
        Ok(())
    };
    for step in 0..cfg.steps {
        super::sample::check_interrupt(step)?;
        let b = batcher.next(full, &mut rng)?;
        let Some(lp) = log_posterior_and_grad(density, &theta, &b, &mut grad)? else {
            skip(&mut divergences, step)?;
            continue;
        };
        if keep(step, cfg.steps) {
            trace.push((step, -lp));
        }
        let g: Vec<f64> = grad.iter().map(|x| -x).collect();
        let mlp = match om.mlp_ggn(&theta, &b) {
            None => None,
            Some(Ok(op)) => Some(op),
            Some(Err(e)) if e.is_recoverable() || matches!(e, langevin_core::Error::Density(_)) => {
                skip(&mut divergences, step)?;
                continue;
            }
            Some(Err(e)) => return Err(e.into()),
        };
        let curv = Curvature {
            om,
            mlp,
            params: &theta,
            batch: &b,
            rows: b.x.dim(0)? as f64,
            prior_prec,
            products: &products,
            error: RefCell::new(None),
        };
        let solved = cg(
            |v: &[f64], o: &mut [f64]| {
                curv.apply(v, o);
                Ok(())
            },
            &g,
            Some(&dir),
            None::<fn(&[f64], &mut [f64]) -> langevin_core::Result<()>>,
            &CgConfig {
                max_iters: Some(CG_ITERS),
                tol: 0.0,
                atol: 0.0,
                damping: lam,
            },
        );
        curvature_error(&curv)?;
        let d_new = match solved {
            Ok(res) if res.x.iter().all(|x| x.is_finite()) => {
                cg_iterations += res.iterations as u64;
                res.x
            }
            Ok(_) | Err(langevin_core::Error::NotPositiveDefinite { .. }) => {
                dir.iter_mut().for_each(|x| *x = 0.0);
                skip(&mut divergences, step)?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let s_vec: Vec<f64> = d_new.iter().map(|x| -cfg.step_size * x).collect();
        let mut cs = vec![0.0; p];
        curv.apply(&s_vec, &mut cs);
        let predicted = dot(&g, &s_vec) + 0.5 * dot(&s_vec, &cs);
        drop(curv);
        let mut next = theta.clone();
        next.values_mut()
            .iter_mut()
            .zip(&s_vec)
            .for_each(|(t, s)| *t += s);
        let loss_after = loss_at(density, &next, &b)?;
        let verdict = lm_verdict(-lp, loss_after, predicted);
        if verdict == Lm::Reject {
            dir.iter_mut().for_each(|x| *x = 0.0);
            rejected += 1;
        } else {
            theta = next;
            dir = d_new;
        }
        let new_lam = match verdict {
            Lm::Reject => lam * LM_REJECT,
            Lm::Keep => lam,
            Lm::Down => lam * LM_DOWN,
        };
        lam = new_lam.clamp(DAMPING, DAMPING_MAX);
        lam_max_seen = lam_max_seen.max(lam);
    }
    if theta.values().iter().any(|v| !v.is_finite()) {
        return Err(anyhow::Error::new(Diverged(
            "--method tngd: the NGD-CG baseline's parameters are not finite".into(),
        )));
    }
    Ok(NgdCg {
        trained: Trained {
            params: theta,
            divergences,
            trace,
            seconds: t0.elapsed().as_secs_f64(),
        },
        products: products.get(),
        cg_iterations,
        rejected,
        damping_final: lam,
        damping_max: lam_max_seen,
    })
}

/// The minibatch log posterior at `theta` with its gradient in `grad`; `None` when
/// either is not finite (a recoverable failure counts as not finite).
fn log_posterior_and_grad<D: LogDensity<Batch = Batch>>(
    density: &D,
    theta: &Params,
    b: &Batch,
    grad: &mut [f64],
) -> Result<Option<f64>> {
    let lp = match density.value_and_grad(theta, b, grad) {
        Ok((v, _)) => v,
        Err(e) if e.is_recoverable() => f64::NAN,
        Err(e) => return Err(e.into()),
    };
    Ok((lp.is_finite() && grad.iter().all(|g| g.is_finite())).then_some(lp))
}

/// The minibatch loss `−ℓ` at `theta` (NaN for a recoverable failure).
fn loss_at<D: LogDensity<Batch = Batch>>(density: &D, theta: &Params, b: &Batch) -> Result<f64> {
    match density.value(theta, b) {
        Ok((v, _)) => Ok(-v),
        Err(e) if e.is_recoverable() => Ok(f64::NAN),
        Err(e) => Err(e.into()),
    }
}

/// The Levenberg-Marquardt damping rule shared by TNGD and NGD-CG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lm {
    /// The loss rose (or is not finite): undo the step, raise λ.
    Reject,
    /// Accepted, but the quadratic model promised much more: keep λ.
    Keep,
    /// Accepted: lower λ.
    Down,
}

/// The verdict on a step from `loss_before` to `loss_after` whose quadratic model
/// predicted the change `predicted`. Changes below 1e-6 relative are noise once the
/// run has converged: they neither reject a step nor move the damping.
fn lm_verdict(loss_before: f64, loss_after: f64, predicted: f64) -> Lm {
    let change = loss_after - loss_before;
    let negligible = 1e-6 * loss_before.abs().max(1.0);
    if !loss_after.is_finite() || change > negligible {
        Lm::Reject
    } else if predicted < -negligible && predicted.is_finite() && change / predicted < 0.25 {
        Lm::Keep
    } else {
        Lm::Down
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A GGN-vector product that failed: a non-finite one is a divergence (the
/// caller skips the step), anything else stops the run.
fn curvature_error(curv: &Curvature<'_>) -> Result<()> {
    match curv.error.borrow_mut().take() {
        None => Ok(()),
        Some(e) if e.is_recoverable() || matches!(e, langevin_core::Error::Density(_)) => Ok(()),
        Some(e) => Err(e.into()),
    }
}

/// Training loss (`−ℓ` on every training row) and the point estimate's
/// metrics on the training rows and on the evaluation rows.
fn evaluate(
    prep: &Prepared,
    density: &impl LogDensity<Batch = Batch>,
    full: &Batch,
    theta: &Params,
) -> Result<serde_json::Value> {
    let lp = density
        .value(theta, full)
        .map(|(v, _)| v)
        .unwrap_or(f64::NAN);
    let mut out = serde_json::Map::new();
    out.insert("train_loss".into(), num(-lp));
    let (shift, scale) = prep.target_scaler.unwrap_or((0.0, 1.0));
    let train_raw: Vec<f64> = match prep.model.spec().task {
        Task::Regression => prep.train_y.iter().map(|y| y * scale + shift).collect(),
        _ => prep.train_y.clone(),
    };
    let mut sets = vec![("train", &prep.train_x, &prep.train_y, &train_raw)];
    if prep.metrics_on != "train" {
        sets.push((
            prep.metrics_on,
            &prep.eval_x,
            &prep.eval_y,
            &prep.eval_y_raw,
        ));
    }
    for (on, x, y, y_raw) in sets {
        match predictive(&prep.model, &[theta.values()], x)? {
            Predictive::Classification { probs, k, .. } => {
                let y: Vec<usize> = y.iter().map(|&v| v as usize).collect();
                let m = classification_metrics(&probs, k, &y, 10)?;
                out.insert(format!("{on}_accuracy"), num(m.accuracy));
                out.insert(format!("{on}_nll"), num(m.nll));
            }
            Predictive::Regression { means, sds } => {
                let (rmse, nll) = regression_metrics(&means, &sds, y_raw, scale, shift);
                out.insert(format!("{on}_rmse"), num(rmse));
                out.insert(format!("{on}_nll"), num(nll));
                // The trivial predictor: the training targets' mean.
                let mean = train_raw.iter().sum::<f64>() / train_raw.len().max(1) as f64;
                let mse = y_raw.iter().map(|y| (y - mean).powi(2)).sum::<f64>()
                    / y_raw.len().max(1) as f64;
                out.insert(format!("{on}_rmse_of_train_mean"), num(mse.sqrt()));
            }
        }
    }
    Ok(serde_json::Value::Object(out))
}
