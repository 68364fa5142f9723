//! Sample collection: burn-in, thinning, per-chain traces in memory or
//! streamed to disk.
//!
//! A [`Thinning`] decides which steps become draws: after step `s` (1-based
//! count of completed updates) a draw is kept when `s > burn_in` and
//! `(s - burn_in - 1) % thin == 0`, so the first kept draw is the state right
//! after burn-in. [`Trace`] holds one chain's draws in memory (row-major);
//! [`CsvDrawWriter`] appends draws to a CSV file (`chain,draw,<names>`) as
//! they come, flushing on request, so a killed run keeps what was flushed.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::diagnostics::{summarize, Summary};
use langevin_core::{Error, Result};

/// Which steps are kept as draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thinning {
    /// Number of initial updates discarded.
    pub burn_in: u64,
    /// Keep every `thin`-th state after burn-in (>= 1).
    pub thin: u64,
}

impl Default for Thinning {
    fn default() -> Self {
        Self {
            burn_in: 0,
            thin: 1,
        }
    }
}

impl Thinning {
    /// Validated constructor.
    pub fn new(burn_in: u64, thin: u64) -> Result<Self> {
        if thin == 0 {
            return Err(Error::config("thin", "must be >= 1"));
        }
        Ok(Self { burn_in, thin })
    }

    /// Whether the state after `completed` updates is kept.
    #[inline]
    pub fn keeps(&self, completed: u64) -> bool {
        completed > self.burn_in && (completed - self.burn_in - 1).is_multiple_of(self.thin)
    }

    /// Number of draws kept in a run of `steps` updates.
    pub fn n_draws(&self, steps: u64) -> u64 {
        if steps <= self.burn_in {
            0
        } else {
            (steps - self.burn_in - 1) / self.thin + 1
        }
    }

    /// Check a run length against this thinning (burn-in must leave draws).
    pub fn check_steps(&self, steps: u64) -> Result<()> {
        if self.burn_in >= steps {
            return Err(Error::config(
                "burn_in",
                format!(
                    "burn-in ({}) must be smaller than the number of steps ({steps})",
                    self.burn_in
                ),
            ));
        }
        Ok(())
    }
}

/// One chain's draws, in memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    dim: usize,
    /// Row-major: draw `i` is `draws[i * dim .. (i + 1) * dim]`.
    draws: Vec<f64>,
    /// Log density recorded with each draw.
    log_density: Vec<f64>,
}

impl Trace {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            draws: Vec::new(),
            log_density: Vec::new(),
        }
    }

    /// Append a draw.
    pub fn push(&mut self, values: &[f64], log_density: f64) -> Result<()> {
        if values.len() != self.dim {
            return Err(Error::DimensionMismatch {
                what: "draw",
                expected: self.dim,
                got: values.len(),
            });
        }
        self.draws.extend_from_slice(values);
        self.log_density.push(log_density);
        Ok(())
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn n_draws(&self) -> usize {
        self.log_density.len()
    }

    /// Draw `i`.
    pub fn draw(&self, i: usize) -> &[f64] {
        &self.draws[i * self.dim..(i + 1) * self.dim]
    }

    /// All draws of scalar `j`.
    pub fn column(&self, j: usize) -> Vec<f64> {
        self.draws
            .iter()
            .skip(j)
            .step_by(self.dim.max(1))
            .copied()
            .collect()
    }

    pub fn log_density(&self) -> &[f64] {
        &self.log_density
    }

    /// Row-major draws.
    pub fn as_slice(&self) -> &[f64] {
        &self.draws
    }
}

/// Draws of several chains with scalar names (ravel order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    pub names: Vec<String>,
    pub chains: Vec<Trace>,
}

/// Posterior summary of one scalar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSummary {
    pub name: String,
    #[serde(flatten)]
    pub summary: Summary,
}

impl Samples {
    /// Empty samples for `chains` chains over scalars called `names`.
    pub fn new(names: Vec<String>, chains: usize) -> Self {
        let dim = names.len();
        Self {
            names,
            chains: (0..chains).map(|_| Trace::new(dim)).collect(),
        }
    }

    pub fn dim(&self) -> usize {
        self.names.len()
    }

    /// Per-chain draws of scalar `j`.
    pub fn column_by_chain(&self, j: usize) -> Vec<Vec<f64>> {
        self.chains.iter().map(|c| c.column(j)).collect()
    }

    /// All draws of all chains, one `Vec` per draw.
    pub fn pooled(&self) -> Vec<Vec<f64>> {
        self.chains
            .iter()
            .flat_map(|c| (0..c.n_draws()).map(move |i| c.draw(i).to_vec()))
            .collect()
    }

    /// Pooled posterior mean.
    pub fn mean(&self) -> Vec<f64> {
        let mut m = vec![0.0; self.dim()];
        let mut n = 0usize;
        for c in &self.chains {
            for i in 0..c.n_draws() {
                for (mj, x) in m.iter_mut().zip(c.draw(i)) {
                    *mj += x;
                }
                n += 1;
            }
        }
        m.iter_mut().for_each(|v| *v /= n.max(1) as f64);
        m
    }

    /// Mean, sd, bulk/tail ESS, R-hat, MCSE of every scalar (chains must
    /// have equal, non-trivial lengths).
    pub fn summary(&self) -> Result<Vec<ParamSummary>> {
        (0..self.dim())
            .map(|j| {
                let cols = self.column_by_chain(j);
                let refs: Vec<&[f64]> = cols.iter().map(|c| c.as_slice()).collect();
                Ok(ParamSummary {
                    name: self.names[j].clone(),
                    summary: summarize(&refs)?,
                })
            })
            .collect()
    }
}

/// Appends draws to a CSV file with header `chain,draw,<names>`.
///
/// Values are written with Rust's shortest round-trip formatting, so reading
/// them back gives the same `f64` bits.
pub struct CsvDrawWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl CsvDrawWriter {
    /// Create (truncate) `path` and write the header.
    pub fn create(path: impl AsRef<Path>, names: &[String]) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path).map_err(|e| io_err(&path, e))?;
        let mut w = Self {
            path,
            out: BufWriter::new(file),
        };
        let header = format!("chain,draw,{}\n", names.join(","));
        w.out
            .write_all(header.as_bytes())
            .map_err(|e| io_err(&w.path, e))?;
        Ok(w)
    }

    /// Open an existing file for appending (resuming a run). The caller is
    /// responsible for having truncated it to the last checkpoint.
    pub fn append(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        Ok(Self {
            path,
            out: BufWriter::new(file),
        })
    }

    /// Write one draw.
    pub fn write(&mut self, chain: usize, draw: usize, values: &[f64]) -> Result<()> {
        let mut line = format!("{chain},{draw}");
        for v in values {
            line.push(',');
            line.push_str(&format!("{v:?}"));
        }
        line.push('\n');
        self.out
            .write_all(line.as_bytes())
            .map_err(|e| io_err(&self.path, e))
    }

    /// Flush to the OS and fsync to disk.
    pub fn sync(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| io_err(&self.path, e))?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(|e| io_err(&self.path, e))
    }
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        line: None,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_the_right_steps() {
        let t = Thinning::new(3, 2).unwrap();
        let kept: Vec<u64> = (1..=10).filter(|&s| t.keeps(s)).collect();
        assert_eq!(kept, vec![4, 6, 8, 10]);
        assert_eq!(t.n_draws(10), 4);
        assert_eq!(t.n_draws(3), 0);
        assert!(Thinning::new(0, 0).is_err());
        assert!(t.check_steps(3).is_err());
        assert!(t.check_steps(4).is_ok());
    }

    #[test]
    fn trace_columns_and_csv_roundtrip() {
        let mut s = Samples::new(vec!["a".into(), "b".into()], 2);
        for c in 0..2 {
            for i in 0..5 {
                let x = [i as f64 + 0.1 * c as f64, 1.0 / 3.0 * i as f64];
                s.chains[c].push(&x, -1.0).unwrap();
            }
        }
        assert_eq!(s.chains[1].column(0), vec![0.1, 1.1, 2.1, 3.1, 4.1]);
        assert!(s.chains[0].push(&[1.0], 0.0).is_err());
        let dir = std::env::temp_dir().join(format!("langevin-samples-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("samples.csv");
        let mut w = CsvDrawWriter::create(&p, &s.names).unwrap();
        for c in 0..2 {
            for i in 0..5 {
                w.write(c, i, s.chains[c].draw(i)).unwrap();
            }
        }
        w.sync().unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("chain,draw,a,b"));
        let row: Vec<f64> = lines
            .nth(3)
            .unwrap()
            .split(',')
            .skip(2)
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(row[1].to_bits(), (1.0f64 / 3.0 * 3.0).to_bits());
        std::fs::remove_dir_all(dir).ok();
    }
}
