//! The classification data set of the TNGD experiments.

use langevin_core::rng::chain_rng;
use langevin_models::data::{load_csv_columns, Columns};
use rand::Rng;

use crate::error::{Result, ThermoError as Error};

/// A classification data set: `x` is `n × d` row-major, labels in `0..k`.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub x: Vec<f64>,
    pub y: Vec<usize>,
    pub n: usize,
    pub d: usize,
    pub k: usize,
}

impl Dataset {
    /// Build a data set, checking sizes and labels.
    pub fn new(x: Vec<f64>, y: Vec<usize>, d: usize, k: usize) -> Result<Self> {
        let n = y.len();
        if d == 0 || k < 2 {
            return Err(Error::Data(format!(
                "need d >= 1 and k >= 2 classes, got d = {d}, k = {k}"
            )));
        }
        if x.len() != n * d {
            return Err(Error::DimensionMismatch {
                what: "dataset features",
                expected: n * d,
                got: x.len(),
            });
        }
        if let Some(bad) = y.iter().find(|&&c| c >= k) {
            return Err(Error::Data(format!("label {bad} out of range 0..{k}")));
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(Error::Data("non-finite feature value".into()));
        }
        Ok(Self { x, y, n, d, k })
    }

    /// Read a CSV with a header whose last column is the class label, a whole
    /// number `>= 0` (the layout of `data/digits.csv`), with the models crate's
    /// loader ([`langevin_models::data::load_csv_columns`]): errors name the file,
    /// the line and the column. Features are multiplied by `scale`.
    pub fn from_csv(path: &std::path::Path, scale: f64) -> Result<Self> {
        let table = load_csv_columns(
            path,
            Columns {
                features: None,
                target: None,
                require_target: false,
            },
        )
        .map_err(|e| Error::Data(e.to_string()))?;
        Self::from_last_column(&table, scale)
    }

    /// A data set bundled with the library ([`langevin_models::bundled`],
    /// compiled into the binary, so it loads from any working directory), its
    /// default target column as the class label. `"digits"` is the 8x8
    /// handwritten digits (1797 rows, 64 pixels 0-16, 10 classes). Features are
    /// multiplied by `scale`. A regression set (`task == "regression"`) is an error.
    pub fn bundled(name: &str, scale: f64) -> Result<Self> {
        let b = langevin_models::bundled::find(name).ok_or_else(|| {
            let names: Vec<&str> = langevin_models::bundled::BUNDLED
                .iter()
                .map(|b| b.name)
                .collect();
            Error::Data(format!(
                "no bundled data set `{name}` (bundled: {})",
                names.join(", ")
            ))
        })?;
        if b.task == "regression" {
            return Err(Error::Data(format!(
                "bundled data set `{name}` is a regression set (target `{}`), not a classification set",
                b.target
            )));
        }
        let table = b.load(None).map_err(|e| Error::Data(e.to_string()))?;
        let d = table.feature_names.len();
        let mut x = Vec::with_capacity(table.y.len() * d);
        let mut y = Vec::with_capacity(table.y.len());
        for (i, (row, &lab)) in table.x.chunks_exact(d).zip(&table.y).enumerate() {
            x.extend(row.iter().map(|v| v * scale));
            y.push(label(
                lab,
                &table.source,
                table.lines[i],
                &table.target_name,
            )?);
        }
        let k = y.iter().copied().max().map_or(0, |m| m + 1);
        Self::new(x, y, d, k.max(2))
    }

    /// The last column of `table` as the label, the others as features.
    fn from_last_column(table: &langevin_models::data::Dataset, scale: f64) -> Result<Self> {
        let ncol = table.feature_names.len();
        if ncol < 2 {
            return Err(Error::Data(format!(
                "{}: need at least one feature and a label column",
                table.source
            )));
        }
        let d = ncol - 1;
        let mut x = Vec::with_capacity(table.lines.len() * d);
        let mut y = Vec::with_capacity(table.lines.len());
        for (row, &line) in table.x.chunks_exact(ncol).zip(&table.lines) {
            x.extend(row[..d].iter().map(|v| v * scale));
            y.push(label(row[d], &table.source, line, &table.feature_names[d])?);
        }
        let k = y.iter().copied().max().map_or(0, |m| m + 1);
        Self::new(x, y, d, k.max(2))
    }

    /// Deterministic shuffled split into (train, test) with `test_fraction` of the rows in test.
    pub fn split(&self, test_fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        if !(0.0..1.0).contains(&test_fraction) {
            return Err(Error::InvalidConfig {
                field: "test_fraction",
                reason: format!("must be in [0, 1), got {test_fraction}"),
            });
        }
        let mut idx: Vec<usize> = (0..self.n).collect();
        let mut rng = chain_rng(seed, 0);
        for i in (1..idx.len()).rev() {
            let j = rng.random_range(0..=i);
            idx.swap(i, j);
        }
        let n_test = (self.n as f64 * test_fraction).round() as usize;
        let take = |rows: &[usize]| {
            let mut x = Vec::with_capacity(rows.len() * self.d);
            let mut y = Vec::with_capacity(rows.len());
            for &r in rows {
                x.extend_from_slice(&self.x[r * self.d..(r + 1) * self.d]);
                y.push(self.y[r]);
            }
            Dataset {
                x,
                y,
                n: rows.len(),
                d: self.d,
                k: self.k,
            }
        };
        Ok((take(&idx[n_test..]), take(&idx[..n_test])))
    }

    pub(crate) fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.d..(i + 1) * self.d]
    }
}

/// A class index read from a table: a whole number `>= 0`.
fn label(v: f64, source: &str, line: usize, column: &str) -> Result<usize> {
    if !(v >= 0.0 && v.fract() == 0.0 && v <= u32::MAX as f64) {
        return Err(Error::Data(format!(
            "{source}:{line}: column `{column}`: label `{v}` is not a class index (a whole number >= 0)"
        )));
    }
    Ok(v as usize)
}

/// A toy problem for the unit tests (the label is the sign of the first feature).
#[cfg(test)]
pub(crate) fn toy_data(n: usize, d: usize, k: usize, seed: u64) -> Dataset {
    let mut rng = chain_rng(seed, 0);
    let mut x = vec![0.0; n * d];
    langevin_core::rng::fill_standard_normal(&mut rng, &mut x);
    let y = (0..n)
        .map(|i| if x[i * d] > 0.0 { 1 } else { 0 } % k)
        .collect();
    Dataset::new(x, y, d, k).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_labels_are_the_last_column_and_bad_labels_name_the_line() {
        let dir = std::env::temp_dir().join(format!("tngd-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.csv");
        std::fs::write(&good, "a,b,label\n1,2,0\n\n3,4,2\n").unwrap();
        let data = Dataset::from_csv(&good, 0.5).unwrap();
        assert_eq!((data.n, data.d, data.k), (2, 2, 3));
        assert_eq!(data.x, vec![0.5, 1.0, 1.5, 2.0]);
        assert_eq!(data.y, vec![0, 2]);
        let bad = dir.join("bad.csv");
        std::fs::write(&bad, "a,label\n1,0\n2,1.5\n").unwrap();
        let msg = Dataset::from_csv(&bad, 1.0).unwrap_err().to_string();
        assert!(msg.contains("bad.csv:3") && msg.contains("1.5"), "{msg}");
        let text = dir.join("text.csv");
        std::fs::write(&text, "a,label\nx,0\n").unwrap();
        let msg = Dataset::from_csv(&text, 1.0).unwrap_err().to_string();
        assert!(msg.contains("text.csv:2") && msg.contains("`x`"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bundled_digits_load_without_files_and_regression_sets_are_refused() {
        let digits = Dataset::bundled("digits", 1.0 / 16.0).unwrap();
        assert_eq!((digits.n, digits.d, digits.k), (1797, 64, 10));
        let max = digits.x.iter().cloned().fold(f64::MIN, f64::max);
        assert_eq!(max, 1.0);
        for c in 0..10 {
            assert!(
                digits.y.iter().filter(|&&y| y == c).count() > 170,
                "class {c}"
            );
        }
        let iris = Dataset::bundled("iris", 1.0).unwrap();
        assert_eq!((iris.n, iris.d, iris.k), (150, 4, 3));
        let msg = Dataset::bundled("diabetes", 1.0).unwrap_err().to_string();
        assert!(msg.contains("regression"), "{msg}");
        let msg = Dataset::bundled("nope", 1.0).unwrap_err().to_string();
        assert!(msg.contains("`nope`") && msg.contains("digits"), "{msg}");
    }
}
