//! The run directory written by `langevin fit` and read by `predict` and
//! `diagnose`: its layout, `run.json`, creation and locking.
//!
//! ```text
//! DIR/
//!   run.json        model spec, standardisation, class labels, config (written first)
//!   samples.csv     chain,draw,<param names>; rows appended as draws are collected
//!   summary.json    per-parameter summaries, metrics, config, seconds (written last, atomically)
//!   trace.png marginals.png reliability.png
//! ```
//!
//! A directory without `summary.json` is an unfinished or failed run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use langevin::samples::Samples;
use langevin_models::{ModelSpec, Standardizer};
use serde::{Deserialize, Serialize};

use crate::exit::bad_input;

/// Everything `predict` needs besides the draws (`run.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunMeta {
    /// Format version of the run directory.
    pub version: u32,
    pub model: ModelSpec,
    /// Feature standardisation fitted on the training rows (`None` = off).
    pub standardizer: Option<Standardizer>,
    /// Regression target standardisation `(mean, sd)` (`None` = off or classification).
    pub target_scaler: Option<(f64, f64)>,
    /// Class labels as they appear in the data; class index k is `class_labels[k]`.
    pub class_labels: Vec<f64>,
    /// Target column name.
    pub target: String,
    /// One name per scalar parameter (the columns of samples.csv after chain,draw).
    pub param_names: Vec<String>,
    /// The command-line configuration.
    pub config: serde_json::Value,
}

pub const RUN_VERSION: u32 = 1;

/// Read `samples.csv` of a run directory (the library's reader: errors
/// name the file and line; a cut or edited file is refused).
pub fn read_samples(dir: &Path) -> Result<Samples> {
    Samples::read_csv(dir.join(langevin::run::SAMPLES_FILE)).map_err(bad_input)
}

/// The default output directory: `runs/<UTC timestamp>` (made unique).
pub fn default_out_dir() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let base = format!(
        "runs/{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let mut p = PathBuf::from(&base);
    let mut i = 2;
    while p.exists() {
        p = PathBuf::from(format!("{base}-{i}"));
        i += 1;
    }
    p
}

/// Prepare DIR: create it, and remove the files a previous run left there
/// (so a stale summary.json never claims success for this run).
pub fn prepare_out_dir(dir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))
        .map_err(|e| bad_input(format!("{e:#}")))?;
    let lock = lock_run_dir(dir)?;
    for f in [
        "summary.json",
        "summary.json.tmp",
        "checkpoint.json",
        "checkpoint.json.tmp",
        "samples.csv",
        "run.json",
        "trace.png",
        "marginals.png",
        "reliability.png",
        crate::glm::GAUSSIAN_FILE,
        crate::glm::KRON_FILE,
    ] {
        let p = dir.join(f);
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing stale {}", p.display()))?;
        }
    }
    Ok(lock)
}

/// Take an exclusive lock on `DIR/.lock` for the life of the returned file,
/// so that two processes never write one run directory (a second `fit` or
/// `--resume` on a directory in use is refused). The operating system drops
/// the lock when the process dies, `kill -9` included.
pub fn lock_run_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))
        .map_err(|e| bad_input(format!("{e:#}")))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(bad_input(format!(
            "{} is in use by another langevin process (locked: {})",
            dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(anyhow::Error::new(e).context(format!("locking {}", path.display())))
        }
    }
}

/// Read `run.json` of a run directory.
pub fn read_meta(dir: &Path) -> Result<RunMeta> {
    let path = dir.join("run.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        bad_input(format!(
            "{}: cannot read ({e}); is `{}` a directory written by `langevin fit`?",
            path.display(),
            dir.display()
        ))
    })?;
    // A UTF-8 BOM (an editor's) is invisible in the parser's message: skip it, as the
    // CSV readers do.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let meta: RunMeta = serde_json::from_str(text)
        .map_err(|e| bad_input(format!("{}: invalid run file: {e}", path.display())))?;
    if meta.version != RUN_VERSION {
        return Err(bad_input(format!(
            "{}: run format version {} is not supported (expected {RUN_VERSION})",
            path.display(),
            meta.version
        )));
    }
    Ok(meta)
}

/// A JSON number, or null when not finite.
pub fn num(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}
