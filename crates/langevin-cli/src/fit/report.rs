//! The end of `langevin fit`: parameter summaries, the posterior predictive
//! on the held-out rows and its metrics, the plots, the printed report, and
//! `summary.json`'s content.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use langevin::run::Verdict;
use langevin::samples::Samples;
use langevin_core::Tuning;
use serde_json::json;

use super::data::Prepared;
use super::plan::{FitConfig, MIN_VERDICT_DRAWS};
use crate::evaluate::{
    classification_metrics, predictive, regression_metrics, Calibration, Predictive,
};
use crate::rundir::num;
use crate::summary::{param_summaries, table, warnings};

/// Most draws used for the posterior predictive.
pub const MAX_PREDICTIVE_DRAWS: usize = 1000;

/// What the report needs besides the draws.
pub struct ReportArgs<'a> {
    pub cfg: &'a FitConfig,
    pub prep: &'a Prepared,
    pub out_dir: &'a Path,
    pub no_plots: bool,
    pub quiet: bool,
    pub t0: Instant,
}

/// How a sampler run went, for the report.
pub struct SamplerFacts<'a> {
    /// Steps every chain completed.
    pub steps_done: u64,
    /// The thinning interval the draws were kept with.
    pub thin: u64,
    /// Each chain's final tuning.
    pub tuning: &'a [Tuning],
}

/// The convergence verdict of `samples` under `cfg`'s rule (`None` with
/// fewer than 4 draws per chain: a point estimate).
pub fn verdict(cfg: &FitConfig, samples: &Samples) -> Result<Option<Verdict>> {
    if samples.min_draws() < langevin::diagnostics::MIN_DRAWS {
        return Ok(None);
    }
    // A last-layer Laplace run fixes every other parameter: the verdict is on the
    // parameters that vary.
    let varying;
    let samples = if cfg.last_layer {
        let first = samples.chains[0].draw(0).to_vec();
        let cols: Vec<usize> = (0..samples.dim())
            .filter(|&j| {
                samples
                    .chains
                    .iter()
                    .any(|c| (0..c.n_draws()).any(|i| c.draw(i)[j] != first[j]))
            })
            .collect();
        varying = samples.select(&cols)?;
        &varying
    } else {
        samples
    };
    Ok(Some(Verdict::of(
        samples,
        cfg.target_ess,
        cfg.target_rhat,
        MIN_VERDICT_DRAWS,
    )?))
}

/// The metrics of a predictive on the evaluation rows (`{on}_nll` and
/// `{on}_accuracy`, `ece`, `brier`, or `{on}_rmse`), and the calibration bins of a
/// classification.
pub fn predictive_metrics(
    pred: &Predictive,
    prep: &Prepared,
    on: &str,
) -> Result<(
    serde_json::Map<String, serde_json::Value>,
    Option<Calibration>,
)> {
    let mut metrics = serde_json::Map::new();
    let mut reliability = None;
    match pred {
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
    Ok((metrics, reliability))
}

/// Summarise `samples` (and print the report unless quiet): the content of
/// `summary.json`.
pub fn summarize_and_report(
    r: &ReportArgs<'_>,
    samples: &Samples,
    divergences: &[u64],
    sampler: Option<&SamplerFacts<'_>>,
) -> Result<serde_json::Value> {
    let (cfg, prep, out_dir) = (r.cfg, r.prep, r.out_dir);
    let model = &prep.model;
    let names = model.param_names();
    if samples.n_draws() == 0 {
        anyhow::bail!("no draws were collected");
    }
    let params = param_summaries(samples)?;
    let draws = samples.spread(MAX_PREDICTIVE_DRAWS);
    let pred = predictive(model, &draws, &prep.eval_x)?;
    let on = cfg.metrics_on;
    let (mut metrics, reliability) = predictive_metrics(&pred, prep, on)?;
    metrics.insert("metrics_on".into(), json!(on));
    metrics.insert("n_eval".into(), json!(prep.eval_y.len()));
    metrics.insert("predictive_draws".into(), json!(draws.len()));

    let mut plots = Vec::new();
    if !r.no_plots {
        let max_plot = 12.min(names.len());
        let plot_names: Vec<String> = names[..max_plot].to_vec();
        let more = if names.len() > max_plot {
            format!(" (first {max_plot} of {} parameters)", names.len())
        } else {
            String::new()
        };
        let min_draws = samples.min_draws();
        let title = format!("{} {} on {}", cfg.method.label(), cfg.model, cfg.data);
        if min_draws >= 2 {
            let traces: Vec<Vec<Vec<f64>>> =
                (0..max_plot).map(|j| samples.column_by_chain(j)).collect();
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

    let verdict = verdict(cfg, samples)?;
    let mut summary = json!({
        "converged": verdict.as_ref().map(|v| v.converged),
        "convergence": verdict,
        "params": params,
        "metrics": metrics,
        "divergences": divergences.iter().sum::<u64>(),
        "divergences_per_chain": divergences,
        "draws_per_chain": samples.chains.iter().map(|c| c.n_draws()).collect::<Vec<_>>(),
        "plots": plots,
        "config": serde_json::to_value(cfg)?,
        "seconds": r.t0.elapsed().as_secs_f64(),
    });
    if let Some(f) = sampler {
        let base = cfg.step_size;
        summary["steps_done"] = json!(f.steps_done);
        summary["thin"] = json!(f.thin);
        summary["adaptation"] = json!({
            "adapt": cfg.adapt,
            "metric": f.tuning.first().map(|t| t.metric.kind()),
            "step_size_per_chain": f.tuning.iter().map(|t| num(base * t.step_scale)).collect::<Vec<_>>(),
            "inverse_mass_diagonal_range_per_chain": f.tuning.iter().map(|t| {
                let d = t.metric.inverse_mass_diagonal(names.len());
                let lo = d.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = d.iter().copied().fold(0.0, f64::max);
                json!([num(lo), num(hi)])
            }).collect::<Vec<_>>(),
        });
    }
    if !r.quiet {
        print_report(cfg, &summary);
        if let Some(v) = &verdict {
            for w in warnings(&params, cfg.target_ess, cfg.target_rhat) {
                eprintln!("warning: {w}");
            }
            if v.converged {
                println!("{}", v.reason);
            } else {
                eprintln!("warning: {}", v.reason);
                if cfg.until.is_some() {
                    eprintln!(
                        "(the run reached --max-steps {}; a longer run, --adapt dense, or a \
                         reparameterisation may help)",
                        cfg.steps
                    );
                }
            }
        }
    }
    Ok(summary)
}

fn plot(done: &mut Vec<String>, name: &str, r: std::result::Result<(), langevin_plot::PlotError>) {
    match r {
        Ok(()) => done.push(name.to_string()),
        Err(e) => eprintln!("warning: plot {name} not written: {e}"),
    }
}

fn print_report(cfg: &FitConfig, summary: &serde_json::Value) {
    let params = summary["params"].as_array().cloned().unwrap_or_default();
    if params.len() <= 40 {
        println!("{}", table(&params));
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
