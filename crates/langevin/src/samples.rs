//! Sample collection: burn-in, thinning, per-chain traces in memory, and
//! the one CSV format for draws (`chain,draw,<names>`).
//!
//! A [`Thinning`] decides which steps become draws: after step `s` (1-based
//! count of completed updates) a draw is kept when `s > burn_in` and
//! `(s - burn_in) % thin == 0`, so the last step of every block of `thin`
//! steps after burn-in is kept (and a run whose length after burn-in is a
//! multiple of `thin` ends on a draw). [`Trace`] holds one chain's draws in
//! memory (row-major) with per-draw statistics; [`CsvDrawWriter`] appends
//! draws to a CSV file as they come, counting and hashing the bytes it wrote
//! so that a checkpoint can record (and a resume verify) how much of the file
//! belongs to the run; [`Samples::read_csv`] reads such a file back, bit for
//! bit.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::diagnostics::{summarize, Summary, MIN_DRAWS};
use langevin_core::{Error, Result};

/// Which steps are kept as draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thinning {
    /// Number of initial updates discarded.
    pub burn_in: u64,
    /// Keep the last state of every block of `thin` updates after burn-in (>= 1).
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

    /// Keep only the state after the last of `steps` updates (an optimiser's
    /// result, a deep-ensemble member).
    pub fn last_of(steps: u64) -> Self {
        Self {
            burn_in: steps.saturating_sub(1),
            thin: 1,
        }
    }

    /// Whether the state after `completed` updates is kept.
    #[inline]
    pub fn keeps(&self, completed: u64) -> bool {
        completed > self.burn_in && (completed - self.burn_in).is_multiple_of(self.thin)
    }

    /// Number of draws kept in the first `steps` updates.
    pub fn n_draws(&self, steps: u64) -> u64 {
        steps.saturating_sub(self.burn_in) / self.thin.max(1)
    }

    /// Check a run length against this thinning: it must keep at least one draw.
    pub fn check_steps(&self, steps: u64) -> Result<()> {
        if self.thin == 0 {
            return Err(Error::config("thin", "must be >= 1"));
        }
        if self.burn_in >= steps {
            return Err(Error::config(
                "burn_in",
                format!(
                    "burn-in ({}) must be smaller than the number of steps ({steps})",
                    self.burn_in
                ),
            ));
        }
        if self.n_draws(steps) == 0 {
            return Err(Error::config(
                "thin",
                format!(
                    "thinning ({}) is larger than the {} steps after burn-in: no draw would be kept",
                    self.thin,
                    steps - self.burn_in
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
    /// Log density recorded with each draw (`NaN` where unknown, e.g. draws
    /// read back from a CSV file).
    #[serde(deserialize_with = "langevin_core::serde_nan::vec_f64_or_nan")]
    log_density: Vec<f64>,
    /// Whether the update that produced each draw diverged (was skipped).
    #[serde(default)]
    diverged: Vec<bool>,
}

impl Trace {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            draws: Vec::new(),
            log_density: Vec::new(),
            diverged: Vec::new(),
        }
    }

    /// Append a draw.
    pub fn push(&mut self, values: &[f64], log_density: f64) -> Result<()> {
        self.push_with(values, log_density, false)
    }

    /// Append a draw with its statistics.
    pub fn push_with(&mut self, values: &[f64], log_density: f64, diverged: bool) -> Result<()> {
        if values.len() != self.dim {
            return Err(Error::DimensionMismatch {
                what: "draw",
                expected: self.dim,
                got: values.len(),
            });
        }
        self.draws.extend_from_slice(values);
        self.log_density.push(log_density);
        self.diverged.push(diverged);
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

    /// Whether the update that produced each draw diverged.
    pub fn diverged(&self) -> &[bool] {
        &self.diverged
    }

    /// Keep the first `n` draws.
    pub fn truncate(&mut self, n: usize) {
        self.draws.truncate(n * self.dim);
        self.log_density.truncate(n);
        self.diverged.truncate(n);
    }

    /// Keep draws 1, 3, 5, ... (0-based): what a thinning twice as coarse
    /// keeps (draw `i` is the last step of block `i + 1`).
    pub fn keep_every_second(&mut self) {
        let n = self.n_draws();
        let d = self.dim;
        let mut draws = Vec::with_capacity(n / 2 * d);
        for i in (1..n).step_by(2) {
            draws.extend_from_slice(&self.draws[i * d..(i + 1) * d]);
        }
        self.draws = draws;
        self.log_density = self
            .log_density
            .iter()
            .skip(1)
            .step_by(2)
            .copied()
            .collect();
        self.diverged = self.diverged.iter().skip(1).step_by(2).copied().collect();
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

    /// The same draws of the scalars `columns` only (in that order).
    pub fn select(&self, columns: &[usize]) -> Result<Samples> {
        if let Some(&j) = columns.iter().find(|&&j| j >= self.dim()) {
            return Err(Error::DimensionMismatch {
                what: "selected column",
                expected: self.dim(),
                got: j,
            });
        }
        let names = columns.iter().map(|&j| self.names[j].clone()).collect();
        let mut out = Samples::new(names, self.chains.len());
        let mut row = vec![0.0; columns.len()];
        for (c, trace) in self.chains.iter().zip(out.chains.iter_mut()) {
            for i in 0..c.n_draws() {
                let d = c.draw(i);
                for (r, &j) in row.iter_mut().zip(columns) {
                    *r = d[j];
                }
                trace.push_with(&row, c.log_density()[i], c.diverged()[i])?;
            }
        }
        Ok(out)
    }

    /// Number of draws of the shortest chain.
    pub fn min_draws(&self) -> usize {
        self.chains.iter().map(|c| c.n_draws()).min().unwrap_or(0)
    }

    /// Total number of draws.
    pub fn n_draws(&self) -> usize {
        self.chains.iter().map(|c| c.n_draws()).sum()
    }

    /// Up to `max` draws spread evenly over all chains in order (all of them
    /// when there are at most `max`, or `max` is 0).
    pub fn spread(&self, max: usize) -> Vec<&[f64]> {
        let all: Vec<&[f64]> = self
            .chains
            .iter()
            .flat_map(|c| (0..c.n_draws()).map(move |i| c.draw(i)))
            .collect();
        if all.len() <= max || max == 0 {
            return all;
        }
        (0..max).map(|i| all[i * all.len() / max]).collect()
    }

    /// Mean, sd, bulk/tail ESS, R-hat, MCSE and quantiles of every scalar,
    /// over the first [`Samples::min_draws`] draws of every chain (the
    /// diagnostics need equal lengths). With fewer than
    /// [`MIN_DRAWS`] draws per chain, or
    /// non-finite draws, the diagnostics are `NaN` and the mean and sd are
    /// those of the pooled draws. The one summary of the project: the CLI's
    /// `summary.json` and `diagnose` use it.
    pub fn summary(&self) -> Result<Vec<ParamSummary>> {
        if self.chains.is_empty() {
            return Err(Error::Data("no chains".into()));
        }
        let n = self.min_draws();
        Ok((0..self.dim())
            .map(|j| {
                let cols: Vec<Vec<f64>> = self
                    .chains
                    .iter()
                    .map(|c| c.column(j)[..n].to_vec())
                    .collect();
                let refs: Vec<&[f64]> = cols.iter().map(|c| c.as_slice()).collect();
                let summary = match summarize(&refs) {
                    Ok(s) if n >= MIN_DRAWS => s,
                    _ => pooled_only(&cols.concat()),
                };
                ParamSummary {
                    name: self.names[j].clone(),
                    summary,
                }
            })
            .collect())
    }

    /// Read a draws file written by [`CsvDrawWriter`] (or by hand): header
    /// `chain,draw,<names>`, rows in any order. Every chain's draw indices
    /// must be `0..n` once each; values must be finite numbers; the last row
    /// must end with a newline (a file cut mid-row is refused). Errors name
    /// the file and line. Log densities are not in the file (`NaN`).
    pub fn read_csv(path: impl AsRef<Path>) -> Result<Self> {
        Self::read_csv_prefix(path, None)
    }

    /// [`Samples::read_csv`] of the first `len` bytes of the file (`None`: all).
    pub fn read_csv_prefix(path: impl AsRef<Path>, len: Option<u64>) -> Result<Self> {
        Self::read_csv_from_chain(path, len, 0)
    }

    /// [`Samples::read_csv_prefix`] of a part of a run whose chains are
    /// numbered from `first_chain` (`first_chain, first_chain + 1, ...`):
    /// chain `first_chain + i` of the file is `chains[i]` of the result.
    pub fn read_csv_from_chain(
        path: impl AsRef<Path>,
        len: Option<u64>,
        first_chain: usize,
    ) -> Result<Self> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| io_err(path, e))?;
        let mut bytes = Vec::new();
        match len {
            Some(n) => file.take(n).read_to_end(&mut bytes),
            None => (&file).read_to_end(&mut bytes),
        }
        .map_err(|e| io_err(path, e))?;
        let at = |line: usize, msg: String| Error::Io {
            path: name.clone(),
            line: Some(line),
            message: msg,
        };
        if bytes.is_empty() {
            return Err(at(
                1,
                "empty file: expected a header `chain,draw,<params>`".into(),
            ));
        }
        if bytes.last() != Some(&b'\n') {
            let line = bytes.iter().filter(|&&b| b == b'\n').count() + 1;
            return Err(at(
                line,
                "the last row is incomplete (no newline at the end: the file was cut)".into(),
            ));
        }
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(bytes.as_slice());
        let header = rdr.headers().map_err(|e| at(1, e.to_string()))?.clone();
        if header.len() < 3 || &header[0] != "chain" || &header[1] != "draw" {
            return Err(at(1, "expected a header `chain,draw,<params>`".into()));
        }
        let names: Vec<String> = header.iter().skip(2).map(|s| s.to_string()).collect();
        let mut rows: Vec<(usize, usize, usize, Vec<f64>)> = Vec::new();
        for rec in rdr.records() {
            let rec = rec.map_err(|e| {
                let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
                at(line, e.to_string())
            })?;
            let line = rec.position().map(|p| p.line() as usize).unwrap_or(0);
            let cell = |j: usize| langevin_core::error::shown_cell(&rec[j]);
            let int = |j: usize| -> Result<usize> {
                rec[j].parse().map_err(|_| {
                    at(
                        line,
                        format!("column `{}`: `{}` is not an index", &header[j], cell(j)),
                    )
                })
            };
            let chain = int(0)?;
            let draw = int(1)?;
            if chain > 100_000 {
                return Err(at(line, format!("chain index {chain} is too large")));
            }
            let Some(chain) = chain.checked_sub(first_chain) else {
                return Err(at(
                    line,
                    format!("chain {chain} is not in this part of the run (its chains start at {first_chain})"),
                ));
            };
            let mut vals = Vec::with_capacity(names.len());
            for j in 2..rec.len() {
                let v = rec[j].parse::<f64>().map_err(|_| {
                    at(
                        line,
                        format!("column `{}`: `{}` is not a number", &header[j], cell(j)),
                    )
                })?;
                if !v.is_finite() {
                    return Err(at(
                        line,
                        format!(
                            "column `{}`: `{}` is not a finite number",
                            &header[j],
                            cell(j)
                        ),
                    ));
                }
                vals.push(v);
            }
            rows.push((chain, draw, line, vals));
        }
        if rows.is_empty() {
            return Err(at(2, "no draws".into()));
        }
        rows.sort_by_key(|r| (r.0, r.1));
        let n_chains = rows.iter().map(|r| r.0).max().unwrap_or(0) + 1;
        let mut samples = Samples::new(names, n_chains);
        for (chain, draw, line, vals) in rows {
            let tr = &mut samples.chains[chain];
            if draw != tr.n_draws() {
                let chain = chain + first_chain;
                return Err(at(
                    line,
                    format!(
                        "chain {chain}: draw {draw} where draw {} was expected (a draw is \
                         missing or repeated)",
                        tr.n_draws()
                    ),
                ));
            }
            tr.push(&vals, f64::NAN)?;
        }
        if let Some(c) = samples.chains.iter().position(|t| t.n_draws() == 0) {
            return Err(Error::Io {
                path: name,
                line: None,
                message: format!(
                    "chain {} has no draws (chains must be numbered {first_chain}, {}, ...)",
                    c + first_chain,
                    first_chain + 1
                ),
            });
        }
        Ok(samples)
    }
}

/// The summary of pooled draws without diagnostics (too few draws).
fn pooled_only(all: &[f64]) -> Summary {
    let n = all.len() as f64;
    let mean = if all.is_empty() {
        f64::NAN
    } else {
        all.iter().sum::<f64>() / n
    };
    let sd = if all.len() > 1 {
        (all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        f64::NAN
    };
    Summary {
        mean,
        sd,
        ess_bulk: f64::NAN,
        ess_tail: f64::NAN,
        rhat: f64::NAN,
        mcse_mean: f64::NAN,
        mcse_sd: f64::NAN,
        q05: f64::NAN,
        q50: f64::NAN,
        q95: f64::NAN,
    }
}

/// Appends draws to a CSV file with header `chain,draw,<names>`.
///
/// Values are written with Rust's shortest round-trip formatting (`Display`),
/// so reading them back gives the same `f64` bits. The writer counts and
/// hashes (FNV-1a) every byte it writes, header included, so a checkpoint
/// can record how much of the file belongs to the run and a resume can check
/// that this part was not changed.
pub struct CsvDrawWriter {
    path: PathBuf,
    out: BufWriter<File>,
    len: u64,
    hash: u64,
}

/// FNV-1a offset basis.
const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl CsvDrawWriter {
    /// Create (truncate) `path` and write the header (names with a comma,
    /// quote or line break are quoted).
    pub fn create(path: impl AsRef<Path>, names: &[String]) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path).map_err(|e| io_err(&path, e))?;
        let mut w = Self {
            path,
            out: BufWriter::new(file),
            len: 0,
            hash: FNV_START,
        };
        let mut header = String::from("chain,draw");
        for n in names {
            header.push(',');
            header.push_str(&csv_field(n));
        }
        header.push('\n');
        w.put(header.as_bytes())?;
        Ok(w)
    }

    /// Reopen `path` to continue a run: check that its first `len` bytes
    /// hash to `hash` (what [`CsvDrawWriter::len`] and
    /// [`CsvDrawWriter::hash`] said when the checkpoint was taken), cut the
    /// rest (rows written after the checkpoint by a killed process), and
    /// append after it.
    pub fn resume(path: impl AsRef<Path>, len: u64, hash: u64) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let name = path.display().to_string();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        let have = file.metadata().map_err(|e| io_err(&path, e))?.len();
        if have < len {
            return Err(Error::checkpoint(
                &name,
                "length",
                format!(
                    "{have} bytes, shorter than the {len} bytes the checkpoint recorded \
                     (the file was changed after the checkpoint)"
                ),
            ));
        }
        let mut got = FNV_START;
        let mut buf = vec![0u8; 1 << 16];
        let mut left = len;
        while left > 0 {
            let k = (left as usize).min(buf.len());
            file.read_exact(&mut buf[..k])
                .map_err(|e| io_err(&path, e))?;
            got = fnv(got, &buf[..k]);
            left -= k as u64;
        }
        if got != hash {
            return Err(Error::checkpoint(
                &name,
                "content",
                "the draws written before the checkpoint were changed (checksum mismatch)",
            ));
        }
        file.set_len(len).map_err(|e| io_err(&path, e))?;
        file.sync_all().map_err(|e| io_err(&path, e))?;
        drop(file);
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        Ok(Self {
            path,
            out: BufWriter::new(file),
            len,
            hash,
        })
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| io_err(&self.path, e))?;
        self.len += bytes.len() as u64;
        self.hash = fnv(self.hash, bytes);
        Ok(())
    }

    /// Write one draw.
    pub fn write(&mut self, chain: usize, draw: usize, values: &[f64]) -> Result<()> {
        use std::fmt::Write as _;
        let mut line = String::with_capacity(16 * values.len() + 16);
        write!(line, "{chain},{draw}").ok();
        for v in values {
            write!(line, ",{v}").ok();
        }
        line.push('\n');
        self.put(line.as_bytes())
    }

    /// Bytes written to the file so far (header included), buffered or not.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written (not even the header).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// FNV-1a hash of the bytes written so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
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

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::io(path.display(), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_keeps_the_chosen_columns_of_every_draw() {
        let mut s = Samples::new(vec!["a".into(), "b".into(), "c".into()], 2);
        for (c, t) in s.chains.iter_mut().enumerate() {
            for i in 0..3 {
                let v = (10 * c + i) as f64;
                t.push_with(&[v, v + 0.5, v + 0.25], -v, i == 1).unwrap();
            }
        }
        let sel = s.select(&[2, 0]).unwrap();
        assert_eq!(sel.names, vec!["c".to_string(), "a".to_string()]);
        assert_eq!(sel.chains[1].draw(2), &[12.25, 12.0]);
        assert_eq!(sel.chains[0].log_density(), s.chains[0].log_density());
        assert_eq!(sel.chains[0].diverged(), &[false, true, false]);
        assert!(s.select(&[3]).is_err());
    }

    #[test]
    fn thinning_keeps_the_right_steps() {
        let t = Thinning::new(3, 2).unwrap();
        let kept: Vec<u64> = (1..=10).filter(|&s| t.keeps(s)).collect();
        assert_eq!(kept, vec![5, 7, 9]);
        for steps in 0..12 {
            let n = (1..=steps).filter(|&s| t.keeps(s)).count() as u64;
            assert_eq!(t.n_draws(steps), n, "steps {steps}");
        }
        assert!(Thinning::new(0, 0).is_err());
        assert!(t.check_steps(3).is_err());
        assert!(
            t.check_steps(4).is_err(),
            "one step after burn-in keeps no draw at thin 2"
        );
        assert!(t.check_steps(5).is_ok());
        let last = Thinning::last_of(7);
        assert_eq!(
            (1..=7).filter(|&s| last.keeps(s)).collect::<Vec<_>>(),
            vec![7]
        );
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
        let back = Samples::read_csv(&p).unwrap();
        assert_eq!(back.names, s.names);
        for c in 0..2 {
            assert_eq!(back.chains[c].as_slice(), s.chains[c].as_slice());
        }
        // Resume after 3 rows: the rest is cut and the writer appends.
        let text = std::fs::read_to_string(&p).unwrap();
        let cut = text.lines().take(4).map(|l| l.len() + 1).sum::<usize>() as u64;
        let mut probe = CsvDrawWriter::create(dir.join("probe.csv"), &s.names).unwrap();
        for i in 0..3 {
            probe.write(0, i, s.chains[0].draw(i)).unwrap();
        }
        assert_eq!(probe.len(), cut);
        assert!(CsvDrawWriter::resume(&p, cut, probe.hash() ^ 1).is_err());
        let mut r = CsvDrawWriter::resume(&p, cut, probe.hash()).unwrap();
        r.write(0, 3, s.chains[0].draw(3)).unwrap();
        r.sync().unwrap();
        let resumed = Samples::read_csv(&p).unwrap();
        assert_eq!(resumed.chains.len(), 1);
        assert_eq!(resumed.chains[0].n_draws(), 4);
        // A file cut mid-row, a missing draw and a NaN are refused with the line.
        std::fs::write(&p, "chain,draw,a,b\n0,0,1,2\n0,1,1.5,2").unwrap();
        let e = Samples::read_csv(&p).unwrap_err().to_string();
        assert!(e.contains(":3") && e.contains("cut"), "{e}");
        std::fs::write(&p, "chain,draw,a,b\n0,0,1,2\n0,2,1.5,2\n").unwrap();
        let e = Samples::read_csv(&p).unwrap_err().to_string();
        assert!(e.contains(":3") && e.contains("missing"), "{e}");
        std::fs::write(&p, "chain,draw,a,b\n0,0,1,NaN\n").unwrap();
        let e = Samples::read_csv(&p).unwrap_err().to_string();
        assert!(e.contains(":2") && e.contains("finite"), "{e}");
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
