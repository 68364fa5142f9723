//! The run directory written by `langevin fit` and read by `predict` and `diagnose`.
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

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
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

/// Write JSON to `path` atomically (temporary file, fsync, rename).
pub fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = BufWriter::new(
            File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
        );
        serde_json::to_writer_pretty(&mut f, value)?;
        f.write_all(b"\n")?;
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    sync_parent(path);
    Ok(())
}

/// Make a rename in `path`'s directory durable (best effort: some file
/// systems do not support syncing a directory).
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(parent) {
        let _ = d.sync_all();
    }
}

/// Appends draws to `samples.csv` from several chains (thread-safe).
pub struct SamplesWriter {
    out: Mutex<BufWriter<File>>,
    path: PathBuf,
}

impl SamplesWriter {
    /// Create `path` and write the header `chain,draw,<names>`.
    pub fn create(path: &Path, names: &[String]) -> Result<Self> {
        let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = BufWriter::new(f);
        write!(w, "chain,draw")?;
        for n in names {
            write!(w, ",{}", csv_field(n))?;
        }
        writeln!(w)?;
        Ok(Self {
            out: Mutex::new(w),
            path: path.to_path_buf(),
        })
    }

    /// Open an existing `samples.csv` to append rows (resuming a run).
    pub fn open_append(path: &Path) -> Result<Self> {
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("opening {} to append", path.display()))?;
        Ok(Self {
            out: Mutex::new(BufWriter::new(f)),
            path: path.to_path_buf(),
        })
    }

    /// Length of the file in bytes, counting rows still buffered.
    pub fn len(&self) -> Result<u64> {
        let w = self
            .out
            .lock()
            .map_err(|_| anyhow::anyhow!("samples writer poisoned"))?;
        Ok(w.get_ref().metadata()?.len() + w.buffer().len() as u64)
    }

    /// Append one draw. Numbers are written in Rust's shortest round-trip form,
    /// so reading them back gives the same bits.
    pub fn append(&self, chain: usize, draw: usize, values: &[f64]) -> Result<()> {
        let mut line = String::with_capacity(16 * values.len() + 16);
        use std::fmt::Write as _;
        write!(line, "{chain},{draw}").ok();
        for v in values {
            write!(line, ",{v}").ok();
        }
        line.push('\n');
        let mut w = self
            .out
            .lock()
            .map_err(|_| anyhow::anyhow!("samples writer poisoned"))?;
        w.write_all(line.as_bytes())
            .with_context(|| format!("writing {}", self.path.display()))?;
        Ok(())
    }

    /// Flush buffered rows to the file.
    pub fn flush(&self) -> Result<()> {
        let mut w = self
            .out
            .lock()
            .map_err(|_| anyhow::anyhow!("samples writer poisoned"))?;
        w.flush()?;
        w.get_ref().sync_data()?;
        Ok(())
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Draws read back from `samples.csv`: `chains[c][i]` is draw `i` of chain `c`
/// (sorted by draw index), a vector in ravel order.
#[derive(Debug, Clone)]
pub struct Samples {
    pub names: Vec<String>,
    pub chains: Vec<Vec<Vec<f64>>>,
}

impl Samples {
    /// Number of draws in the shortest chain.
    pub fn min_draws(&self) -> usize {
        self.chains.iter().map(|c| c.len()).min().unwrap_or(0)
    }

    /// Up to `max` draws spread evenly over all chains.
    pub fn pooled(&self, max: usize) -> Vec<&[f64]> {
        let all: Vec<&[f64]> = self
            .chains
            .iter()
            .flat_map(|c| c.iter().map(|d| d.as_slice()))
            .collect();
        if all.len() <= max || max == 0 {
            return all;
        }
        (0..max).map(|i| all[i * all.len() / max]).collect()
    }
}

/// Read `samples.csv`; errors name the file and line.
pub fn read_samples(path: &Path) -> Result<Samples> {
    let name = path.display().to_string();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| bad_input(format!("{name}: cannot read: {e}")))?;
    let header = rdr
        .headers()
        .map_err(|e| bad_input(format!("{name}: {e}")))?
        .clone();
    if header.len() < 3 || &header[0] != "chain" || &header[1] != "draw" {
        return Err(bad_input(format!(
            "{name}:1: expected a header `chain,draw,<params>`"
        )));
    }
    let names: Vec<String> = header.iter().skip(2).map(|s| s.to_string()).collect();
    let mut rows: Vec<(usize, usize, Vec<f64>)> = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| bad_input(format!("{name}: {e}")))?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let int = |j: usize| -> Result<usize> {
            rec[j].parse().map_err(|_| {
                bad_input(format!(
                    "{name}:{line}: column `{}`: `{}` is not an index",
                    &header[j], &rec[j]
                ))
            })
        };
        let chain = int(0)?;
        let draw = int(1)?;
        let mut vals = Vec::with_capacity(names.len());
        for j in 2..rec.len() {
            vals.push(rec[j].parse::<f64>().map_err(|_| {
                bad_input(format!(
                    "{name}:{line}: column `{}`: `{}` is not a number",
                    &header[j], &rec[j]
                ))
            })?);
        }
        if chain > 10_000 {
            return Err(bad_input(format!(
                "{name}:{line}: chain index {chain} is too large"
            )));
        }
        rows.push((chain, draw, vals));
    }
    if rows.is_empty() {
        return Err(bad_input(format!("{name}: no draws")));
    }
    rows.sort_by_key(|r| (r.0, r.1));
    let n_chains = rows.iter().map(|r| r.0).max().unwrap_or(0) + 1;
    let mut chains = vec![Vec::new(); n_chains];
    for (c, _, v) in rows {
        chains[c].push(v);
    }
    chains.retain(|c| !c.is_empty());
    Ok(Samples { names, chains })
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
    let meta: RunMeta = serde_json::from_str(&text)
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
