//! Models as batch-averaged log posteriors with isotropic Gaussian priors.
//!
//! For N training rows, a minibatch B and parameters θ (P scalars) the value is
//!
//! ```text
//! log_posterior(θ, B) = (1/|B|) Σ_{i∈B} log p(y_i | x_i, θ) + log N(θ; 0, s² I) / N
//! ```
//!
//! with s the prior standard deviation, so temperature T = 1/N targets the
//! posterior and T = 0 is MAP estimation. The likelihoods:
//!
//! | model | parameters (ravel order) | likelihood |
//! |---|---|---|
//! | linear | `weights[d]`, `intercept`, `log_noise_sd` (when learned) | `N(y; x·w + b, σ²)` |
//! | logistic | `weights[d]`, `intercept` | `Bernoulli(y; sigmoid(x·w + b))` |
//! | softmax | `weights[d,K]`, `intercept[K]` | `Categorical(y; softmax(x W + b))` |
//! | mlp | `layer{l}.weight[in,out]`, `layer{l}.bias[out]`, ..., (`log_noise_sd`) | ReLU hidden layers; categorical or Gaussian output |
//!
//! The log noise scale of a regression gets the same Gaussian prior as the
//! other parameters. Display names ([`Model::param_names`]): for linear and
//! logistic models one per feature, named exactly as the data column, then
//! `intercept` (then `log_noise_sd`); for softmax `feature[class]` and
//! `intercept[class]`; for the MLP the layout's scalar names.

use std::f64::consts::PI;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor, D};
use langevin_core::{CandleDensity, ParamLayout, Params};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// The model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Linear,
    Logistic,
    Softmax,
    Mlp,
}

impl ModelKind {
    pub const ALL: [ModelKind; 4] = [
        ModelKind::Linear,
        ModelKind::Logistic,
        ModelKind::Softmax,
        ModelKind::Mlp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Linear => "linear",
            ModelKind::Logistic => "logistic",
            ModelKind::Softmax => "softmax",
            ModelKind::Mlp => "mlp",
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        ModelKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                ModelError::config(
                    "model",
                    format!("unknown model `{s}`; expected one of linear, logistic, softmax, mlp"),
                )
            })
    }
}

/// What is predicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Regression,
    Classification { n_classes: usize },
}

impl Task {
    /// Number of classes (0 for regression).
    pub fn n_classes(self) -> usize {
        match self {
            Task::Regression => 0,
            Task::Classification { n_classes } => n_classes,
        }
    }

    pub fn is_classification(self) -> bool {
        matches!(self, Task::Classification { .. })
    }
}

/// The Gaussian noise scale of a regression.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Noise {
    /// A parameter `log_noise_sd`, sampled with the others.
    Learned,
    /// A fixed standard deviation (in the units the model sees).
    Fixed(f64),
}

/// Everything that defines a model; plain data, saved with a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub kind: ModelKind,
    pub task: Task,
    /// Feature names, in input order.
    pub feature_names: Vec<String>,
    /// Hidden layer widths (MLP only).
    pub hidden: Vec<usize>,
    /// Prior standard deviation s of every parameter.
    pub prior_sd: f64,
    /// Regression noise (ignored for classification).
    pub noise: Noise,
    /// Number of training rows N (scales the prior in the batch-averaged value).
    pub n_train: usize,
}

/// A minibatch on the model's device: features `[m, d]` and targets
/// (`[m]` for regression and logistic, one-hot `[m, K]` for categorical models).
#[derive(Debug, Clone)]
pub struct Batch {
    pub x: Tensor,
    pub y: Tensor,
}

/// One parameter value's prediction for some rows.
#[derive(Debug, Clone, PartialEq)]
pub enum PointPrediction {
    /// Class probabilities, row-major `n × k`.
    Probs { probs: Vec<f64>, k: usize },
    /// Gaussian predictive: per-row means and one noise sd (model units).
    Gaussian { mean: Vec<f64>, sd: f64 },
}

/// The boxed closure of a model's log posterior.
pub type DensityFn = Box<dyn Fn(&[Tensor], &Batch) -> candle_core::Result<Tensor> + Send + Sync>;

/// A model's log posterior through candle autograd.
pub type CandleModelDensity = CandleDensity<Batch, DensityFn>;

pub use crate::mlp_fast::ModelDensity;

/// A validated model.
#[derive(Debug, Clone)]
pub struct Model {
    spec: ModelSpec,
    layout: ParamLayout,
    names: Vec<String>,
}

impl Model {
    /// Validate `spec` and build the parameter layout.
    pub fn new(spec: ModelSpec) -> Result<Self> {
        let d = spec.feature_names.len();
        if d == 0 {
            return Err(ModelError::config(
                "features",
                "a model needs at least one feature",
            ));
        }
        if !(spec.prior_sd.is_finite() && spec.prior_sd > 0.0) {
            return Err(ModelError::config(
                "prior_sd",
                format!("must be finite and > 0, got {}", spec.prior_sd),
            ));
        }
        if spec.n_train == 0 {
            return Err(ModelError::config("n_train", "no training rows"));
        }
        if let Noise::Fixed(s) = spec.noise {
            if !(s.is_finite() && s > 0.0) {
                return Err(ModelError::config(
                    "noise_sd",
                    format!("must be finite and > 0, got {s}"),
                ));
            }
        }
        let k = spec.task.n_classes();
        match (spec.kind, spec.task) {
            (ModelKind::Linear, Task::Regression) => {}
            (ModelKind::Linear, _) => {
                return Err(ModelError::config("model", "linear regression needs a regression task"))
            }
            (ModelKind::Logistic, Task::Classification { n_classes: 2 }) => {}
            (ModelKind::Logistic, _) => {
                return Err(ModelError::config(
                    "model",
                    format!(
                        "logistic regression needs a binary target, this one has {}; use --model softmax for more classes",
                        if k == 0 { "continuous values".to_string() } else { format!("{k} classes") }
                    ),
                ))
            }
            (ModelKind::Softmax, Task::Classification { n_classes }) if n_classes >= 2 => {}
            (ModelKind::Softmax, _) => {
                return Err(ModelError::config("model", "softmax regression needs a classification target"))
            }
            (ModelKind::Mlp, _) => {
                if spec.hidden.is_empty() || spec.hidden.contains(&0) {
                    return Err(ModelError::config(
                        "hidden",
                        format!("the MLP needs one or more positive layer widths, got {:?}", spec.hidden),
                    ));
                }
            }
        }
        let learned_noise = spec.task == Task::Regression && spec.noise == Noise::Learned;
        let mut specs: Vec<(String, Vec<usize>)> = Vec::new();
        match spec.kind {
            ModelKind::Linear | ModelKind::Logistic => {
                specs.push(("weights".into(), vec![d]));
                specs.push(("intercept".into(), vec![]));
            }
            ModelKind::Softmax => {
                specs.push(("weights".into(), vec![d, k]));
                specs.push(("intercept".into(), vec![k]));
            }
            ModelKind::Mlp => {
                let out = if k == 0 { 1 } else { k };
                let mut widths = vec![d];
                widths.extend(&spec.hidden);
                widths.push(out);
                for (l, w) in widths.windows(2).enumerate() {
                    specs.push((format!("layer{l}.weight"), vec![w[0], w[1]]));
                    specs.push((format!("layer{l}.bias"), vec![w[1]]));
                }
            }
        }
        if learned_noise {
            specs.push(("log_noise_sd".into(), vec![]));
        }
        let layout = ParamLayout::new(specs)?;
        let names = match spec.kind {
            ModelKind::Linear | ModelKind::Logistic => {
                let mut n = spec.feature_names.clone();
                n.push("intercept".into());
                if learned_noise {
                    n.push("log_noise_sd".into());
                }
                n
            }
            ModelKind::Softmax => {
                let mut n = Vec::with_capacity(layout.len());
                for f in &spec.feature_names {
                    for c in 0..k {
                        n.push(format!("{f}[{c}]"));
                    }
                }
                for c in 0..k {
                    n.push(format!("intercept[{c}]"));
                }
                n
            }
            ModelKind::Mlp => layout.scalar_names(),
        };
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(ModelError::config(
                    "features",
                    format!(
                        "parameter name `{n}` would appear twice: rename the data column `{n}`"
                    ),
                ));
            }
        }
        Ok(Self {
            spec,
            layout,
            names,
        })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// Number of scalar parameters.
    pub fn n_params(&self) -> usize {
        self.layout.len()
    }

    /// One display name per scalar parameter, in ravel order (the columns of `samples.csv`).
    pub fn param_names(&self) -> &[String] {
        &self.names
    }

    /// Number of output columns of the network (classes, or 1 for regression).
    pub fn n_outputs(&self) -> usize {
        match self.spec.task {
            Task::Regression => 1,
            Task::Classification { n_classes } => n_classes,
        }
    }

    /// A random starting point: weights `N(0, min(s, 1)²)` for the
    /// generalised linear models (over-dispersed chains make R-hat
    /// meaningful), He-style `N(0, 2/fan_in)` weights and zero biases for the
    /// MLP; `log_noise_sd` starts at 0.
    pub fn init<R: Rng + ?Sized>(&self, rng: &mut R) -> Params {
        let mut p = Params::zeros(self.layout.clone());
        let glm_sd = self.spec.prior_sd.min(1.0);
        for (k, spec) in self.layout.specs().iter().enumerate() {
            let off = self.layout.offset(k);
            let vals = &mut p.values_mut()[off..off + spec.numel()];
            let sd = match self.spec.kind {
                _ if spec.name == "log_noise_sd" => 0.0,
                ModelKind::Mlp if spec.name.ends_with(".bias") => 0.0,
                ModelKind::Mlp => (2.0 / spec.shape[0] as f64).sqrt().min(self.spec.prior_sd),
                _ => glm_sd,
            };
            if sd > 0.0 {
                langevin_core::rng::fill_standard_normal(rng, vals);
                for v in vals.iter_mut() {
                    *v *= sd;
                }
            }
        }
        p
    }

    /// Tensors for rows of data: `x` row-major `m × d` (already standardised),
    /// `y` the targets (class indices for classification, model-unit values for regression).
    pub fn batch(&self, x: &[f64], y: &[f64], dtype: DType, device: &Device) -> Result<Batch> {
        let d = self.spec.feature_names.len();
        let m = y.len();
        if x.len() != m * d {
            return Err(langevin_core::Error::DimensionMismatch {
                what: "batch features",
                expected: m * d,
                got: x.len(),
            }
            .into());
        }
        let xt = Tensor::from_slice(x, (m, d), device)?.to_dtype(dtype)?;
        let yt = match (self.spec.kind, self.spec.task) {
            (_, Task::Regression) | (ModelKind::Logistic, _) => {
                Tensor::from_slice(y, m, device)?.to_dtype(dtype)?
            }
            (_, Task::Classification { n_classes }) => {
                let mut onehot = vec![0.0f64; m * n_classes];
                for (i, &c) in y.iter().enumerate() {
                    let c = c as usize;
                    if c >= n_classes || c as f64 != y[i] {
                        return Err(ModelError::config(
                            "target",
                            format!("class index {} out of range 0..{n_classes}", y[i]),
                        ));
                    }
                    onehot[i * n_classes + c] = 1.0;
                }
                Tensor::from_vec(onehot, (m, n_classes), device)?.to_dtype(dtype)?
            }
        };
        Ok(Batch { x: xt, y: yt })
    }

    /// The network output for features `x` (`[m, d]`): `[m]` for linear,
    /// logistic and MLP regression, `[m, K]` logits otherwise.
    pub fn forward(&self, ts: &[Tensor], x: &Tensor) -> candle_core::Result<Tensor> {
        forward(self.spec.kind, self.spec.task, ts, x)
    }

    /// The batch-averaged log posterior as a log density (model evaluated in
    /// `dtype`): for an MLP on the CPU in f32 or f64 the hand-written
    /// [`MlpDensity`](crate::MlpDensity), otherwise [`Model::candle_density`].
    pub fn density(&self, dtype: DType, device: &Device) -> ModelDensity {
        if self.spec.kind == ModelKind::Mlp && device.is_cpu() {
            if let Ok(d) = self.mlp_density(dtype) {
                return ModelDensity::Mlp(d);
            }
        }
        ModelDensity::Candle(self.candle_density(dtype, device))
    }

    /// The MLP's log posterior with a hand-written gradient (F32 or F64, CPU).
    pub fn mlp_density(&self, dtype: DType) -> Result<crate::MlpDensity> {
        crate::mlp_fast::MlpDensity::for_model(self, dtype)
    }

    /// The batch-averaged log posterior through candle autograd.
    pub fn candle_density(&self, dtype: DType, device: &Device) -> CandleModelDensity {
        let kind = self.spec.kind;
        let task = self.spec.task;
        let n = self.spec.n_train as f64;
        let s2 = self.spec.prior_sd * self.spec.prior_sd;
        let n_params = self.layout.len() as f64;
        let prior_const = -0.5 * n_params * (2.0 * PI * s2).ln();
        let noise = self.spec.noise;
        let has_log_noise = self.layout.index_of("log_noise_sd").is_some();
        let f: DensityFn = Box::new(move |ts: &[Tensor], b: &Batch| {
            let out = forward(kind, task, ts, &b.x)?;
            let m = b.x.dim(0)? as f64;
            let mean_ll = match (kind, task) {
                (_, Task::Regression) => {
                    let resid = (&b.y - &out)?;
                    if has_log_noise {
                        let log_s = ts.last().expect("layout has log_noise_sd");
                        // -0.5 ln 2π - log σ - 0.5 r² exp(-2 log σ)
                        let inv_var = (log_s * -2.0)?.exp()?;
                        let sq = resid.sqr()?.mean_all()?;
                        ((sq * inv_var)? * -0.5)?
                            .sub(log_s)?
                            .affine(1.0, -0.5 * (2.0 * PI).ln())?
                    } else {
                        let s = match noise {
                            Noise::Fixed(s) => s,
                            Noise::Learned => 1.0,
                        };
                        resid
                            .sqr()?
                            .mean_all()?
                            .affine(-0.5 / (s * s), -s.ln() - 0.5 * (2.0 * PI).ln())?
                    }
                }
                (ModelKind::Logistic, _) => {
                    // y z - softplus(z), softplus(z) = relu(z) + ln(1 + e^{-|z|})
                    let softplus = (out.relu()? + (out.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
                    ((&b.y * &out)? - softplus)?.mean_all()?
                }
                _ => {
                    let logp = candle_nn::ops::log_softmax(&out, D::Minus1)?;
                    ((logp * &b.y)?.sum_all()? / m)?
                }
            };
            let mut sq = ts[0].sqr()?.sum_all()?;
            for t in &ts[1..] {
                sq = (sq + t.sqr()?.sum_all()?)?;
            }
            let log_prior_over_n = sq.affine(-0.5 / (s2 * n), prior_const / n)?;
            mean_ll + log_prior_over_n
        });
        CandleDensity::new(f)
            .with_dtype(dtype)
            .with_device(device.clone())
    }

    /// An MLP's last layer as a model of its own, at the hidden layers of `theta`: the
    /// penultimate activations φ(x) ([`Model::last_layer_features`]) are the features of
    /// a softmax model (classification) or a linear model (regression, with the MLP's
    /// noise fixed: `exp(log_noise_sd)` of `theta` when it is learned), whose parameters
    /// are the last layer's weight and bias in the MLP's order, `theta[range]`. The
    /// network is linear in its last layer, so both models have the same log likelihood
    /// as functions of those parameters (with the same prior sd); the last-layer Laplace
    /// and its linearised predictive can work on the small model.
    pub fn last_layer_model(&self, theta: &[f64]) -> Result<(Model, std::ops::Range<usize>)> {
        if self.spec.kind != ModelKind::Mlp {
            return Err(ModelError::config(
                "model",
                "only an MLP has a last layer of its own",
            ));
        }
        self.check_theta(theta)?;
        let last = self.spec.hidden.len();
        let w = self
            .layout
            .range(&format!("layer{last}.weight"))
            .expect("an MLP has its output layer");
        let b = self
            .layout
            .range(&format!("layer{last}.bias"))
            .expect("an MLP has its output layer");
        let width = *self.spec.hidden.last().expect("an MLP has hidden layers");
        let noise = match (self.layout.range("log_noise_sd"), self.spec.noise) {
            (Some(r), _) => Noise::Fixed(theta[r.start].exp()),
            (None, n) => n,
        };
        let spec = ModelSpec {
            kind: match self.spec.task {
                Task::Regression => ModelKind::Linear,
                Task::Classification { .. } => ModelKind::Softmax,
            },
            task: self.spec.task,
            feature_names: (0..width).map(|j| format!("h{j}")).collect(),
            hidden: vec![],
            prior_sd: self.spec.prior_sd,
            noise,
            n_train: self.spec.n_train,
        };
        Ok((Model::new(spec)?, w.start..b.end))
    }

    /// The MLP's penultimate activations (after the last hidden ReLU) for the rows `x`
    /// (row-major), at `theta`: row-major `rows × last hidden width`.
    pub fn last_layer_features(&self, theta: &[f64], x: &[f64]) -> Result<Vec<f64>> {
        if self.spec.kind != ModelKind::Mlp {
            return Err(ModelError::config(
                "model",
                "only an MLP has a last layer of its own",
            ));
        }
        self.check_theta(theta)?;
        let d = self.spec.feature_names.len();
        let rows = self.rows_of(x)?;
        let mut h = x.to_vec();
        let mut width = d;
        for (l, &out) in self.spec.hidden.iter().enumerate() {
            let w = &theta[self
                .layout
                .range(&format!("layer{l}.weight"))
                .expect("layer")];
            let b = &theta[self.layout.range(&format!("layer{l}.bias")).expect("layer")];
            let mut next = vec![0.0; rows * out];
            for (hr, nr) in h.chunks_exact(width).zip(next.chunks_exact_mut(out)) {
                nr.copy_from_slice(b);
                for (hi, wr) in hr.iter().zip(w.chunks_exact(out)) {
                    for (n, wv) in nr.iter_mut().zip(wr) {
                        *n += hi * wv;
                    }
                }
                nr.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            h = next;
            width = out;
        }
        Ok(h)
    }

    /// The number of rows of a row-major feature matrix.
    fn rows_of(&self, x: &[f64]) -> Result<usize> {
        let d = self.spec.feature_names.len();
        if !x.len().is_multiple_of(d) {
            return Err(langevin_core::Error::DimensionMismatch {
                what: "feature matrix width",
                expected: d,
                got: x.len(),
            }
            .into());
        }
        Ok(x.len() / d)
    }

    fn check_theta(&self, theta: &[f64]) -> Result<()> {
        if theta.len() != self.layout.len() {
            return Err(langevin_core::Error::DimensionMismatch {
                what: "parameter vector",
                expected: self.layout.len(),
                got: theta.len(),
            }
            .into());
        }
        Ok(())
    }

    /// The prediction of one parameter value `theta` (ravel order) for rows
    /// `x` (row-major, standardised), computed in f64 on the CPU.
    pub fn predict(&self, theta: &[f64], x: &[f64]) -> Result<PointPrediction> {
        let d = self.spec.feature_names.len();
        self.check_theta(theta)?;
        let m = self.rows_of(x)?;
        let dev = Device::Cpu;
        let params = Params::new(self.layout.clone(), theta.to_vec())?;
        let ts: Vec<Tensor> =
            langevin_core::candle_density::params_to_vars(&params, DType::F64, &dev)?
                .into_iter()
                .map(|v| v.as_tensor().clone())
                .collect();
        let xt = Tensor::from_slice(x, (m, d), &dev)?;
        let out = self.forward(&ts, &xt)?;
        Ok(match self.spec.task {
            Task::Regression => {
                let sd = match (self.layout.range("log_noise_sd"), self.spec.noise) {
                    (Some(r), _) => theta[r.start].exp(),
                    (None, Noise::Fixed(s)) => s,
                    (None, Noise::Learned) => 1.0,
                };
                PointPrediction::Gaussian {
                    mean: out.to_vec1::<f64>()?,
                    sd,
                }
            }
            Task::Classification { n_classes } => {
                let probs = if self.spec.kind == ModelKind::Logistic {
                    let z = out.to_vec1::<f64>()?;
                    let mut p = Vec::with_capacity(2 * m);
                    for z in z {
                        let p1 = sigmoid(z);
                        p.push(1.0 - p1);
                        p.push(p1);
                    }
                    p
                } else {
                    candle_nn::ops::softmax(&out, D::Minus1)?
                        .flatten_all()?
                        .to_vec1::<f64>()?
                };
                PointPrediction::Probs {
                    probs,
                    k: n_classes,
                }
            }
        })
    }
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

fn forward(kind: ModelKind, task: Task, ts: &[Tensor], x: &Tensor) -> candle_core::Result<Tensor> {
    match kind {
        ModelKind::Linear | ModelKind::Logistic => {
            let w = &ts[0];
            let d = w.dim(0)?;
            x.matmul(&w.reshape((d, 1))?)?
                .squeeze(1)?
                .broadcast_add(&ts[1])
        }
        ModelKind::Softmax => x.matmul(&ts[0])?.broadcast_add(&ts[1]),
        ModelKind::Mlp => {
            let n_layers = (ts.len() - usize::from(ts.len() % 2 == 1)) / 2;
            let mut h = x.clone();
            for l in 0..n_layers {
                h = h.matmul(&ts[2 * l])?.broadcast_add(&ts[2 * l + 1])?;
                if l + 1 < n_layers {
                    h = h.relu()?;
                }
            }
            match task {
                Task::Regression => h.squeeze(1),
                Task::Classification { .. } => Ok(h),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last-layer model on the penultimate features predicts what the MLP predicts.
    #[test]
    fn last_layer_model_reproduces_the_mlp() {
        for task in [Task::Classification { n_classes: 3 }, Task::Regression] {
            let spec = ModelSpec {
                kind: ModelKind::Mlp,
                task,
                feature_names: vec!["a".into(), "b".into()],
                hidden: vec![4, 5],
                prior_sd: 1.3,
                noise: Noise::Learned,
                n_train: 10,
            };
            let m = Model::new(spec).unwrap();
            let mut rng = langevin_core::chain_rng(7, 0);
            let theta: Vec<f64> = (0..m.n_params())
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let x = [0.3, -1.2, 2.0, 0.5, -0.7, 0.1];
            let (lm, range) = m.last_layer_model(&theta).unwrap();
            let phi = m.last_layer_features(&theta, &x).unwrap();
            assert_eq!(phi.len(), 3 * 5);
            assert_eq!(range.len(), lm.n_params());
            let a = m.predict(&theta, &x).unwrap();
            let b = lm.predict(&theta[range], &phi).unwrap();
            match (a, b) {
                (
                    PointPrediction::Probs { probs: p, .. },
                    PointPrediction::Probs { probs: q, .. },
                ) => {
                    for (u, v) in p.iter().zip(&q) {
                        assert!((u - v).abs() < 1e-12);
                    }
                }
                (
                    PointPrediction::Gaussian { mean: p, sd: s },
                    PointPrediction::Gaussian { mean: q, sd: t },
                ) => {
                    assert!((s - t).abs() < 1e-12);
                    for (u, v) in p.iter().zip(&q) {
                        assert!((u - v).abs() < 1e-12);
                    }
                }
                _ => panic!("task mismatch"),
            }
        }
    }
    use langevin_core::LogDensity;

    fn spec(kind: ModelKind, task: Task, d: usize) -> ModelSpec {
        ModelSpec {
            kind,
            task,
            feature_names: (0..d).map(|i| format!("f{i}")).collect(),
            hidden: vec![3],
            prior_sd: 1.5,
            noise: Noise::Learned,
            n_train: 7,
        }
    }

    /// Hand-written reference log posteriors for the three GLMs.
    fn reference(kind: ModelKind, theta: &[f64], x: &[f64], y: &[f64], d: usize, k: usize) -> f64 {
        let m = y.len();
        let (s, n) = (1.5f64, 7.0f64);
        let mut ll = 0.0;
        for i in 0..m {
            let xi = &x[i * d..(i + 1) * d];
            match kind {
                ModelKind::Linear => {
                    let mu: f64 = xi.iter().zip(theta).map(|(a, b)| a * b).sum::<f64>() + theta[d];
                    let ls = theta[d + 1];
                    ll += -0.5 * (2.0 * PI).ln() - ls - 0.5 * ((y[i] - mu) / ls.exp()).powi(2);
                }
                ModelKind::Logistic => {
                    let z: f64 = xi.iter().zip(theta).map(|(a, b)| a * b).sum::<f64>() + theta[d];
                    let p = sigmoid(z);
                    ll += if y[i] == 1.0 { p.ln() } else { (1.0 - p).ln() };
                }
                _ => {
                    let logits: Vec<f64> = (0..k)
                        .map(|c| {
                            (0..d).map(|j| xi[j] * theta[j * k + c]).sum::<f64>() + theta[d * k + c]
                        })
                        .collect();
                    let mx = logits.iter().cloned().fold(f64::MIN, f64::max);
                    let lse = mx + logits.iter().map(|l| (l - mx).exp()).sum::<f64>().ln();
                    ll += logits[y[i] as usize] - lse;
                }
            }
        }
        let p = theta.len() as f64;
        let lp = -0.5 * theta.iter().map(|t| t * t).sum::<f64>() / (s * s)
            - 0.5 * p * (2.0 * PI * s * s).ln();
        ll / m as f64 + lp / n
    }

    #[test]
    fn glm_log_posteriors_and_gradients_match_references() {
        let d = 3;
        let x: Vec<f64> = (0..12).map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.4).collect();
        for (kind, task, y, k) in [
            (
                ModelKind::Linear,
                Task::Regression,
                vec![0.3, -1.0, 2.0, 0.5],
                0,
            ),
            (
                ModelKind::Logistic,
                Task::Classification { n_classes: 2 },
                vec![1.0, 0.0, 0.0, 1.0],
                2,
            ),
            (
                ModelKind::Softmax,
                Task::Classification { n_classes: 3 },
                vec![2.0, 0.0, 1.0, 1.0],
                3,
            ),
        ] {
            let model = Model::new(spec(kind, task, d)).unwrap();
            let dens = model.density(DType::F64, &Device::Cpu);
            let batch = model.batch(&x, &y, DType::F64, &Device::Cpu).unwrap();
            let theta: Vec<f64> = (0..model.n_params())
                .map(|i| 0.3 * ((i as f64) * 1.3).sin())
                .collect();
            let p = Params::new(model.layout().clone(), theta.clone()).unwrap();
            let mut g = vec![0.0; theta.len()];
            let (v, ()) = dens.value_and_grad(&p, &batch, &mut g).unwrap();
            let r = reference(kind, &theta, &x, &y, d, k);
            assert!((v - r).abs() < 1e-10, "{kind}: {v} vs {r}");
            for i in 0..theta.len() {
                let h = 1e-6;
                let mut tp = theta.clone();
                tp[i] += h;
                let mut tm = theta.clone();
                tm[i] -= h;
                let fd = (reference(kind, &tp, &x, &y, d, k) - reference(kind, &tm, &x, &y, d, k))
                    / (2.0 * h);
                assert!(
                    (g[i] - fd).abs() < 1e-6,
                    "{kind} grad {i}: {} vs {fd}",
                    g[i]
                );
            }
        }
    }

    #[test]
    fn names_layouts_and_validation() {
        let m = Model::new(spec(ModelKind::Linear, Task::Regression, 2)).unwrap();
        assert_eq!(m.param_names(), &["f0", "f1", "intercept", "log_noise_sd"]);
        let mut s = spec(ModelKind::Linear, Task::Regression, 2);
        s.noise = Noise::Fixed(0.5);
        assert_eq!(
            Model::new(s).unwrap().param_names(),
            &["f0", "f1", "intercept"]
        );
        let m = Model::new(spec(
            ModelKind::Softmax,
            Task::Classification { n_classes: 3 },
            2,
        ))
        .unwrap();
        assert_eq!(m.param_names()[..4], ["f0[0]", "f0[1]", "f0[2]", "f1[0]"]);
        assert_eq!(m.n_params(), 9);
        let m = Model::new(spec(
            ModelKind::Mlp,
            Task::Classification { n_classes: 4 },
            2,
        ))
        .unwrap();
        assert_eq!(m.n_params(), 2 * 3 + 3 + 3 * 4 + 4);
        assert!(Model::new(spec(
            ModelKind::Logistic,
            Task::Classification { n_classes: 3 },
            2
        ))
        .is_err());
        assert!(Model::new(spec(
            ModelKind::Linear,
            Task::Classification { n_classes: 2 },
            2
        ))
        .is_err());
        let mut s = spec(
            ModelKind::Logistic,
            Task::Classification { n_classes: 2 },
            2,
        );
        s.prior_sd = 0.0;
        assert!(Model::new(s).unwrap_err().is_bad_input());
        let mut s = spec(
            ModelKind::Logistic,
            Task::Classification { n_classes: 2 },
            2,
        );
        s.feature_names[1] = "intercept".into();
        assert!(Model::new(s).is_err());
        assert!("foo".parse::<ModelKind>().is_err());
        assert_eq!("mlp".parse::<ModelKind>().unwrap(), ModelKind::Mlp);
    }

    #[test]
    fn mlp_density_is_finite_and_predictions_are_probabilities() {
        let d = 2;
        let x = vec![0.1, -0.2, 1.0, 0.5, -1.0, 0.3];
        let y = vec![0.0, 3.0, 1.0];
        let model = Model::new(spec(
            ModelKind::Mlp,
            Task::Classification { n_classes: 4 },
            d,
        ))
        .unwrap();
        let mut rng = langevin_core::chain_rng(1, 0);
        let p = model.init(&mut rng);
        let dens = model.density(DType::F32, &Device::Cpu);
        let b = model.batch(&x, &y, DType::F32, &Device::Cpu).unwrap();
        let mut g = vec![0.0; p.len()];
        let (v, ()) = dens.value_and_grad(&p, &b, &mut g).unwrap();
        assert!(v.is_finite() && g.iter().all(|g| g.is_finite()));
        assert!(g.iter().any(|g| *g != 0.0));
        match model.predict(p.values(), &x).unwrap() {
            PointPrediction::Probs { probs, k } => {
                assert_eq!((probs.len(), k), (12, 4));
                for row in probs.chunks(4) {
                    assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
                }
            }
            other => panic!("{other:?}"),
        }
        let reg = Model::new(spec(ModelKind::Mlp, Task::Regression, d)).unwrap();
        let p = reg.init(&mut rng);
        let b = reg
            .batch(&x, &[0.5, 1.0, -1.0], DType::F32, &Device::Cpu)
            .unwrap();
        let mut g = vec![0.0; p.len()];
        assert!(reg
            .density(DType::F32, &Device::Cpu)
            .value_and_grad(&p, &b, &mut g)
            .unwrap()
            .0
            .is_finite());
        assert!(
            matches!(reg.predict(p.values(), &x).unwrap(), PointPrediction::Gaussian { sd, .. } if sd == 1.0)
        );
    }
}
