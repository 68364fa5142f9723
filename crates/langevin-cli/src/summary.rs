//! Parameter summaries as `summary.json` holds them, the table printed by
//! `fit` and `diagnose`, and the convergence warnings. The numbers come from
//! the library's one summary ([`langevin::samples::Samples::summary`]).

use langevin::samples::Samples;
use serde_json::json;

use crate::rundir::num;

/// Per-parameter summaries (mean, sd, bulk/tail ESS, R-hat, MCSE,
/// quantiles) as JSON objects; non-finite numbers are `null`.
pub fn param_summaries(samples: &Samples) -> anyhow::Result<Vec<serde_json::Value>> {
    Ok(samples
        .summary()?
        .into_iter()
        .map(|p| {
            let s = &p.summary;
            json!({
                "name": p.name,
                "mean": num(s.mean),
                "sd": num(s.sd),
                "ess_bulk": num(s.ess_bulk),
                "ess_tail": num(s.ess_tail),
                "rhat": num(s.rhat),
                "mcse_mean": num(s.mcse_mean),
                "q05": num(s.q05),
                "q50": num(s.q50),
                "q95": num(s.q95),
            })
        })
        .collect())
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
                        "{name}: {key} {e:.0} < {}: too few effective draws; run longer or tune the step size",
                        count(min_ess)
                    ));
                }
            }
        }
    }
    out
}

/// A threshold for messages: whole numbers up to 1e9, scientific notation above
/// (`--min-ess 1e308` would otherwise print 309 digits).
pub fn count(v: f64) -> String {
    if v.abs() < 1e9 {
        format!("{v:.0}")
    } else {
        format!("{v:.3e}")
    }
}
