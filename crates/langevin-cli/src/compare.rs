//! `langevin compare`: fit several methods on the same data and split, and
//! tabulate their held-out metrics.
//!
//! Each method runs `langevin fit` in-process into `DIR/<method>/` with the
//! shared options (data, target, model, seed, ...) and its own defaults
//! otherwise. Then `DIR/compare.csv` and `DIR/compare.md` get one row per
//! method (test NLL, accuracy or RMSE, ECE, seconds, status), the Markdown
//! table is printed, and `DIR/compare.png` shows the metrics as dots per
//! method. A method that fails (divergence, a dense method on too large a
//! model) gets a row with its error and the others still run; the command
//! then exits with the first failure's exit code.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use clap::{Args, ValueEnum};

use crate::exit::{bad_input, code_for};
use crate::fit::{self, DataArgs, FitArgs, MethodArg};
use crate::rundir::default_out_dir;

/// Arguments of `langevin compare`.
#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// Methods to fit, comma-separated (any `fit --method`), e.g.
    /// nuts,map,sghmc,vi,laplace-diag-ggn (nuts: the exact reference).
    #[arg(long, required = true)]
    pub methods: String,
    /// The data, model and split, as for `fit`.
    #[command(flatten)]
    pub d: DataArgs,
    /// Steps of every method (default: each method's own default).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Chains (samplers) or independent draw sets (Gaussian methods).
    #[arg(long)]
    pub chains: Option<usize>,
    /// Output directory (default: runs/<UTC timestamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Skip the PNG plots (of each fit and the comparison).
    #[arg(long)]
    pub no_plots: bool,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
}

/// One row of the comparison.
#[derive(Debug, Clone)]
struct Row {
    method: String,
    nll: f64,
    /// Accuracy (classification) or RMSE (regression).
    score: f64,
    ece: f64,
    seconds: f64,
    status: String,
}

/// Parse and check `--methods`: known names, no repeats.
fn parse_methods(s: &str) -> Result<Vec<(String, MethodArg)>> {
    let mut out: Vec<(String, MethodArg)> = Vec::new();
    for name in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let Ok(m) = MethodArg::from_str(name, false) else {
            let known: Vec<String> = MethodArg::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
                .collect();
            crate::bail_input!(
                "--methods: unknown method `{name}` (known: {})",
                known.join(", ")
            );
        };
        if out.iter().any(|(_, x)| *x == m) {
            crate::bail_input!("--methods: `{name}` is listed twice");
        }
        out.push((name.to_string(), m));
    }
    if out.is_empty() {
        crate::bail_input!("--methods: no method given (e.g. --methods map,sghmc,vi)");
    }
    Ok(out)
}

/// The `fit` arguments of one method: the shared options, `fit`'s
/// defaults otherwise.
fn fit_args(a: &CompareArgs, method: MethodArg, out: &Path) -> FitArgs {
    FitArgs {
        d: a.d.clone(),
        method,
        steps: a.steps,
        chains: a.chains,
        out: Some(out.to_path_buf()),
        no_plots: a.no_plots,
        quiet: true,
        ..FitArgs::default()
    }
}

/// Run `langevin compare`.
pub fn run(a: CompareArgs) -> Result<()> {
    let methods = parse_methods(&a.methods)?;
    let dir = a.out.clone().unwrap_or_else(default_out_dir);
    let existed = dir.exists();
    std::fs::create_dir_all(&dir)
        .map_err(|e| bad_input(format!("cannot create {}: {e}", dir.display())))?;
    for f in ["compare.csv", "compare.md", "compare.png"] {
        let p = dir.join(f);
        if p.exists() {
            std::fs::remove_file(&p)?;
        }
    }
    let mut jobs = Vec::with_capacity(methods.len());
    for (name, m) in &methods {
        let sub = dir.join(name);
        jobs.push((name.clone(), *m, fit_args(&a, *m, &sub), sub));
    }
    let mut rows = Vec::with_capacity(jobs.len());
    let mut first_err: Option<anyhow::Error> = None;
    let mut metrics_on = "test".to_string();
    let mut classification = None;
    for (name, _m, args, sub) in jobs {
        if !a.quiet {
            eprintln!("compare: fitting {name} into {}", sub.display());
        }
        let t = Instant::now();
        let r = fit::run(args);
        let seconds = t.elapsed().as_secs_f64();
        let mut row = Row {
            method: name.clone(),
            nll: f64::NAN,
            score: f64::NAN,
            ece: f64::NAN,
            seconds,
            status: "ok".into(),
        };
        match r.and_then(|()| read_summary(&sub)) {
            Ok(s) => {
                let m = &s["metrics"];
                let on = m["metrics_on"].as_str().unwrap_or("test").to_string();
                let get = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
                row.nll = get(&format!("{on}_nll"));
                let is_class = m.get(format!("{on}_accuracy")).is_some();
                row.score = if is_class {
                    get(&format!("{on}_accuracy"))
                } else {
                    get(&format!("{on}_rmse"))
                };
                row.ece = get("ece");
                classification = Some(is_class);
                metrics_on = on;
            }
            Err(e) => {
                let code = code_for(&e);
                let msg = format!("{e:#}");
                if !a.quiet {
                    eprintln!("compare: {name} failed (exit code {code}): {msg}");
                }
                row.status = format!("failed (exit {code}): {}", msg.replace(['\n', '|'], " "));
                first_err.get_or_insert(e.context(format!("compare: --method {name}")));
            }
        }
        rows.push(row);
    }
    // Every method refused as bad input (the shared options or the data are bad): no
    // table of failures and no folder left behind, exit 2 with the first message.
    if let Some(e) = first_err.take() {
        if rows.iter().all(|r| r.status.starts_with("failed (exit 2)")) {
            if !existed {
                let _ = std::fs::remove_dir_all(&dir);
            }
            return Err(e);
        }
        first_err = Some(e);
    }
    let classification = classification.unwrap_or(true);
    let (csv, md) = tables(&rows, &metrics_on, classification);
    std::fs::write(dir.join("compare.csv"), csv)?;
    std::fs::write(dir.join("compare.md"), &md)?;
    if !a.no_plots {
        let items: Vec<String> = rows.iter().map(|r| r.method.clone()).collect();
        let col = |f: fn(&Row) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
        let mut metrics = vec![(format!("{metrics_on} NLL"), col(|r| r.nll))];
        if classification {
            metrics.push((format!("{metrics_on} accuracy"), col(|r| r.score)));
            metrics.push(("ECE".into(), col(|r| r.ece)));
        } else {
            metrics.push((format!("{metrics_on} RMSE"), col(|r| r.score)));
        }
        metrics.push(("seconds".into(), col(|r| r.seconds)));
        let title = format!(
            "compare on {}",
            a.d.data.as_deref().unwrap_or(fit::DEFAULT_DATA)
        );
        if let Err(e) =
            langevin_plot::metric_dots_png(dir.join("compare.png"), &title, &items, &metrics)
        {
            eprintln!("warning: plot compare.png not written: {e}");
        }
    }
    if !a.quiet {
        print!("{md}");
        println!("wrote {}", dir.display());
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn read_summary(dir: &Path) -> Result<serde_json::Value> {
    let p = dir.join("summary.json");
    let text = std::fs::read_to_string(&p)
        .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", p.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// The CSV and Markdown tables.
fn tables(rows: &[Row], on: &str, classification: bool) -> (String, String) {
    let score = if classification { "accuracy" } else { "rmse" };
    let f = |v: f64| {
        if v.is_finite() {
            format!("{v:.4}")
        } else {
            String::new()
        }
    };
    let mut csv = format!("method,{on}_nll,{on}_{score},ece,seconds,status\n");
    let mut md = format!(
        "| method | {on} NLL | {on} {score} | ECE | seconds | status |\n|---|---|---|---|---|---|\n"
    );
    for r in rows {
        let status_csv = if r.status.contains([',', '"']) {
            format!("\"{}\"", r.status.replace('"', "\"\""))
        } else {
            r.status.clone()
        };
        csv += &format!(
            "{},{},{},{},{:.3},{}\n",
            r.method,
            f(r.nll),
            f(r.score),
            f(r.ece),
            r.seconds,
            status_csv
        );
        let dash = |s: String| if s.is_empty() { "–".to_string() } else { s };
        md += &format!(
            "| {} | {} | {} | {} | {:.2} | {} |\n",
            r.method,
            dash(f(r.nll)),
            dash(f(r.score)),
            dash(f(r.ece)),
            r.seconds,
            r.status
        );
    }
    (csv, md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_parsed_and_checked() {
        let m = parse_methods("map, sghmc,vi,laplace-diag-ggn").unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[3].1, MethodArg::LaplaceDiagGgn);
        let e = parse_methods("map,nope").unwrap_err();
        assert_eq!(code_for(&e), 2);
        assert!(e.to_string().contains("`nope`"));
        assert!(parse_methods("vi,vi").is_err());
        assert!(parse_methods(" , ").is_err());
        // NUTS, the exact reference, sits next to every other method.
        let m = parse_methods("nuts,sghmc").unwrap();
        assert_eq!(m[0].1, MethodArg::Nuts);
    }

    #[test]
    fn tables_have_one_row_per_method() {
        let rows = vec![
            Row {
                method: "map".into(),
                nll: 0.1,
                score: 0.9,
                ece: 0.05,
                seconds: 1.0,
                status: "ok".into(),
            },
            Row {
                method: "vi".into(),
                nll: f64::NAN,
                score: f64::NAN,
                ece: f64::NAN,
                seconds: 0.5,
                status: "failed (exit 3): diverged, badly".into(),
            },
        ];
        let (csv, md) = tables(&rows, "test", true);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "method,test_nll,test_accuracy,ece,seconds,status");
        assert_eq!(lines[1], "map,0.1000,0.9000,0.0500,1.000,ok");
        assert!(lines[2].starts_with("vi,,,,0.500,\"failed"));
        assert_eq!(md.lines().count(), 4);
    }
}
