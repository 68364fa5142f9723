//! Data preparation of `langevin fit`: load the table, choose the model,
//! split (seeded), standardise with training statistics, build the model.

use std::path::Path;

use anyhow::Result;
use langevin_models::bundled;
use langevin_models::data::{Dataset, Split, Standardizer};
use langevin_models::{Model, ModelKind, ModelSpec, Noise, Task};

use super::args::{DataArgs, ModelArg, TaskArg};
use crate::exit::bad_input;
use crate::rundir::{RunMeta, RUN_VERSION};

/// The bundled data set used when `--data` is not given.
pub const DEFAULT_DATA: &str = "iris_virginica";

/// Default hidden layer widths of the MLP.
pub const DEFAULT_HIDDEN: &str = "64,64";

/// Data prepared for fitting: standardised training and evaluation rows.
#[derive(Clone)]
pub struct Prepared {
    pub model: Model,
    /// `bundled:<name>` or the file path as given.
    pub data_name: String,
    pub target_name: String,
    pub meta_standardizer: Option<Standardizer>,
    pub target_scaler: Option<(f64, f64)>,
    pub class_labels: Vec<f64>,
    pub train_x: Vec<f64>,
    /// Class indices, or model-unit regression targets.
    pub train_y: Vec<f64>,
    pub eval_x: Vec<f64>,
    pub eval_y: Vec<f64>,
    /// Evaluation targets in data units (regression) or class indices.
    pub eval_y_raw: Vec<f64>,
    pub n_rows: usize,
    pub n_test: usize,
    /// `test`, or `train` when nothing is held out.
    pub metrics_on: &'static str,
    /// In a data-parallel run: which training rows `train_x` holds.
    pub shard: Option<TrainShard>,
}

/// The training rows of one rank of a data-parallel run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainShard {
    /// Index (among all training rows) of this rank's first.
    pub lo: usize,
    /// Training rows over every rank.
    pub n_train: usize,
}

impl Prepared {
    /// Training rows (over every rank of a data-parallel run).
    pub fn n_train(&self) -> usize {
        self.shard.map_or(self.train_y.len(), |s| s.n_train)
    }

    pub fn classification(&self) -> bool {
        matches!(self.model.spec().task, Task::Classification { .. })
    }

    /// `run.json` of a run on this data: what `predict` needs besides the draws.
    pub fn run_meta(&self, config: serde_json::Value) -> RunMeta {
        RunMeta {
            version: RUN_VERSION,
            model: self.model.spec().clone(),
            standardizer: self.meta_standardizer.clone(),
            target_scaler: self.target_scaler,
            class_labels: self.class_labels.clone(),
            target: self.target_name.clone(),
            param_names: self.model.param_names().to_vec(),
            config,
        }
    }

    /// Hash of the prepared training and evaluation data (a resumed run
    /// must see the same).
    pub fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for p in [&self.train_x, &self.train_y, &self.eval_x, &self.eval_y_raw] {
            let bytes = (p.len() as u64)
                .to_le_bytes()
                .into_iter()
                .chain(p.iter().flat_map(|v| v.to_bits().to_le_bytes()));
            for b in bytes {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }
}

/// Load `--data` (a file, or a bundled name) with `--target`.
pub fn load_data(data: Option<&str>, target: Option<&str>) -> Result<(Dataset, String)> {
    let data = data.unwrap_or(DEFAULT_DATA);
    let path = Path::new(data);
    if path.exists() && !path.is_file() {
        crate::bail_input!(
            "--data {data}: not a regular file (a CSV file with a header row, or a bundled name)"
        );
    }
    if path.is_file() {
        let Some(target) = target else {
            crate::bail_input!(
                "--target is required with a data file (the name of the target column of {data})"
            );
        };
        let ds = langevin_models::load_csv(path, target).map_err(bad_input)?;
        return Ok((ds, data.to_string()));
    }
    if let Some(b) = bundled::find(data) {
        let ds = b.load(target).map_err(bad_input)?;
        return Ok((ds, format!("bundled:{}", b.name)));
    }
    let names: Vec<&str> = bundled::BUNDLED.iter().map(|b| b.name).collect();
    crate::bail_input!(
        "--data {data}: no such file, and no bundled data set of that name (bundled: {})",
        names.join(", ")
    )
}

/// Classification-looking target: integer values, at most 20 distinct.
fn looks_categorical(ds: &Dataset) -> Option<usize> {
    let mut seen: Vec<f64> = Vec::new();
    for &v in &ds.y {
        if v.fract() != 0.0 {
            return None;
        }
        if !seen.contains(&v) {
            seen.push(v);
            if seen.len() > 20 {
                return None;
            }
        }
    }
    Some(seen.len())
}

pub fn check_positive(name: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        crate::bail_input!("--{name} must be a finite number > 0, got {v}");
    }
    Ok(())
}

pub fn parse_hidden(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|t| {
            let t = t.trim();
            match t.parse::<usize>() {
                Ok(v) if v > 0 => Ok(v),
                _ => Err(bad_input(format!(
                    "--hidden: `{t}` is not a positive integer (expected widths like 64,64)"
                ))),
            }
        })
        .collect()
}

/// Most parameters a model may have: the samplers hold several f64 copies
/// per chain (state, momenta, gradient, noise), so 5·10⁷ parameters are
/// already gigabytes.
pub const MAX_PARAMS: f64 = 5e7;

/// Refuse a model too large to run here (before anything is allocated).
fn check_size(spec: &ModelSpec, d: usize, data: &str) -> Result<()> {
    let outputs = match spec.task {
        Task::Classification { n_classes } if spec.kind != ModelKind::Logistic => n_classes,
        _ => 1,
    };
    let mut n = 0.0f64;
    let mut width = d as f64;
    for &h in &spec.hidden {
        n += width * h as f64 + h as f64;
        width = h as f64;
    }
    n += width * outputs as f64 + outputs as f64 + 1.0;
    if n > MAX_PARAMS {
        crate::bail_input!(
            "the model on {data} would have about {n:.2e} parameters (more than {MAX_PARAMS:.0e}, \
             several GB per chain); use smaller --hidden widths"
        );
    }
    Ok(())
}

/// Load, split, standardise and build the model of `a`.
pub fn prepare(a: &DataArgs) -> Result<Prepared> {
    let (ds, data_name) = load_data(a.data.as_deref(), a.target.as_deref())?;
    build(a, ds, data_name, None)
}

/// A data-parallel preparation (`fit --data-parallel`, see
/// [`super::shards`]): this rank's rows and what every rank agreed on.
pub struct ShardView<'a> {
    /// Summing over the ranks.
    pub reduce: &'a dyn langevin::shard::Allreduce,
    /// The rows of every rank: their number, and the first row of this one.
    pub n_rows: usize,
    pub first_row: usize,
    /// The first occurrence of every distinct target value over all rows
    /// (in row order; what the choice of model and the class labels read).
    pub targets: Dataset,
    /// This rank's held-out rows, gathered to rank 0 (`x` row-major, `y`):
    /// called with the local ones, returns every rank's on rank 0 and
    /// nothing on the others.
    pub gather_eval: &'a dyn Fn(&Dataset) -> Result<Dataset>,
}

/// [`prepare`] on loaded rows: all of them (`shard` is `None`), or this
/// rank's shard of a data-parallel run.
pub fn build(
    a: &DataArgs,
    ds: Dataset,
    data_name: String,
    shard: Option<&ShardView<'_>>,
) -> Result<Prepared> {
    check_positive("prior-sd", a.prior_sd)?;
    // The prior's precision 1/s² must be a normal number (s² neither
    // overflows nor underflows).
    let prior_prec = 1.0 / (a.prior_sd * a.prior_sd);
    if !prior_prec.is_normal() {
        crate::bail_input!(
            "--prior-sd {}: out of range (its square {} in floating point); use a value \
             between 1e-150 and 1e150",
            a.prior_sd,
            if prior_prec == 0.0 {
                "overflows"
            } else {
                "underflows"
            }
        );
    }
    if let Some(s) = a.noise_sd {
        check_positive("noise-sd", s)?;
    }
    if a.batch_size == Some(0) {
        crate::bail_input!("--batch-size must be at least 1");
    }
    if !(a.test_fraction.is_finite() && (0.0..1.0).contains(&a.test_fraction)) {
        crate::bail_input!("--test-fraction must be in [0, 1), got {}", a.test_fraction);
    }
    let hidden = parse_hidden(a.hidden.as_deref().unwrap_or(DEFAULT_HIDDEN))?;

    // Model and task.
    let targets = shard.map_or(&ds, |v| &v.targets);
    let categorical = looks_categorical(targets);
    let kind = match a.model {
        Some(ModelArg::Linear) => ModelKind::Linear,
        Some(ModelArg::Logistic) => ModelKind::Logistic,
        Some(ModelArg::Softmax) => ModelKind::Softmax,
        Some(ModelArg::Mlp) => ModelKind::Mlp,
        None => match categorical {
            Some(2) => ModelKind::Logistic,
            Some(k) if k > 2 => ModelKind::Softmax,
            _ => ModelKind::Linear,
        },
    };
    if kind != ModelKind::Mlp && a.hidden.is_some() {
        crate::bail_input!("--hidden applies to --model mlp only (the model is {kind})");
    }
    let classification = match kind {
        ModelKind::Linear => {
            if a.task == Some(TaskArg::Classification) {
                crate::bail_input!("--task classification does not fit --model linear");
            }
            false
        }
        ModelKind::Logistic | ModelKind::Softmax => {
            if a.task == Some(TaskArg::Regression) {
                crate::bail_input!("--task regression does not fit --model {kind}");
            }
            true
        }
        ModelKind::Mlp => match a.task {
            Some(t) => t == TaskArg::Classification,
            None => categorical.is_some_and(|k| k >= 2),
        },
    };
    if classification && a.noise_sd.is_some() {
        crate::bail_input!(
            "--noise-sd applies to regression only (this is a classification with --model {kind})"
        );
    }
    let class_labels = if classification {
        targets.class_labels().map_err(bad_input)?
    } else {
        Vec::new()
    };
    let task = if classification {
        Task::Classification {
            n_classes: class_labels.len(),
        }
    } else {
        Task::Regression
    };

    // Split and standardise.
    let (n_rows, first) = shard.map_or((ds.n(), 0), |v| (v.n_rows, v.first_row));
    let split = Split::new(n_rows, a.test_fraction, a.seed)
        .map_err(|e| bad_input(format!("{data_name}: {e}")))?;
    // This process's rows of the split (all of them in one process).
    let local = |idx: &[usize]| -> Vec<usize> {
        let lo = idx.partition_point(|&i| i < first);
        let hi = idx.partition_point(|&i| i < first + ds.n());
        idx[lo..hi].iter().map(|&i| i - first).collect()
    };
    let train_idx = local(&split.train);
    let train_lo = split.train.partition_point(|&i| i < first);
    let train = ds.subset(&train_idx);
    let (eval, metrics_on) = match (shard, split.test.is_empty()) {
        (None, true) => (train.clone(), "train"),
        (None, false) => (ds.subset(&split.test), "test"),
        (Some(_), true) => crate::bail_input!(
            "--data-parallel needs held-out rows for the metrics (--test-fraction > 0)"
        ),
        (Some(v), false) => ((v.gather_eval)(&ds.subset(&local(&split.test)))?, "test"),
    };
    let sum = |buf: &mut [f64]| match shard {
        Some(v) => v.reduce.sum(buf),
        None => Ok(()),
    };
    let n_train = split.train.len();
    let standardize = !a.no_standardize;
    let mut train_x = train.x.clone();
    let mut eval_x = eval.x.clone();
    let standardizer = if standardize {
        let s = Standardizer::fit_summed(&train_x, ds.d(), n_train, sum)?;
        if let Some(j) = (0..ds.d()).find(|&j| !(s.mean[j].is_finite() && s.sd[j].is_finite())) {
            crate::bail_input!(
                "{data_name}: column `{}` has values too large to standardise (its mean or \
                 standard deviation overflows); rescale the column",
                ds.feature_names[j]
            );
        }
        s.apply(&mut train_x);
        s.apply(&mut eval_x);
        Some(s)
    } else {
        None
    };
    let (train_y, eval_y, eval_y_raw, target_scaler) = if classification {
        let ty = train.class_indices(&class_labels).map_err(bad_input)?;
        let ey = eval.class_indices(&class_labels).map_err(bad_input)?;
        (ty, ey.clone(), ey, None)
    } else {
        let scaler = if standardize {
            let s = Standardizer::fit_summed(&train.y, 1, n_train, sum)?;
            if !(s.mean[0].is_finite() && s.sd[0].is_finite()) {
                crate::bail_input!(
                    "{data_name}: target `{}` has values too large to standardise (its mean \
                     or standard deviation overflows); rescale it",
                    ds.target_name
                );
            }
            Some((s.mean[0], s.sd[0]))
        } else {
            None
        };
        let (m, sd) = scaler.unwrap_or((0.0, 1.0));
        let ty = train.y.iter().map(|y| (y - m) / sd).collect();
        let ey = eval.y.iter().map(|y| (y - m) / sd).collect();
        (ty, ey, eval.y.clone(), scaler)
    };
    if classification && class_labels.len() > n_train {
        crate::bail_input!(
            "{data_name}: target `{}` has {} classes but only {n_train} training rows \
             ({} rows, {} held out by --test-fraction {}): a classifier needs at least \
             one training row per class",
            ds.target_name,
            class_labels.len(),
            n_rows,
            split.test.len(),
            a.test_fraction
        );
    }
    let spec = ModelSpec {
        kind,
        task,
        feature_names: ds.feature_names.clone(),
        hidden: if kind == ModelKind::Mlp {
            hidden
        } else {
            Vec::new()
        },
        prior_sd: a.prior_sd,
        noise: match a.noise_sd {
            Some(s) => Noise::Fixed(s),
            None => Noise::Learned,
        },
        n_train,
    };
    check_size(&spec, ds.d(), a.data.as_deref().unwrap_or(DEFAULT_DATA))?;
    let model = Model::new(spec).map_err(bad_input)?;
    Ok(Prepared {
        model,
        data_name,
        target_name: ds.target_name.clone(),
        meta_standardizer: standardizer,
        target_scaler,
        class_labels,
        train_x,
        train_y,
        eval_x,
        eval_y,
        eval_y_raw,
        n_rows,
        n_test: split.test.len(),
        metrics_on,
        shard: shard.map(|_| TrainShard {
            lo: train_lo,
            n_train,
        }),
    })
}
