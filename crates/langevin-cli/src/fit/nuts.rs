//! `langevin fit --method nuts`: the exact reference, the No-U-Turn Sampler
//! of [`langevin::nuts`] (nuts-rs) on the full training set.
//!
//! The target is the posterior itself: the model's batch-averaged log
//! posterior (f64) on every training row at temperature `1/N`. `--burn-in`
//! is the warm-up (step size and diagonal mass matrix adaptation), `--steps`
//! is warm-up plus draws (default 2000, warm-up half of it), `--thin` keeps
//! every K-th draw after warm-up (default 1 up to the samplers' storage cap).
//! `--max-divergences` stops a chain (exit code 3) after that many divergent
//! draws after warm-up, or a tenth of the draws if fewer (the samplers' rule).
//! Refused (exit code 2): `--step-size` and `--friction` (NUTS adapts its step
//! size and has no friction), `--batch-size` below the number of training
//! rows (NUTS needs exact gradients), `--checkpoint-every` (nuts-rs chains
//! cannot be saved, so a NUTS run cannot be resumed).
//!
//! The run folder is the samplers': `run.json`, `samples.csv` (same header,
//! draw-major rows, written when the chains finish), `summary.json` (the
//! same fields, plus a `nuts` object: adapted step size, divergences during
//! and after warm-up, mean tree depth, gradient evaluations, wall times per
//! chain) and the plots.

use anyhow::Result;
use candle_core::{DType, Device};
use indicatif::{ProgressBar, ProgressStyle};
use langevin::nuts::{MassMatrix, NutsConfig, NutsMonitor, NutsOutput, Stop};
use langevin::samples::{CsvDrawWriter, Samples};
use serde_json::json;

use super::args::FitArgs;
use super::plan::{max_draws, FitConfig};
use super::report::{summarize_and_report, ReportArgs};
use crate::exit::{bad_input, Diverged};

/// Default `--steps` of NUTS: 1000 warm-up draws and 1000 draws.
pub const DEFAULT_NUTS_STEPS: u64 = 2000;

/// Refuse the options that do not apply to NUTS (exit code 2).
pub fn check_applicable(args: &FitArgs) -> Result<()> {
    for (given, opt, why) in [
        (
            args.step_size.is_some(),
            "step-size",
            "NUTS adapts its step size during the warm-up (--burn-in)",
        ),
        (args.friction.is_some(), "friction", "NUTS has no friction"),
        (
            args.adapt.is_some(),
            "adapt",
            "NUTS always adapts its step size and a diagonal mass matrix in the warm-up",
        ),
        (
            args.max_steps.is_some(),
            "max-steps",
            "a NUTS run has a fixed length (--steps, warm-up plus draws); its draws still get \
             the convergence verdict",
        ),
        (
            args.checkpoint_every.is_some(),
            "checkpoint-every",
            "nuts-rs chains cannot be saved, so a NUTS run cannot be checkpointed or \
             resumed; run it again instead",
        ),
    ] {
        if given {
            crate::bail_input!("--{opt} does not apply to --method nuts: {why}");
        }
    }
    Ok(())
}

/// Fill in the NUTS plan: full batch, steps = warm-up + draws, thinning.
pub fn resolve(args: &FitArgs, cfg: &mut FitConfig, n_params: usize) -> Result<()> {
    if let Some(b) = args.d.batch_size {
        if b < cfg.n_train {
            crate::bail_input!(
                "--batch-size {b} is smaller than the {} training rows: --method nuts needs \
                 the exact gradient of the full log posterior (omit --batch-size)",
                cfg.n_train
            );
        }
    }
    let steps = args.steps.unwrap_or(DEFAULT_NUTS_STEPS);
    let burn_in = args.burn_in.unwrap_or(steps / 2);
    if burn_in >= steps {
        crate::bail_input!(
            "--burn-in ({burn_in}) must be smaller than --steps ({steps}): --steps is the \
             warm-up plus the draws"
        );
    }
    let kept = steps - burn_in;
    let per_chain = max_draws(n_params, cfg.chains) as u64;
    let thin = args.thin.unwrap_or(kept.div_ceil(per_chain).max(1));
    if thin > kept {
        crate::bail_input!(
            "--thin {thin} is larger than the {kept} draws after the warm-up: no draw would be kept"
        );
    }
    cfg.batch_size = cfg.n_train;
    // Adapted per chain: summary.json's `nuts.step_size`.
    cfg.step_size = f64::NAN;
    cfg.friction = 0.0;
    cfg.steps = steps;
    cfg.burn_in = burn_in;
    cfg.thin = thin;
    nuts_config(cfg).validate().map_err(bad_input)?;
    Ok(())
}

/// The library's settings for the resolved plan.
pub fn nuts_config(cfg: &FitConfig) -> NutsConfig {
    let draws = cfg.steps.saturating_sub(cfg.burn_in);
    NutsConfig {
        warmup: cfg.burn_in,
        draws,
        thin: cfg.thin,
        temperature: cfg.temperature,
        mass: MassMatrix::Diag,
        // The samplers' rule: the limit, or a tenth of the draws if fewer.
        max_divergences: Some(cfg.max_divergences.min((draws / 10).max(1))),
        ..NutsConfig::default()
    }
}

/// Run NUTS, write `samples.csv`, and return `summary.json`'s content.
pub fn run(r: &ReportArgs<'_>, threads: Option<usize>) -> Result<serde_json::Value> {
    let (cfg, prep) = (r.cfg, r.prep);
    let model = &prep.model;
    let density = model.density(DType::F64, &Device::Cpu);
    let batch = model.batch(&prep.train_x, &prep.train_y, DType::F64, &Device::Cpu)?;
    let config = nuts_config(cfg);
    let progress = Progress::new(r.quiet, cfg);
    let out = langevin::nuts::sample(
        &density,
        &batch,
        &config,
        cfg.seed,
        cfg.chains,
        |_, rng| Ok(model.init(rng)),
        threads,
        &progress,
    );
    progress.bar.finish_and_clear();
    let out = out?;
    let mut samples = out.samples.clone();
    // The model's display names (feature names) rather than the layout's.
    samples.names = model.param_names().to_vec();
    let samples_path = r.out_dir.join(langevin::run::SAMPLES_FILE);
    write_draws(&samples_path, &samples)?;
    match &out.stop {
        Some(Stop::Divergences { limit, .. }) => {
            return Err(anyhow::Error::new(Diverged(format!(
                "stopped: more than {limit} divergent NUTS draws after the warm-up in a chain \
                 (--max-divergences, at most a tenth of the draws) (per chain: {:?}); the draws \
                 collected so far are in {}. The posterior is hard for NUTS here: try a longer \
                 --burn-in or a simpler model.",
                out.divergences,
                samples_path.display()
            ))));
        }
        Some(Stop::Interrupted) => anyhow::bail!("interrupted"),
        _ => {}
    }
    let mut summary = summarize_and_report(r, &samples, &out.divergences, None)?;
    let extra = nuts_summary(&out);
    if !r.quiet {
        println!(
            "NUTS: step size {}, mean tree depth {}, {:.1} gradient evaluations per draw, \
             {} warm-up divergences",
            list(&out.step_size, 4),
            list(&out.mean_tree_depth, 2),
            out.gradients_per_draw(),
            out.warmup_divergences.iter().sum::<u64>()
        );
    }
    if let Some(o) = summary.as_object_mut() {
        o.insert("nuts".into(), extra);
    }
    Ok(summary)
}

/// `summary.json`'s `nuts` object.
fn nuts_summary(out: &NutsOutput) -> serde_json::Value {
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    json!({
        "step_size": out.step_size,
        "divergences": out.divergences,
        "warmup_divergences": out.warmup_divergences,
        "mean_tree_depth": out.mean_tree_depth,
        "max_depth_hits": out.max_depth_hits,
        "gradient_evaluations": out.gradient_evaluations,
        "sampling_gradient_evaluations": out.sampling_gradient_evaluations,
        "gradients_per_draw": out.gradients_per_draw(),
        "warmup_seconds": out.warmup_seconds,
        "sampling_seconds": out.sampling_seconds,
        "warmup_wall_seconds": max(&out.warmup_seconds),
        "sampling_wall_seconds": max(&out.sampling_seconds),
    })
}

fn list(v: &[f64], digits: usize) -> String {
    let s: Vec<String> = v.iter().map(|x| format!("{x:.digits$}")).collect();
    s.join("/")
}

/// Write every draw to `path` in the run loop's format and order
/// (draw-major: draw `i` of chain 0, 1, ..., then draw `i + 1`).
fn write_draws(path: &std::path::Path, samples: &Samples) -> Result<()> {
    let mut w = CsvDrawWriter::create(path, &samples.names)?;
    let longest = samples
        .chains
        .iter()
        .map(|c| c.n_draws())
        .max()
        .unwrap_or(0);
    for i in 0..longest {
        for (k, c) in samples.chains.iter().enumerate() {
            if i < c.n_draws() {
                w.write(k, i, c.draw(i))?;
            }
        }
    }
    w.sync()?;
    Ok(())
}

/// The progress bar (hidden with `--quiet`): one tick per draw of a chain.
struct Progress {
    bar: ProgressBar,
}

impl Progress {
    fn new(quiet: bool, cfg: &FitConfig) -> Self {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            let pb = ProgressBar::new(cfg.steps * cfg.chains as u64);
            pb.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} NUTS draws ({eta} left)",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            pb
        };
        Self { bar }
    }
}

impl NutsMonitor for Progress {
    fn on_draw(&self, _chain: usize, _draw: u64, _warmup: bool) {
        self.bar.inc(1);
    }
    fn interrupted(&self) -> bool {
        super::sample::INTERRUPT.load(std::sync::atomic::Ordering::Relaxed)
    }
}
