//! `langevin diagnose --run DIR`: the summary table (mean, sd, ESS, R-hat)
//! computed from `samples.csv`, with warnings on R-hat > 1.01 and low ESS.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::rundir::{read_meta, read_samples, RunMeta};
use crate::summary::{param_summaries, table, warnings};

/// Arguments of `langevin diagnose`.
#[derive(Args, Debug, Clone)]
pub struct DiagnoseArgs {
    /// A directory written by `langevin fit`.
    #[arg(long)]
    pub run: PathBuf,
    /// Warn when a bulk or tail ESS is below this (default: 100 per chain).
    #[arg(long)]
    pub min_ess: Option<f64>,
    /// Warn when R-hat is above this.
    #[arg(long, default_value_t = 1.01)]
    pub max_rhat: f64,
}

/// Run `langevin diagnose`.
pub fn run(args: DiagnoseArgs) -> Result<()> {
    if !(args.max_rhat.is_finite() && args.max_rhat >= 1.0) {
        crate::bail_input!(
            "--max-rhat must be a finite number >= 1, got {}",
            args.max_rhat
        );
    }
    if let Some(e) = args.min_ess {
        if !(e.is_finite() && e >= 0.0) {
            crate::bail_input!("--min-ess must be a finite number >= 0, got {e}");
        }
    }
    let meta: RunMeta = read_meta(&args.run)?;
    let samples = read_samples(&args.run)?;
    if samples.names != meta.param_names {
        crate::bail_input!(
            "{}: the columns of samples.csv do not match run.json's parameters",
            args.run.display()
        );
    }
    let params = param_summaries(&samples)?;
    let n_chains = samples.chains.len();
    println!(
        "{} chains, {} draws per chain (shortest), {} parameters",
        n_chains,
        samples.min_draws(),
        samples.names.len()
    );
    println!("{}", table(&params));
    let summary_path = args.run.join("summary.json");
    match std::fs::read_to_string(&summary_path) {
        Ok(text) => {
            let v = serde_json::from_str::<serde_json::Value>(&text).ok();
            if v.as_ref().is_none_or(|v| !v["metrics"].is_object()) {
                eprintln!(
                    "warning: {} has no metrics (not JSON, or damaged)",
                    summary_path.display()
                );
            }
            if let Some(v) = v.filter(|v| v["metrics"].is_object()) {
                println!("metrics: {}", v["metrics"]);
                if let Some(d) = v["divergences"].as_u64().filter(|&d| d > 0) {
                    println!("divergent steps (skipped): {d}");
                }
            }
        }
        Err(_) => eprintln!(
            "warning: {} is missing: the run did not finish",
            summary_path.display()
        ),
    }
    if samples.min_draws() < langevin::diagnostics::MIN_DRAWS {
        eprintln!(
            "warning: fewer than {} draws per chain: no ESS or R-hat (a MAP run keeps one point per chain)",
            langevin::diagnostics::MIN_DRAWS
        );
        return Ok(());
    }
    let min_ess = args.min_ess.unwrap_or(100.0 * n_chains as f64);
    let warns = warnings(&params, min_ess, args.max_rhat);
    for w in &warns {
        eprintln!("warning: {w}");
    }
    if warns.is_empty() {
        println!(
            "no warnings: every R-hat <= {} and every ESS >= {}",
            args.max_rhat,
            crate::summary::count(min_ess)
        );
    }
    Ok(())
}
