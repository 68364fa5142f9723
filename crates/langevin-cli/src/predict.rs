//! `langevin predict --run DIR --data FILE.csv --out preds.csv`: the posterior
//! predictive of a fitted run for new rows.
//!
//! Output columns, one row per data row:
//! * classification: `row, predicted, prob_<label>..., total_uncertainty,
//!   aleatoric_uncertainty, epistemic_uncertainty` (nats: entropy of the mean
//!   prediction = mean entropy of each draw's prediction + mutual information);
//! * regression: `row, mean, sd, aleatoric_sd, epistemic_sd` in data units
//!   (sd² = aleatoric_sd² + epistemic_sd²: mean noise variance plus the
//!   variance of the draws' means).
//!
//! `row` is the line of the row in the input file. When the file has the
//! target column, the metrics are printed to stderr.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use langevin_models::bundled;
use langevin_models::data::{load_csv_columns, Columns, Dataset};
use langevin_models::Model;
use std::fs::File;

use crate::evaluate::{
    argmax, classification_metrics, entropy, mixture_moments, predictive, regression_metrics,
    Predictive,
};
use crate::exit::bad_input;
use crate::glm::{glm_predictive, StoredGaussian, GAUSSIAN_FILE};
use crate::rundir::{read_meta, read_samples};

/// Arguments of `langevin predict`.
#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    /// A directory written by `langevin fit`.
    #[arg(long)]
    pub run: PathBuf,
    /// CSV file with (at least) the model's feature columns, or a bundled data set name.
    #[arg(long)]
    pub data: String,
    /// Output CSV (default: DIR/predictions.csv; `-` for stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Most posterior draws to average over (spread evenly over the chains); with
    /// the GLM predictive, the Monte Carlo draws of each row's outputs.
    #[arg(long, default_value_t = 1000)]
    pub max_draws: usize,
    /// `samples`: average the predictions of the run's draws; `glm`: the linearised
    /// predictive of the Gaussian a vi/ivon/laplace/ekf run fitted (DIR/gaussian.safetensors);
    /// `auto`: glm for a Laplace run (pushing Laplace draws through a network
    /// underfits), samples otherwise.
    #[arg(long, value_enum, default_value_t = PredictiveArg::Auto)]
    pub predictive: PredictiveArg,
}

/// The predictive of `langevin predict`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictiveArg {
    Auto,
    Samples,
    Glm,
}

fn fmt_label(v: f64) -> String {
    format!("{v}")
}

fn load(data: &str, features: &[String], target: &str) -> Result<Dataset> {
    let cols = Columns {
        features: Some(features),
        target: Some(target),
        require_target: false,
    };
    let path = Path::new(data);
    if path.is_file() {
        return load_csv_columns(path, cols).map_err(bad_input);
    }
    if let Some(b) = bundled::find(data) {
        return langevin_models::data::load_csv_str_columns(
            &format!("bundled:{}", b.name),
            b.text,
            cols,
        )
        .map_err(bad_input);
    }
    crate::bail_input!("--data {data}: no such file, and no bundled data set of that name")
}

/// Run `langevin predict`.
pub fn run(args: PredictArgs) -> Result<()> {
    if args.max_draws == 0 {
        crate::bail_input!("--max-draws must be at least 1");
    }
    let meta = read_meta(&args.run)?;
    let model = Model::new(meta.model.clone()).map_err(bad_input)?;
    let ds = load(&args.data, &meta.model.feature_names, &meta.target)?;
    let mut x = ds.x.clone();
    if let Some(s) = &meta.standardizer {
        s.apply(&mut x);
    }
    let out_path = args
        .out
        .clone()
        .unwrap_or_else(|| args.run.join("predictions.csv"));
    // Check the output before computing: a folder or an unwritable place is bad input.
    // The rows go to a temporary file beside it, renamed over it at the end: an error
    // leaves neither a partial file nor a truncated earlier one.
    let out_file = if out_path.as_os_str() == "-" {
        None
    } else {
        if out_path.is_dir() {
            crate::bail_input!(
                "--out {}: is a directory (give a file name)",
                out_path.display()
            );
        }
        Some(PendingFile::create(&out_path)?)
    };
    // Unknown class labels are bad input: say so before computing.
    if ds.has_target() && !meta.class_labels.is_empty() {
        ds.class_indices(&meta.class_labels).map_err(bad_input)?;
    }
    let method = meta.config["method"].as_str().unwrap_or("").to_string();
    let use_glm = match args.predictive {
        PredictiveArg::Glm => true,
        PredictiveArg::Samples => false,
        PredictiveArg::Auto => method.starts_with("laplace"),
    };
    let gaussian =
        if use_glm {
            match StoredGaussian::read(&args.run, model.n_params())? {
                Some(g) => Some(g),
                None => crate::bail_input!(
                "--predictive glm: {} has no {GAUSSIAN_FILE}; the linearised predictive needs a \
                 run of a Gaussian method (vi, vi-dense, ivon, laplace-*, ekf, ekf-dense), \
                 this one is {}",
                args.run.display(),
                if method.is_empty() { "unknown" } else { &method }
            ),
            }
        } else {
            None
        };
    let seed = meta.config["seed"].as_u64().unwrap_or(0);
    // The draws only for the sampled predictive (the GLM one needs q, not samples.csv).
    let (pred, n_draws) = match &gaussian {
        Some(g) => (glm_predictive(&model, g, &x, args.max_draws, seed)?, 0),
        None => {
            let samples = read_samples(&args.run)?;
            if samples.names != model.param_names() {
                crate::bail_input!(
                    "{}: the columns of samples.csv do not match the model in run.json",
                    args.run.display()
                );
            }
            let draws = samples.spread(args.max_draws);
            (predictive(&model, &draws, &x)?, draws.len())
        }
    };
    check_finite(&pred, &ds, &args.data)?;
    let mut text = String::new();
    match &pred {
        Predictive::Classification {
            probs,
            k,
            aleatoric,
        } => {
            text += "row,predicted";
            for l in &meta.class_labels {
                text += &format!(",prob_{}", fmt_label(*l));
            }
            text += ",total_uncertainty,aleatoric_uncertainty,epistemic_uncertainty\n";
            for (i, row) in probs.chunks_exact(*k).enumerate() {
                let (c, _) = argmax(row);
                let total = entropy(row);
                text += &format!("{},{}", ds.lines[i], fmt_label(meta.class_labels[c]));
                for p in row {
                    text += &format!(",{p}");
                }
                text += &format!(
                    ",{total},{},{}\n",
                    aleatoric[i],
                    (total - aleatoric[i]).max(0.0)
                );
            }
            if ds.has_target() {
                let y = ds.class_indices(&meta.class_labels).map_err(bad_input)?;
                let y: Vec<usize> = y.iter().map(|&v| v as usize).collect();
                let m = classification_metrics(probs, *k, &y, 10)?;
                eprintln!(
                    "metrics on {} rows: nll {:.4} accuracy {:.4} ece {:.4} brier {:.4}",
                    y.len(),
                    m.nll,
                    m.accuracy,
                    m.calibration.ece,
                    m.brier
                );
            }
        }
        Predictive::Regression { means, sds } => {
            let (shift, scale) = meta.target_scaler.unwrap_or((0.0, 1.0));
            let (mean, var) = mixture_moments(means, sds, scale, shift);
            let s = sds.len().max(1) as f64;
            let alea_var = sds.iter().map(|v| v * v).sum::<f64>() / s * scale * scale;
            text += "row,mean,sd,aleatoric_sd,epistemic_sd\n";
            for i in 0..mean.len() {
                let epi = (var[i] - alea_var).max(0.0);
                text += &format!(
                    "{},{},{},{},{}\n",
                    ds.lines[i],
                    mean[i],
                    var[i].sqrt(),
                    alea_var.sqrt(),
                    epi.sqrt()
                );
            }
            if ds.has_target() {
                let (rmse, nll) = regression_metrics(means, sds, &ds.y, scale, shift);
                eprintln!(
                    "metrics on {} rows: nll {nll:.4} rmse {rmse:.4}",
                    ds.y.len()
                );
            }
        }
    }
    if let Some(f) = out_file {
        f.commit(text.as_bytes())?;
        let how = match &gaussian {
            Some(_) => format!(
                "linearised (GLM) predictive, {} draws of the outputs per row",
                args.max_draws
            ),
            None => format!("{n_draws} posterior draws"),
        };
        eprintln!("wrote {} ({} rows, {how})", out_path.display(), ds.n());
    } else {
        std::io::stdout().write_all(text.as_bytes())?;
    }
    Ok(())
}

/// A prediction that is not a finite number (features so large that the model's
/// linear predictor overflows, e.g. ±1e308) is refused, naming the row.
fn check_finite(pred: &Predictive, ds: &Dataset, data: &str) -> Result<()> {
    let bad_row = match pred {
        Predictive::Classification { probs, k, .. } => probs
            .chunks_exact(*k)
            .position(|r| r.iter().any(|p| !p.is_finite())),
        Predictive::Regression { means, sds } => {
            // Per draw `s`, row `i`: means[s][i] (see `predictive`).
            let n = ds.n();
            (0..n).find(|&i| {
                means.iter().any(|m| !m[i].is_finite()) || sds.iter().any(|v| !v.is_finite())
            })
        }
    };
    if let Some(i) = bad_row {
        crate::bail_input!(
            "{data}:{}: the prediction for this row is not a finite number: its features are \
             too large for the model (after standardisation the linear predictor overflows); \
             rescale them",
            ds.lines[i]
        );
    }
    Ok(())
}

/// An output file written through a temporary sibling (`.NAME.tmp-PID`) and renamed
/// over `path` by [`PendingFile::commit`]; dropped uncommitted, it removes the
/// temporary file.
struct PendingFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
}

impl PendingFile {
    fn create(path: &Path) -> Result<Self> {
        let name = path
            .file_name()
            .ok_or_else(|| bad_input(format!("--out {}: not a file name", path.display())))?;
        let tmp = path.with_file_name(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = File::create(&tmp)
            .map_err(|e| bad_input(format!("--out {}: cannot write: {e}", path.display())))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
        })
    }

    fn commit(mut self, bytes: &[u8]) -> Result<()> {
        let mut f = self.file.take().expect("file is present until commit");
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", self.path.display()))?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.file = None;
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
