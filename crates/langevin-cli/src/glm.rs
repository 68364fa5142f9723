//! The linearised (GLM) predictive of a fitted Gaussian, for `fit` (the
//! `glm` test metrics of the Gaussian methods) and `langevin predict
//! --predictive glm`.
//!
//! A Gaussian method (`vi`, `ivon`, `laplace-*`, `ekf*`) writes its
//! `q = N(μ, Σ)` to `gaussian.safetensors` in the run directory: `mean`
//! (length d) and either `var` (length m, a diagonal Σ) or `cov` (m × m), in
//! f64, over the approximated parameters (`subset`, m indices, when they are
//! not all of them; the others are fixed at the mean). `laplace-kfac` writes the
//! marginal variances there and its Kronecker factors to `gaussian-kron.json`
//! (the library's `KronLaplaceState`), whose covariance is applied to vectors
//! through the per-layer eigenbases and never formed. The GLM predictive linearises the network at μ,
//! `f(x, θ) ≈ f(x, μ) + J(x)(θ − μ)`, so the outputs of a row are Gaussian,
//! `N(f(x, μ), J Σ Jᵀ)` (`langevin::predictive::linearised`; Immer et al.
//! 2021, laplace-torch's `pred_type="glm"`). That is far better than pushing
//! draws of a Laplace approximation through the non-linear network, which
//! underfits.
//!
//! The output Gaussian is turned into a predictive by Monte Carlo over the
//! outputs (laplace-torch's `link_approx="mc"`), `S` draws per row from a
//! fixed stream, so that the result has the same form as a sampler's
//! ([`Predictive`]: mean probabilities and the mean entropy for the
//! aleatoric part; per-draw means and noise sds for a regression):
//! * logistic: one logit per row, probabilities `(1 − σ(f), σ(f))`;
//! * softmax and the MLP classifier: k logits, probabilities `softmax(f)`;
//! * regression with a fixed noise sd: `f` per row, that noise;
//! * regression with a learned noise (`log_noise_sd`): the outputs are
//!   `(f, log σ)`; `log σ` depends only on its own parameter, so each draw
//!   `s` takes one `log σ_s` for every row and `f` from its Gaussian
//!   conditional on it (the joint Gaussian exactly).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use langevin::curvature::Subset;
use langevin::laplace::KronLaplaceState;
use langevin::predictive::{linearised, Covariance};
use langevin_core::rng::fill_standard_normal;
use langevin_core::{chain_rng, Params};
use langevin_models::curvature::output_model;
use langevin_models::{Model, ModelKind, Task};

use crate::evaluate::{entropy, Predictive};

/// The file a Gaussian method writes into its run directory.
pub const GAUSSIAN_FILE: &str = "gaussian.safetensors";

/// Rows linearised at once (the Jacobian holds rows × outputs × d values).
const ROWS_PER_CHUNK: usize = 64;

/// The file of a KFAC Laplace run's Kronecker factors (beside [`GAUSSIAN_FILE`]).
pub const KRON_FILE: &str = "gaussian-kron.json";

/// The covariance of a fitted Gaussian (over the subset's m parameters).
#[derive(Debug, Clone, PartialEq)]
pub enum GaussianCov {
    /// Variances (length m).
    Diag(Vec<f64>),
    /// Row-major m × m covariance.
    Dense(Vec<f64>),
    /// A KFAC Laplace state: the covariance through its per-layer eigenbases
    /// (`cov_vec`), never formed.
    Kron(Box<KronLaplaceState>),
}

impl GaussianCov {
    /// The marginal variances.
    pub fn variances(&self) -> Result<Vec<f64>> {
        Ok(match self {
            GaussianCov::Diag(v) => v.clone(),
            GaussianCov::Dense(c) => {
                let m = (c.len() as f64).sqrt().round() as usize;
                (0..m).map(|j| c[j * m + j]).collect()
            }
            GaussianCov::Kron(k) => k.sd(1.0)?.iter().map(|s| s * s).collect(),
        })
    }
}

/// A fitted Gaussian: `mean` over every parameter, `cov` over `subset` (`None`: every
/// parameter); the parameters outside the subset are fixed at the mean.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredGaussian {
    pub mean: Vec<f64>,
    pub cov: GaussianCov,
    pub subset: Option<Vec<usize>>,
}

impl StoredGaussian {
    /// Write `dir/gaussian.safetensors`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let d = self.mean.len();
        let m = self.subset.as_ref().map_or(d, |s| s.len());
        let dev = Device::Cpu;
        let mut ts = HashMap::new();
        ts.insert("mean".to_string(), Tensor::from_slice(&self.mean, d, &dev)?);
        if let Some(ix) = &self.subset {
            let ix: Vec<i64> = ix.iter().map(|&j| j as i64).collect();
            ts.insert("subset".to_string(), Tensor::from_slice(&ix, m, &dev)?);
        }
        match &self.cov {
            GaussianCov::Diag(v) => {
                ts.insert("var".to_string(), Tensor::from_slice(v, m, &dev)?);
            }
            GaussianCov::Dense(c) => {
                ts.insert("cov".to_string(), Tensor::from_slice(c, (m, m), &dev)?);
            }
            GaussianCov::Kron(k) => {
                // The marginals in the tensor file (for any reader), the factors beside it.
                let v = self.cov.variances()?;
                ts.insert("var".to_string(), Tensor::from_slice(&v, m, &dev)?);
                let path = dir.join(KRON_FILE);
                let tmp = dir.join(format!(".{KRON_FILE}.tmp-{}", std::process::id()));
                std::fs::write(&tmp, serde_json::to_vec(k)?)
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        let path = dir.join(GAUSSIAN_FILE);
        let tmp = dir.join(format!(".{GAUSSIAN_FILE}.tmp-{}", std::process::id()));
        candle_core::safetensors::save(&ts, &tmp)
            .with_context(|| format!("writing {}", path.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Read `dir/gaussian.safetensors` (`None` when the run has none: a sampler's
    /// run, or one written before the file existed).
    pub fn read(dir: &Path, n_params: usize) -> Result<Option<Self>> {
        let path = dir.join(GAUSSIAN_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let bad = |why: String| crate::exit::bad_input(format!("{}: {why}", path.display()));
        let ts = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|e| bad(format!("not a readable safetensors file ({e})")))?;
        let vec = |name: &str, len: usize| -> Result<Option<Vec<f64>>> {
            let Some(t) = ts.get(name) else {
                return Ok(None);
            };
            if t.dtype() != DType::F64 || t.elem_count() != len {
                return Err(bad(format!(
                    "tensor `{name}` must be f64 with {len} values, is {:?} with {}",
                    t.dtype(),
                    t.elem_count()
                )));
            }
            let v = t.flatten_all()?.to_vec1::<f64>()?;
            if v.iter().any(|x| !x.is_finite()) {
                return Err(bad(format!("tensor `{name}` has non-finite values")));
            }
            Ok(Some(v))
        };
        let d = n_params;
        let mean = vec("mean", d)?.ok_or_else(|| bad("no tensor `mean`".into()))?;
        let subset = match ts.get("subset") {
            None => None,
            Some(t) => {
                let ix: Vec<i64> = t
                    .to_dtype(DType::I64)
                    .and_then(|t| t.flatten_all()?.to_vec1::<i64>())
                    .map_err(|e| bad(format!("tensor `subset`: {e}")))?;
                let ok = !ix.is_empty()
                    && ix.windows(2).all(|w| w[0] < w[1])
                    && ix.iter().all(|&j| j >= 0 && (j as usize) < d);
                if !ok {
                    return Err(bad(format!(
                        "tensor `subset` must hold increasing parameter indices below {d}"
                    )));
                }
                Some(ix.into_iter().map(|j| j as usize).collect::<Vec<_>>())
            }
        };
        let m = subset.as_ref().map_or(d, |s| s.len());
        let kron_path = dir.join(KRON_FILE);
        if kron_path.is_file() {
            let badk =
                |why: String| crate::exit::bad_input(format!("{}: {why}", kron_path.display()));
            let text = std::fs::read(&kron_path).map_err(|e| badk(format!("cannot read ({e})")))?;
            let k: KronLaplaceState = serde_json::from_slice(&text)
                .map_err(|e| badk(format!("not a KFAC Laplace state ({e})")))?;
            let want: Vec<usize> = subset.clone().unwrap_or_else(|| (0..d).collect());
            if k.params.values() != &mean[..] || k.subset.indices() != &want[..] {
                return Err(badk(format!(
                    "does not match the mean and subset of {}",
                    path.display()
                )));
            }
            // The factors must give a covariance (e.g. a positive prior precision).
            k.sd(1.0).map_err(|e| badk(e.to_string()))?;
            return Ok(Some(Self {
                mean,
                cov: GaussianCov::Kron(Box::new(k)),
                subset,
            }));
        }
        let cov = match (vec("var", m)?, vec("cov", m * m)?) {
            (Some(v), None) if v.iter().all(|x| *x >= 0.0) => GaussianCov::Diag(v),
            (Some(_), None) => return Err(bad("tensor `var` has negative values".into())),
            (None, Some(c)) => GaussianCov::Dense(c),
            _ => {
                return Err(bad(
                    "needs exactly one of the tensors `var` and `cov`".into()
                ))
            }
        };
        Ok(Some(Self { mean, cov, subset }))
    }
}

/// The GLM predictive of `g` for the standardised rows `x` (row-major), by `draws`
/// Monte Carlo draws of each row's outputs from the stream of `seed`.
pub fn glm_predictive(
    model: &Model,
    g: &StoredGaussian,
    x: &[f64],
    draws: usize,
    seed: u64,
) -> Result<Predictive> {
    // A last-layer Gaussian of an MLP: the network is linear in its last layer, so the
    // predictive is that of the last layer's own model on the penultimate features (no
    // Jacobian of the whole network).
    if let (ModelKind::Mlp, Some(ix), false) = (
        model.spec().kind,
        &g.subset,
        matches!(g.cov, GaussianCov::Kron(_)),
    ) {
        let (fm, range) = model.last_layer_model(&g.mean)?;
        if ix.iter().copied().eq(range.clone()) {
            let phi = model.last_layer_features(&g.mean, x)?;
            let fg = StoredGaussian {
                mean: g.mean[range].to_vec(),
                cov: g.cov.clone(),
                subset: None,
            };
            return glm_predictive(&fm, &fg, &phi, draws, seed);
        }
    }
    let nf = model.spec().feature_names.len();
    let n = x.len() / nf;
    let s_draws = draws.max(1);
    let om = output_model(model);
    let params = Params::new(model.layout().clone(), g.mean.clone())?;
    let all = match &g.subset {
        Some(ix) => Subset::from_indices(ix.clone(), params.len())?,
        None => Subset::all(params.len()),
    };
    let dev = Device::Cpu;
    let mut rng = chain_rng(seed, u64::MAX - 3);
    let log_noise = model.layout().range("log_noise_sd").map(|r| r.start);
    let classification = match model.spec().task {
        Task::Classification { n_classes } => Some(n_classes),
        Task::Regression => None,
    };
    // Regression: one log σ per draw (shared by every row), or the fixed noise.
    let log_sigma: Option<Vec<f64>> = match (classification, log_noise) {
        (None, Some(ix)) => {
            // Its position in the subset (a parameter outside it is fixed).
            let pos = match &g.subset {
                Some(s) => s.iter().position(|&j| j == ix),
                None => Some(ix),
            };
            let var = match pos {
                None => 0.0,
                Some(k) => g.cov.variances()?[k],
            };
            let mut z = vec![0.0; s_draws];
            fill_standard_normal(&mut rng, &mut z);
            Some(z.iter().map(|z| g.mean[ix] + var.sqrt() * z).collect())
        }
        _ => None,
    };
    let fixed_sd = match model.spec().noise {
        langevin_models::Noise::Fixed(s) => s,
        langevin_models::Noise::Learned => 1.0,
    };
    let k_out = classification.map_or(1, |k| k);
    let mut probs = vec![
        0.0;
        if classification.is_some() {
            n * k_out
        } else {
            0
        }
    ];
    let mut aleatoric = vec![0.0; n];
    let mut means = vec![vec![0.0; n]; if classification.is_none() { s_draws } else { 0 }];
    let mut z = Vec::new();
    let mut p = vec![0.0; k_out.max(2)];
    for lo in (0..n).step_by(ROWS_PER_CHUNK) {
        let hi = (lo + ROWS_PER_CHUNK).min(n);
        let rows = hi - lo;
        let batch = model.batch(&x[lo * nf..hi * nf], &vec![0.0; rows], DType::F64, &dev)?;
        let lin = match &g.cov {
            GaussianCov::Diag(v) => {
                linearised(&om, &params, Covariance::Diag(v), &all, &batch, 0.0)?
            }
            GaussianCov::Dense(c) => {
                linearised(&om, &params, Covariance::Dense(c), &all, &batch, 0.0)?
            }
            GaussianCov::Kron(k) => {
                let op = |v: &[f64]| k.cov_vec(v, 1.0);
                linearised(&om, &params, Covariance::Operator(&op), &all, &batch, 0.0)?
            }
        };
        let k = lin.k;
        for r in 0..rows {
            let i = lo + r;
            let mu = &lin.mean[r * k..(r + 1) * k];
            let cov = &lin.cov[r * k * k..(r + 1) * k * k];
            match classification {
                Some(nc) => {
                    let l = chol_psd(cov, k);
                    z.resize(k, 0.0);
                    let mut f = vec![0.0; k];
                    for _ in 0..s_draws {
                        fill_standard_normal(&mut rng, &mut z);
                        for a in 0..k {
                            f[a] = mu[a] + (0..=a).map(|b| l[a * k + b] * z[b]).sum::<f64>();
                        }
                        let pr = &mut p[..nc];
                        if model.spec().kind == ModelKind::Logistic {
                            let p1 = sigmoid(f[0]);
                            pr[0] = 1.0 - p1;
                            pr[1] = p1;
                        } else {
                            softmax(&f, pr);
                        }
                        for (acc, v) in probs[i * nc..(i + 1) * nc].iter_mut().zip(pr.iter()) {
                            *acc += v;
                        }
                        aleatoric[i] += entropy(pr);
                    }
                }
                None => {
                    z.resize(s_draws, 0.0);
                    fill_standard_normal(&mut rng, &mut z);
                    match &log_sigma {
                        // Outputs (f, log σ): f given log σ_s.
                        Some(ls) => {
                            let (vf, c, vs) = (cov[0], cov[1], cov[3]);
                            let (b, vc) = if vs > 0.0 {
                                (c / vs, (vf - c * c / vs).max(0.0))
                            } else {
                                (0.0, vf.max(0.0))
                            };
                            for (s, m) in means.iter_mut().enumerate() {
                                m[i] = mu[0] + b * (ls[s] - mu[1]) + vc.sqrt() * z[s];
                            }
                        }
                        None => {
                            let sd = cov[0].max(0.0).sqrt();
                            for (s, m) in means.iter_mut().enumerate() {
                                m[i] = mu[0] + sd * z[s];
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(match classification {
        Some(k) => {
            let s = s_draws as f64;
            probs.iter_mut().for_each(|v| *v /= s);
            aleatoric.iter_mut().for_each(|v| *v /= s);
            Predictive::Classification {
                probs,
                k,
                aleatoric,
            }
        }
        None => {
            let sds = match log_sigma {
                Some(ls) => ls.iter().map(|l| l.exp()).collect(),
                None => vec![fixed_sd; s_draws],
            };
            Predictive::Regression { means, sds }
        }
    })
}

/// Lower Cholesky factor of a symmetric positive semi-definite `k × k` matrix,
/// with the smallest diagonal jitter (relative to the trace, from 1e-12 up)
/// that makes it positive definite; all zeros for a zero matrix.
fn chol_psd(a: &[f64], k: usize) -> Vec<f64> {
    let trace: f64 = (0..k).map(|i| a[i * k + i].max(0.0)).sum();
    if trace <= 0.0 {
        return vec![0.0; k * k];
    }
    let mut jitter = 0.0;
    loop {
        if let Some(l) = try_chol(a, k, jitter) {
            return l;
        }
        jitter = if jitter == 0.0 {
            1e-12 * trace
        } else {
            jitter * 10.0
        };
    }
}

fn try_chol(a: &[f64], k: usize, jitter: f64) -> Option<Vec<f64>> {
    let mut l = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..=i {
            let mut s = a[i * k + j] - (0..j).map(|m| l[i * k + m] * l[j * k + m]).sum::<f64>();
            if i == j {
                s += jitter;
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * k + i] = s.sqrt();
            } else {
                l[i * k + j] = s / l[j * k + j];
            }
        }
    }
    Some(l)
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

fn softmax(f: &[f64], out: &mut [f64]) {
    let mx = f.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut s = 0.0;
    for (o, v) in out.iter_mut().zip(f) {
        *o = (v - mx).exp();
        s += *o;
    }
    out.iter_mut().for_each(|o| *o /= s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chol_psd_handles_singular_and_zero_matrices() {
        // rank one: [[1, 1], [1, 1]]
        let l = chol_psd(&[1.0, 1.0, 1.0, 1.0], 2);
        let back = [
            l[0] * l[0],
            l[0] * l[2],
            l[2] * l[0],
            l[2] * l[2] + l[3] * l[3],
        ];
        for (a, b) in back.iter().zip([1.0, 1.0, 1.0, 1.0]) {
            assert!((a - b).abs() < 1e-9, "{back:?}");
        }
        assert_eq!(chol_psd(&[0.0; 4], 2), vec![0.0; 4]);
        let l = chol_psd(&[4.0, 2.0, 2.0, 3.0], 2);
        assert!((l[0] - 2.0).abs() < 1e-15 && (l[2] - 1.0).abs() < 1e-15);
        assert!((l[3] - 2f64.sqrt()).abs() < 1e-15);
    }
}
