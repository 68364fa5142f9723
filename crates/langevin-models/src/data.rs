//! Tabular data: CSV loading, class labels, standardisation, train/test splits.
//!
//! A CSV file has a header row naming its columns; one column is the target,
//! the others (or a given list) are the features. Every cell read must be a
//! finite number. Errors name the file, the 1-based line (the header is line 1)
//! and the column.

use std::io::Read;
use std::path::Path;

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// A numeric table: features `x` (row-major, `n × d`) and an optional target `y`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Where the data came from (a path, or `bundled:<name>`), for messages.
    pub source: String,
    /// Feature column names, in the order of `x`'s columns.
    pub feature_names: Vec<String>,
    /// Target column name (empty when the table has no target).
    pub target_name: String,
    /// Features, row-major.
    pub x: Vec<f64>,
    /// Target values (empty when the table has no target).
    pub y: Vec<f64>,
    /// The file line of each row (1-based; the header is line 1).
    pub lines: Vec<usize>,
}

/// Which columns to read.
#[derive(Debug, Clone, Default)]
pub struct Columns<'a> {
    /// Feature columns, in this order; `None` means every column but the target.
    pub features: Option<&'a [String]>,
    /// Target column.
    pub target: Option<&'a str>,
    /// Whether a missing target column is an error (else `y` is left empty).
    pub require_target: bool,
}

impl Dataset {
    /// Number of rows.
    pub fn n(&self) -> usize {
        self.lines.len()
    }

    /// Number of features.
    pub fn d(&self) -> usize {
        self.feature_names.len()
    }

    /// True when the table has a target column.
    pub fn has_target(&self) -> bool {
        !self.target_name.is_empty() && self.y.len() == self.n()
    }

    /// Features of row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        let d = self.d();
        &self.x[i * d..(i + 1) * d]
    }

    /// The rows `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let mut x = Vec::with_capacity(idx.len() * self.d());
        for &i in idx {
            x.extend_from_slice(self.row(i));
        }
        Dataset {
            source: self.source.clone(),
            feature_names: self.feature_names.clone(),
            target_name: self.target_name.clone(),
            x,
            y: if self.has_target() {
                idx.iter().map(|&i| self.y[i]).collect()
            } else {
                Vec::new()
            },
            lines: idx.iter().map(|&i| self.lines[i]).collect(),
        }
    }

    /// The distinct class labels of the target, sorted. Labels must be
    /// integers; at least two classes must be present.
    pub fn class_labels(&self) -> Result<Vec<f64>> {
        if !self.has_target() {
            return Err(self.data_err("no target column to read class labels from"));
        }
        let mut labels: Vec<f64> = Vec::new();
        for (i, &v) in self.y.iter().enumerate() {
            if v.fract() != 0.0 {
                return Err(ModelError::Cell {
                    path: self.source.clone(),
                    line: self.lines[i],
                    column: self.target_name.clone(),
                    message: format!(
                        "{v} is not a class label (a classification target needs integer labels; use a regression model for a continuous target)"
                    ),
                });
            }
            if !labels.contains(&v) {
                labels.push(v);
                if labels.len() > 1000 {
                    return Err(self.data_err(format!(
                        "target `{}` has more than 1000 distinct values: not a classification target",
                        self.target_name
                    )));
                }
            }
        }
        labels.sort_by(f64::total_cmp);
        if labels.len() < 2 {
            return Err(self.data_err(format!(
                "classification target `{}` has a single class ({}): at least two are needed",
                self.target_name,
                labels.first().map(|v| v.to_string()).unwrap_or_default()
            )));
        }
        Ok(labels)
    }

    /// The target as class indices into `labels` (see [`Dataset::class_labels`]).
    pub fn class_indices(&self, labels: &[f64]) -> Result<Vec<f64>> {
        self.y
            .iter()
            .enumerate()
            .map(|(i, v)| match labels.iter().position(|l| l == v) {
                Some(k) => Ok(k as f64),
                None => Err(ModelError::Cell {
                    path: self.source.clone(),
                    line: self.lines[i],
                    column: self.target_name.clone(),
                    message: format!(
                        "class label {v} was not seen in training (known labels: {})",
                        labels
                            .iter()
                            .map(|l| l.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
            })
            .collect()
    }

    fn data_err(&self, message: impl Into<String>) -> ModelError {
        ModelError::Data {
            path: self.source.clone(),
            message: message.into(),
        }
    }
}

/// Load a CSV file with a header row; every column but `target` is a feature.
pub fn load_csv(path: impl AsRef<Path>, target: &str) -> Result<Dataset> {
    load_csv_columns(
        path,
        Columns {
            features: None,
            target: Some(target),
            require_target: true,
        },
    )
}

/// Load chosen columns of a CSV file with a header row.
pub fn load_csv_columns(path: impl AsRef<Path>, cols: Columns<'_>) -> Result<Dataset> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| ModelError::Io {
        path: name.clone(),
        message: format!("cannot open: {e}"),
    })?;
    parse(&name, file, cols)
}

/// Parse CSV text (a bundled data set, or a test) named `name` in messages.
pub fn load_csv_str(name: &str, text: &str, target: &str) -> Result<Dataset> {
    parse(
        name,
        text.as_bytes(),
        Columns {
            features: None,
            target: Some(target),
            require_target: true,
        },
    )
}

/// Parse CSV text with a column selection.
pub fn load_csv_str_columns(name: &str, text: &str, cols: Columns<'_>) -> Result<Dataset> {
    parse(name, text.as_bytes(), cols)
}

fn parse<R: Read>(name: &str, reader: R, cols: Columns<'_>) -> Result<Dataset> {
    parse_lines(name, reader, cols, 2, false)
}

/// [`parse`] where the first line after the header is line `first_line` of
/// the file (a shard of it), and a text with no data row is allowed when
/// `allow_empty` (a shard may hold none).
fn parse_lines<R: Read>(
    name: &str,
    reader: R,
    cols: Columns<'_>,
    first_line: usize,
    allow_empty: bool,
) -> Result<Dataset> {
    let data_err = |message: String| ModelError::Data {
        path: name.to_string(),
        message,
    };
    // The whole text is read first: line numbers are computed from byte
    // offsets (the csv crate does not count `\r\n` line ends as lines).
    let mut bytes = Vec::new();
    let mut reader = reader;
    reader.read_to_end(&mut bytes).map_err(|e| ModelError::Io {
        path: name.to_string(),
        message: format!("read error: {e}"),
    })?;
    let mut lines = LineIndex::new(&bytes);
    lines.shift = first_line.saturating_sub(2);
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes.as_slice());
    let mut records = rdr.records();
    let header = match records.next() {
        None => return Err(data_err("empty file: expected a header row".into())),
        Some(Err(e)) => return Err(csv_err(name, &lines, e)),
        Some(Ok(h)) => h,
    };
    let header: Vec<String> = header.iter().map(|s| s.to_string()).collect();
    if header.iter().all(|h| h.is_empty()) {
        return Err(data_err("empty header row".into()));
    }
    for (j, h) in header.iter().enumerate() {
        if h.is_empty() {
            return Err(data_err(format!("header column {} has no name", j + 1)));
        }
        if header[..j].contains(h) {
            return Err(data_err(format!(
                "header names column `{}` twice",
                langevin_core::error::shown_cell(h)
            )));
        }
    }
    // The header as listed in messages: long names cut, at most 50 names.
    let columns_shown = |header: &[String]| {
        let mut s: Vec<String> = header
            .iter()
            .take(50)
            .map(|h| langevin_core::error::shown_cell(h).into_owned())
            .collect();
        if header.len() > 50 {
            s.push(format!("... ({} columns)", header.len()));
        }
        s.join(", ")
    };
    let target_idx = match cols.target {
        Some(t) => {
            let idx = header.iter().position(|h| h == t);
            if idx.is_none() && cols.require_target {
                return Err(data_err(format!(
                    "no column named `{t}` (the target); columns are: {}",
                    columns_shown(&header)
                )));
            }
            idx
        }
        None => None,
    };
    let feature_idx: Vec<usize> = match cols.features {
        Some(names) => names
            .iter()
            .map(|f| {
                header.iter().position(|h| h == f).ok_or_else(|| {
                    data_err(format!(
                        "no column named `{f}` (a feature of the model); columns are: {}",
                        columns_shown(&header)
                    ))
                })
            })
            .collect::<Result<_>>()?,
        None => (0..header.len())
            .filter(|&j| Some(j) != target_idx)
            .collect(),
    };
    if feature_idx.is_empty() {
        return Err(data_err("no feature columns besides the target".into()));
    }
    let d = feature_idx.len();
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut row_lines = Vec::new();
    for rec in records {
        let rec = rec.map_err(|e| csv_err(name, &lines, e))?;
        let line = rec.position().map(|p| lines.line(p.byte())).unwrap_or(0);
        if rec.len() == 1 && rec.get(0) == Some("") {
            continue; // a blank line
        }
        if rec.len() != header.len() {
            return Err(ModelError::Row {
                path: name.to_string(),
                line,
                message: format!(
                    "row has {} fields but the header has {}",
                    rec.len(),
                    header.len()
                ),
            });
        }
        let cell = |j: usize| -> Result<f64> {
            let s = &rec[j];
            let bad = |message: String| ModelError::Cell {
                path: name.to_string(),
                line,
                column: header[j].clone(),
                message,
            };
            if s.is_empty() {
                return Err(bad("empty cell (missing values are not supported)".into()));
            }
            let v: f64 = s.parse().map_err(|_| {
                bad(format!(
                    "`{}` is not a number",
                    langevin_core::error::shown_cell(s)
                ))
            })?;
            if !v.is_finite() {
                return Err(bad(format!(
                    "`{}` is not a finite number",
                    langevin_core::error::shown_cell(s)
                )));
            }
            Ok(v)
        };
        for &j in &feature_idx {
            x.push(cell(j)?);
        }
        if let Some(t) = target_idx {
            y.push(cell(t)?);
        }
        row_lines.push(line);
    }
    if row_lines.is_empty() && !allow_empty {
        return Err(data_err("no data rows after the header".into()));
    }
    debug_assert_eq!(x.len(), row_lines.len() * d);
    Ok(Dataset {
        source: name.to_string(),
        feature_names: feature_idx.iter().map(|&j| header[j].clone()).collect(),
        target_name: target_idx.map(|t| header[t].clone()).unwrap_or_default(),
        x,
        y,
        lines: row_lines,
    })
}

/// Line numbers from byte offsets; a line ends at `\n`, `\r\n` or a lone `\r`.
struct LineIndex<'a> {
    bytes: &'a [u8],
    /// The byte offsets where lines start.
    starts: Vec<usize>,
    /// Added to the numbers of the lines after the first (the header), for
    /// the text of a shard of a file.
    shift: usize,
}

impl<'a> LineIndex<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let mut starts = vec![0];
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n')) {
                starts.push(i + 1);
            }
        }
        Self {
            bytes,
            starts,
            shift: 0,
        }
    }

    /// The 1-based line of the record the csv crate says starts at `byte`.
    /// (After a `\r\n` it points at the `\n`: line ends before a record's
    /// first character are skipped, as no record starts with one.)
    fn line(&self, byte: u64) -> usize {
        let mut b = usize::try_from(byte)
            .unwrap_or(usize::MAX)
            .min(self.bytes.len());
        while b < self.bytes.len() && matches!(self.bytes[b], b'\r' | b'\n') {
            b += 1;
        }
        let line = self.starts.partition_point(|&s| s <= b).max(1);
        if line > 1 {
            line + self.shift
        } else {
            line
        }
    }
}

fn csv_err(name: &str, lines: &LineIndex<'_>, e: csv::Error) -> ModelError {
    let line = e.position().map(|p| lines.line(p.byte()));
    let message = match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "invalid UTF-8 text".to_string(),
        csv::ErrorKind::Io(io) => format!("read error: {io}"),
        _ => e.to_string(),
    };
    match line {
        Some(line) => ModelError::Row {
            path: name.to_string(),
            line,
            message,
        },
        None => ModelError::Io {
            path: name.to_string(),
            message,
        },
    }
}

/// The rows of a CSV file that one of `parts` processes reads (see
/// [`read_csv_shard`]): the header line and the text of its rows.
#[derive(Debug, Clone)]
pub struct CsvShard {
    name: String,
    /// The header line, then the shard's rows.
    text: Vec<u8>,
    /// Where the rows start in `text`.
    body: usize,
}

/// Read the header and shard `part` of `parts` of the CSV file at `path`,
/// and nothing else of the file: the bytes after the header are cut into
/// `parts` equal ranges, and a row belongs to the range its first byte is
/// in (rows are split at `\n`, so quoted cells must not span lines). A
/// shard may hold no row. Parse it with [`CsvShard::parse`] once the line
/// numbers of the shards before it are known ([`CsvShard::line_ends`]).
pub fn read_csv_shard(path: impl AsRef<Path>, part: usize, parts: usize) -> Result<CsvShard> {
    use std::io::{BufRead, BufReader, Seek, SeekFrom};
    let path = path.as_ref();
    let name = path.display().to_string();
    let io = |e: std::io::Error| ModelError::Io {
        path: name.clone(),
        message: format!("read error: {e}"),
    };
    if parts == 0 || part >= parts {
        return Err(ModelError::config(
            "shard",
            format!("shard {part} of {parts} does not exist"),
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| ModelError::Io {
        path: name.clone(),
        message: format!("cannot open: {e}"),
    })?;
    let size = file.metadata().map_err(io)?.len();
    let mut r = BufReader::new(file);
    let mut text = Vec::new();
    r.read_until(b'\n', &mut text).map_err(io)?;
    let header_end = text.len() as u64;
    let body = text.len();
    let span = size.saturating_sub(header_end);
    let at = |k: usize| header_end + (u128::from(span) * k as u128 / parts as u128) as u64;
    let (start, end) = (at(part), at(part + 1));
    if start < end {
        // The row that starts at or after `start` (the previous byte ends a
        // line), up to the end of the line holding byte `end - 1`.
        r.seek(SeekFrom::Start(start - 1)).map_err(io)?;
        let mut skipped = Vec::new();
        r.read_until(b'\n', &mut skipped).map_err(io)?;
        let first = start - 1 + skipped.len() as u64;
        if first < end {
            let mut take = (&mut r).take(end - first);
            take.read_to_end(&mut text).map_err(io)?;
            if text.last() != Some(&b'\n') {
                r.read_until(b'\n', &mut text).map_err(io)?;
            }
        }
    }
    Ok(CsvShard { name, text, body })
}

impl CsvShard {
    /// The number of line ends in the shard's rows (`\n`, `\r\n` or a lone
    /// `\r`, as line numbers count them): the line of the next shard's first
    /// row is 2 plus the sum of this over the shards before it.
    pub fn line_ends(&self) -> usize {
        let b = &self.text[self.body..];
        b.iter()
            .enumerate()
            .filter(|&(i, &c)| c == b'\n' || (c == b'\r' && b.get(i + 1) != Some(&b'\n')))
            .count()
    }

    /// Parse the shard's rows, the first being line `first_line` of the
    /// file (so messages name the file's own lines). The shard may hold no row.
    pub fn parse(&self, cols: Columns<'_>, first_line: usize) -> Result<Dataset> {
        parse_lines(&self.name, self.text.as_slice(), cols, first_line, true)
    }
}

/// Per-column affine standardisation `(v - mean) / sd`, fitted on training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    pub mean: Vec<f64>,
    /// Population standard deviation; a constant column gets 1.
    pub sd: Vec<f64>,
}

impl Standardizer {
    /// Fit to the columns of a row-major `n × d` matrix.
    pub fn fit(x: &[f64], d: usize) -> Self {
        let n = x.len().checked_div(d).unwrap_or(0);
        let never = |_: &mut [f64]| -> std::result::Result<(), std::convert::Infallible> { Ok(()) };
        match Self::fit_summed(x, d, n, never) {
            Ok(s) => s,
            Err(e) => match e {},
        }
    }

    /// Fit to the columns of `n` rows of which `x` (row-major, `d` columns)
    /// holds some: `sum` adds its buffer (column sums, then sums of squared
    /// deviations) over the processes holding the others, in a fixed order.
    /// With `x` every row and a `sum` that does nothing, [`Standardizer::fit`].
    pub fn fit_summed<E>(
        x: &[f64],
        d: usize,
        n: usize,
        mut sum: impl FnMut(&mut [f64]) -> std::result::Result<(), E>,
    ) -> std::result::Result<Self, E> {
        let mut mean = vec![0.0; d];
        let mut sd = vec![0.0; d];
        if n == 0 || d == 0 {
            return Ok(Self {
                mean,
                sd: vec![1.0; d],
            });
        }
        for row in x.chunks_exact(d) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        sum(&mut mean)?;
        for m in &mut mean {
            *m /= n as f64;
        }
        for row in x.chunks_exact(d) {
            for ((s, m), v) in sd.iter_mut().zip(&mean).zip(row) {
                *s += (v - m) * (v - m);
            }
        }
        sum(&mut sd)?;
        for (s, m) in sd.iter_mut().zip(&mean) {
            *s = (*s / n as f64).sqrt();
            if !s.is_finite() || *s <= 1e-12 * (1.0 + m.abs()) {
                *s = 1.0;
            }
        }
        Ok(Self { mean, sd })
    }

    /// The identity transform on `d` columns.
    pub fn identity(d: usize) -> Self {
        Self {
            mean: vec![0.0; d],
            sd: vec![1.0; d],
        }
    }

    /// Standardise a row-major matrix in place.
    pub fn apply(&self, x: &mut [f64]) {
        let d = self.mean.len();
        if d == 0 {
            return;
        }
        for row in x.chunks_exact_mut(d) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.sd) {
                *v = (*v - m) / s;
            }
        }
    }

    /// Undo [`Standardizer::apply`] on one column's value.
    pub fn invert(&self, col: usize, v: f64) -> f64 {
        v * self.sd[col] + self.mean[col]
    }
}

/// A seeded train/test split of row indices (both sorted ascending).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

impl Split {
    /// Hold out `round(n * test_fraction)` rows (at least one when the fraction
    /// is positive), chosen by a shuffle seeded with `seed`. A fraction of 0
    /// puts every row in training.
    pub fn new(n: usize, test_fraction: f64, seed: u64) -> Result<Self> {
        if !(test_fraction.is_finite() && (0.0..1.0).contains(&test_fraction)) {
            return Err(ModelError::config(
                "test_fraction",
                format!("must be in [0, 1), got {test_fraction}"),
            ));
        }
        if test_fraction == 0.0 {
            return Ok(Self {
                train: (0..n).collect(),
                test: Vec::new(),
            });
        }
        let n_test = ((n as f64 * test_fraction).round() as usize).max(1);
        if n_test >= n {
            return Err(ModelError::config(
                "test_fraction",
                format!(
                    "{test_fraction} of {n} rows leaves no training rows; use a smaller fraction or more data"
                ),
            ));
        }
        // A stream of its own, distinct from every chain's stream.
        let mut rng = langevin_core::chain_rng(seed, u64::MAX);
        let mut idx: Vec<usize> = (0..n).collect();
        idx.shuffle(&mut rng);
        let mut test = idx[..n_test].to_vec();
        let mut train = idx[n_test..].to_vec();
        test.sort_unstable();
        train.sort_unstable();
        Ok(Self { train, test })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str, target: &str) -> String {
        load_csv_str("t.csv", text, target).unwrap_err().to_string()
    }

    #[test]
    fn loads_features_and_target() {
        let d = load_csv_str("t.csv", "a,y,b\n1,0,2\n3,1,4\n", "y").unwrap();
        assert_eq!(d.feature_names, vec!["a", "b"]);
        assert_eq!(d.x, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(d.y, vec![0.0, 1.0]);
        assert_eq!(d.lines, vec![2, 3]);
        assert_eq!(d.class_labels().unwrap(), vec![0.0, 1.0]);
    }

    #[test]
    fn bad_data_names_file_line_and_column() {
        assert!(err("", "y").contains("empty file"));
        assert!(err("a,y\n", "y").contains("no data rows"));
        let e = err("a,b\n1,2\n", "y");
        assert!(
            e.contains("no column named `y`") && e.contains("a, b"),
            "{e}"
        );
        let e = err("a,y\n1,0\n2,x\n", "y");
        assert_eq!(e, "t.csv:3: column `y`: `x` is not a number");
        let e = err("a,y\n1,0\n2\n", "y");
        assert_eq!(e, "t.csv:3: row has 1 fields but the header has 2");
        let e = err("a,y\nNaN,0\n", "y");
        assert_eq!(e, "t.csv:2: column `a`: `NaN` is not a finite number");
        let e = err("a,y\ninf,0\n", "y");
        assert!(e.contains("not a finite number"), "{e}");
        let e = err("a,y\n,0\n", "y");
        assert!(e.contains("t.csv:2: column `a`: empty cell"), "{e}");
        let one = load_csv_str("t.csv", "a,y\n1,1\n2,1\n", "y").unwrap();
        let e = one.class_labels().unwrap_err().to_string();
        assert!(e.contains("single class"), "{e}");
        let frac = load_csv_str("t.csv", "a,y\n1,1\n2,1.5\n", "y").unwrap();
        let e = frac.class_labels().unwrap_err().to_string();
        assert!(e.starts_with("t.csv:3: column `y`"), "{e}");
        assert!(err("a,a,y\n1,2,3\n", "y").contains("twice"));
        assert!(err("y\n1\n", "y").contains("no feature columns"));
        let e = load_csv("/nonexistent/x.csv", "y").unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/x.csv: cannot open"));
        assert!(e.is_bad_input());
    }

    #[test]
    fn selected_columns_and_optional_target() {
        let feats = vec!["b".to_string(), "a".to_string()];
        let d = load_csv_str_columns(
            "t.csv",
            "id,a,b\nx,1,2\n",
            Columns {
                features: Some(&feats),
                target: Some("y"),
                require_target: false,
            },
        )
        .unwrap();
        assert_eq!(d.x, vec![2.0, 1.0]);
        assert!(!d.has_target());
    }

    #[test]
    fn standardizer_and_split() {
        let x = vec![1.0, 5.0, 3.0, 5.0];
        let s = Standardizer::fit(&x, 2);
        assert_eq!(s.mean, vec![2.0, 5.0]);
        assert_eq!(s.sd, vec![1.0, 1.0]); // constant column gets sd 1
        let mut y = x.clone();
        s.apply(&mut y);
        assert_eq!(y, vec![-1.0, 0.0, 1.0, 0.0]);
        let a = Split::new(10, 0.2, 1).unwrap();
        assert_eq!(a.test.len(), 2);
        assert_eq!(a.train.len(), 8);
        assert_eq!(a, Split::new(10, 0.2, 1).unwrap());
        assert_ne!(a, Split::new(10, 0.2, 2).unwrap());
        let mut all: Vec<usize> = a.train.iter().chain(&a.test).copied().collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(Split::new(5, 0.0, 1).unwrap().test.len(), 0);
        assert!(Split::new(1, 0.5, 1).is_err());
        assert!(Split::new(5, 1.0, 1).is_err());
        assert!(Split::new(5, -0.1, 1).is_err());
    }

    /// The shards of a file, parsed with their first lines from the line
    /// ends of the shards before, are the whole file's rows with the same
    /// line numbers, for any number of shards, `\n` and `\r\n` line ends,
    /// blank lines and a last line without an end; a bad cell is reported
    /// at the file's own line.
    #[test]
    fn shards_are_the_file() {
        let dir = std::env::temp_dir().join(format!("langevin-shards-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cols = || Columns {
            features: None,
            target: Some("y"),
            require_target: true,
        };
        for (k, end) in ["\n", "\r\n"].into_iter().enumerate() {
            let mut text = format!("a,b,y{end}");
            for i in 0..37 {
                text.push_str(&format!("{i},{}.5,{}{end}", i * 2, i % 3));
                if i % 10 == 4 {
                    text.push_str(end); // a blank line
                }
            }
            text.push_str("99,98,1"); // no line end
            let path = dir.join(format!("t{k}.csv"));
            std::fs::write(&path, &text).unwrap();
            let whole = load_csv_columns(&path, cols()).unwrap();
            for parts in 1..=6 {
                let shards: Vec<CsvShard> = (0..parts)
                    .map(|p| read_csv_shard(&path, p, parts).unwrap())
                    .collect();
                let mut first = 2;
                let (mut x, mut y, mut lines) = (Vec::new(), Vec::new(), Vec::new());
                for sh in &shards {
                    let ds = sh.parse(cols(), first).unwrap();
                    first += sh.line_ends();
                    x.extend(ds.x);
                    y.extend(ds.y);
                    lines.extend(ds.lines);
                }
                assert_eq!(
                    (&x, &y, &lines),
                    (&whole.x, &whole.y, &whole.lines),
                    "{parts}"
                );
            }
        }
        let bad = "a,y\n1,0\n2,1\n3,1\nx,0\n5,1\n";
        let path = dir.join("bad.csv");
        std::fs::write(&path, bad).unwrap();
        let shards: Vec<CsvShard> = (0..2)
            .map(|p| read_csv_shard(&path, p, 2).unwrap())
            .collect();
        let first = 2 + shards[0].line_ends();
        let e = shards[1].parse(cols(), first).unwrap_err().to_string();
        assert!(e.contains("bad.csv:5"), "{e}");
        assert!(read_csv_shard(&path, 2, 2).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
