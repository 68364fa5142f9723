//! `langevin diagnose --run DIR`: the summary table (mean, sd, ESS, R-hat)
//! computed from `samples.csv`, with warnings on R-hat > 1.01 and low ESS.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::runio::{read_samples, RunMeta};

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

/// Format parameter summaries (`summary.json`'s `params`) as a table.
pub fn table(params: &[serde_json::Value]) -> String {
    let w = params
        .iter()
        .filter_map(|p| p["name"].as_str().map(|s| s.chars().count()))
        .max()
        .unwrap_or(4)
        .max(9);
    let f = |v: &serde_json::Value, prec: usize| match v.as_f64() {
        Some(x) => format!("{x:.prec$}"),
        None => "-".to_string(),
    };
    let mut s = format!(
        "{:<w$} {:>10} {:>9} {:>9} {:>9} {:>7}\n",
        "parameter", "mean", "sd", "ess_bulk", "ess_tail", "rhat"
    );
    for p in params {
        s += &format!(
            "{:<w$} {:>10} {:>9} {:>9} {:>9} {:>7}\n",
            p["name"].as_str().unwrap_or("?"),
            f(&p["mean"], 4),
            f(&p["sd"], 4),
            f(&p["ess_bulk"], 0),
            f(&p["ess_tail"], 0),
            f(&p["rhat"], 3),
        );
    }
    s.pop();
    s
}

/// Warnings for R-hat above `max_rhat` or ESS below `min_ess`.
pub fn warnings(params: &[serde_json::Value], min_ess: f64, max_rhat: f64) -> Vec<String> {
    let mut out = Vec::new();
    for p in params {
        let name = p["name"].as_str().unwrap_or("?");
        if let Some(r) = p["rhat"].as_f64() {
            if r > max_rhat {
                out.push(format!(
                    "{name}: R-hat {r:.3} > {max_rhat}: the chains disagree (not converged); run longer"
                ));
            }
        }
        for key in ["ess_bulk", "ess_tail"] {
            if let Some(e) = p[key].as_f64() {
                if e < min_ess {
                    out.push(format!(
                        "{name}: {key} {e:.0} < {min_ess:.0}: too few effective draws; run longer or tune the step size"
                    ));
                }
            }
        }
    }
    out
}

/// Run `langevin diagnose`.
pub fn run(args: DiagnoseArgs) -> Result<()> {
    let meta: RunMeta = crate::runio::read_meta(&args.run)?;
    let samples = read_samples(&args.run.join("samples.csv"))?;
    if samples.names != meta.param_names {
        crate::bail_input!(
            "{}: the columns of samples.csv do not match run.json's parameters",
            args.run.display()
        );
    }
    let params = crate::fit::param_summaries(&samples.names, &samples.chains);
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
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
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
            "no warnings: every R-hat <= {} and every ESS >= {min_ess:.0}",
            args.max_rhat
        );
    }
    Ok(())
}
