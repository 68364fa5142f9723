//! Posterior predictive distributions.
//!
//! * [`monte_carlo`]: moments of a model's outputs over posterior samples
//!   (from any sampler or Gaussian state's `sample`), and
//!   [`mc_log_predictive`]: the per-example log predictive density
//!   `log (1/S) Σₛ p(yᵢ | θₛ)` from per-sample log likelihoods (log-sum-exp).
//! * [`linearised`]: the linearised (GLM) predictive of a Gaussian posterior
//!   `N(μ, Σ)` (Immer, Korzepa and Bauer, 2021): the model is replaced by its
//!   first-order expansion at μ, `f(θ, x) ≈ f(μ, x) + J (θ − μ)`, so the
//!   output of example i is Gaussian with
//!
//!   ```text
//!   mean  fᵢ(μ)
//!   cov   Jᵢ Σ Jᵢᵀ + σ²_obs I      (k × k per example)
//!   ```
//!
//!   Σ may be diagonal ([`Covariance::Diag`], variances) or dense
//!   ([`Covariance::Dense`]), over a [`Subset`] of the parameters (e.g. the
//!   last layer of a Laplace approximation). Cross-example covariances are
//!   not returned.
#![allow(clippy::needless_range_loop)]

use langevin_core::{Error, Params, Result};

use crate::curvature::{check_len, OutputModel, Subset};

/// Moments of model outputs over posterior samples.
#[derive(Debug, Clone, PartialEq)]
pub struct McPredictive {
    pub n_samples: usize,
    /// Output values per sample (row-major `n_samples × dim_out`).
    pub outputs: Vec<f64>,
    pub dim_out: usize,
    pub mean: Vec<f64>,
    /// Unbiased (S − 1) variance per output (0 for one sample).
    pub var: Vec<f64>,
}

/// Evaluate `f` on every sample and summarise.
pub fn monte_carlo<F>(samples: &[Params], mut f: F) -> Result<McPredictive>
where
    F: FnMut(&Params) -> Result<Vec<f64>>,
{
    if samples.is_empty() {
        return Err(Error::Data(
            "Monte Carlo predictive needs at least one sample".into(),
        ));
    }
    let mut outputs = Vec::new();
    let mut dim_out = 0;
    for (s, p) in samples.iter().enumerate() {
        let o = f(p)?;
        if s == 0 {
            dim_out = o.len();
        } else {
            check_len("predictive output", dim_out, o.len())?;
        }
        if o.iter().any(|x| !x.is_finite()) {
            return Err(Error::Density(format!(
                "non-finite predictive output for sample {s}"
            )));
        }
        outputs.extend(o);
    }
    let ns = samples.len();
    let mut mean = vec![0.0; dim_out];
    for s in 0..ns {
        for (m, o) in mean
            .iter_mut()
            .zip(&outputs[s * dim_out..(s + 1) * dim_out])
        {
            *m += o;
        }
    }
    mean.iter_mut().for_each(|m| *m /= ns as f64);
    let mut var = vec![0.0; dim_out];
    if ns > 1 {
        for s in 0..ns {
            for ((v, o), m) in var
                .iter_mut()
                .zip(&outputs[s * dim_out..(s + 1) * dim_out])
                .zip(&mean)
            {
                *v += (o - m).powi(2);
            }
        }
        var.iter_mut().for_each(|v| *v /= (ns - 1) as f64);
    }
    Ok(McPredictive {
        n_samples: ns,
        outputs,
        dim_out,
        mean,
        var,
    })
}

/// Per-example `log (1/S) Σₛ exp(ℓᵢ(θₛ))` where `loglik(θ)` returns the
/// per-example log likelihoods `ℓᵢ(θ)` (a stable log-sum-exp).
pub fn mc_log_predictive<F>(samples: &[Params], loglik: F) -> Result<Vec<f64>>
where
    F: FnMut(&Params) -> Result<Vec<f64>>,
{
    let mc = monte_carlo(samples, loglik)?;
    let (ns, n) = (mc.n_samples, mc.dim_out);
    let mut out = vec![0.0; n];
    for (i, o) in out.iter_mut().enumerate() {
        let mx = (0..ns)
            .map(|s| mc.outputs[s * n + i])
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = (0..ns).map(|s| (mc.outputs[s * n + i] - mx).exp()).sum();
        *o = mx + (sum / ns as f64).ln();
    }
    Ok(out)
}

/// A Gaussian posterior's covariance over a subset of `m` parameters.
#[derive(Clone, Copy)]
pub enum Covariance<'a> {
    /// Variances (length m).
    Diag(&'a [f64]),
    /// Row-major `m × m` covariance.
    Dense(&'a [f64]),
    /// `v ↦ Σ v` for vectors of length m, for a structured covariance that is never
    /// formed (e.g. [`KronLaplaceState::cov_vec`](crate::laplace::KronLaplaceState::cov_vec)).
    Operator(&'a (dyn Fn(&[f64]) -> Result<Vec<f64>> + Sync)),
}

impl std::fmt::Debug for Covariance<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Covariance::Diag(v) => f.debug_tuple("Diag").field(&v.len()).finish(),
            Covariance::Dense(c) => f.debug_tuple("Dense").field(&c.len()).finish(),
            Covariance::Operator(_) => f.write_str("Operator"),
        }
    }
}

/// Linearised predictive: per-example means and `k × k` covariances.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearisedPredictive {
    pub n: usize,
    pub k: usize,
    /// `fᵢ(μ)`, row-major `n × k`.
    pub mean: Vec<f64>,
    /// `Jᵢ Σ Jᵢᵀ + σ²_obs I`, `n` blocks of `k × k`.
    pub cov: Vec<f64>,
}

impl LinearisedPredictive {
    /// Predictive variances (diagonals of the blocks), row-major `n × k`.
    pub fn variances(&self) -> Vec<f64> {
        let k = self.k;
        (0..self.n * k)
            .map(|r| {
                let (i, a) = (r / k, r % k);
                self.cov[i * k * k + a * k + a]
            })
            .collect()
    }
}

/// The linearised (GLM) predictive of `N(params, cov)` over `subset`, with
/// observation noise variance `obs_noise` added to each output's variance.
pub fn linearised<M: OutputModel>(
    model: &M,
    params: &Params,
    cov: Covariance<'_>,
    subset: &Subset,
    batch: &M::Batch,
    obs_noise: f64,
) -> Result<LinearisedPredictive> {
    subset.check_dim(params.len())?;
    if !(obs_noise.is_finite() && obs_noise >= 0.0) {
        return Err(Error::config("obs_noise", "must be finite and >= 0"));
    }
    let m = subset.len();
    match cov {
        Covariance::Diag(v) => {
            check_len("diagonal covariance", m, v.len())?;
            if v.iter().any(|x| !(x.is_finite() && *x >= 0.0)) {
                return Err(Error::config("cov", "variances must be finite and >= 0"));
            }
        }
        Covariance::Dense(c) => {
            check_len("dense covariance (m × m)", m * m, c.len())?;
            if c.iter().any(|x| !x.is_finite()) {
                return Err(Error::config("cov", "must be finite"));
            }
        }
        Covariance::Operator(_) => {}
    }
    let jac = model.forward_jacobian(params, batch)?;
    check_len("model Jacobian columns", params.len(), jac.dim)?;
    let (n, k, d) = (jac.n, jac.k, jac.dim);
    let mut out = vec![0.0; n * k * k];
    if let Covariance::Dense(c) = cov {
        // All rows at once: `(J Σ)` as one matrix product (faer), then the k × k blocks.
        let mut jm = faer::Mat::<f64>::zeros(n * k, m);
        let mut row = vec![0.0; m];
        for i in 0..n {
            let block = jac.block(i);
            for r in 0..k {
                subset.gather(&block[r * d..(r + 1) * d], &mut row);
                for (j, v) in row.iter().enumerate() {
                    jm[(i * k + r, j)] = *v;
                }
            }
        }
        let cm = faer::Mat::<f64>::from_fn(m, m, |a, b| c[a * m + b]);
        let js = &jm * &cm;
        for i in 0..n {
            let o = &mut out[i * k * k..(i + 1) * k * k];
            for a in 0..k {
                for b in 0..k {
                    o[a * k + b] = (0..m)
                        .map(|j| jm[(i * k + a, j)] * js[(i * k + b, j)])
                        .sum::<f64>();
                }
                o[a * k + a] += obs_noise;
            }
        }
        return Ok(LinearisedPredictive {
            n,
            k,
            mean: jac.outputs,
            cov: out,
        });
    }
    let mut js = vec![0.0; k * m];
    let mut sj = vec![0.0; m];
    for i in 0..n {
        let block = jac.block(i);
        for r in 0..k {
            subset.gather(&block[r * d..(r + 1) * d], &mut js[r * m..(r + 1) * m]);
        }
        let o = &mut out[i * k * k..(i + 1) * k * k];
        for b in 0..k {
            let jb = &js[b * m..(b + 1) * m];
            // sj = Σ J_bᵀ
            match cov {
                Covariance::Diag(v) => {
                    for ((s, vj), j) in sj.iter_mut().zip(v).zip(jb) {
                        *s = vj * j;
                    }
                }
                Covariance::Dense(_) => unreachable!("handled above"),
                Covariance::Operator(op) => {
                    let v = op(jb)?;
                    check_len("covariance operator output", m, v.len())?;
                    sj.copy_from_slice(&v);
                }
            }
            for a in 0..k {
                o[a * k + b] = crate::curvature::dot(&js[a * m..(a + 1) * m], &sj);
            }
        }
        for a in 0..k {
            o[a * k + a] += obs_noise;
        }
    }
    Ok(LinearisedPredictive {
        n,
        k,
        mean: jac.outputs,
        cov: out,
    })
}

/// [`linearised`] with a diagonal covariance (variances) over every parameter.
pub fn linearised_diag<M: OutputModel>(
    model: &M,
    params: &Params,
    variances: &[f64],
    batch: &M::Batch,
    obs_noise: f64,
) -> Result<LinearisedPredictive> {
    let all = Subset::all(params.len());
    linearised(
        model,
        params,
        Covariance::Diag(variances),
        &all,
        batch,
        obs_noise,
    )
}

/// [`linearised`] with a dense covariance over every parameter.
pub fn linearised_dense<M: OutputModel>(
    model: &M,
    params: &Params,
    cov: &[f64],
    batch: &M::Batch,
    obs_noise: f64,
) -> Result<LinearisedPredictive> {
    let all = Subset::all(params.len());
    linearised(
        model,
        params,
        Covariance::Dense(cov),
        &all,
        batch,
        obs_noise,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curvature::{FnOutputModel, OutputLikelihood};
    use langevin_core::chain_rng;
    use langevin_core::rng::fill_standard_normal;

    /// Two outputs per example, linear in θ (3 parameters): the linearised
    /// predictive is exact, so Monte Carlo over Gaussian draws must agree.
    fn model() -> impl OutputModel<Batch = [f64]> {
        FnOutputModel::new(
            2,
            OutputLikelihood::Gaussian { variance: 1.0 },
            |t: &[f64], xs: &[f64]| {
                let mut out = Vec::new();
                let mut jac = Vec::new();
                for &x in xs {
                    out.push(t[0] * x + t[1]);
                    out.push(t[2] * x * x - t[1]);
                    jac.extend([x, 1.0, 0.0]);
                    jac.extend([0.0, -1.0, x * x]);
                }
                (out, jac)
            },
        )
        .unwrap()
    }

    #[test]
    fn linearised_matches_monte_carlo_for_a_linear_model() {
        let m = model();
        let mu = Params::from_vec(vec![0.5, -1.0, 2.0]);
        // Σ = L Lᵀ
        let l = [1.0, 0.0, 0.0, 0.5, 0.8, 0.0, -0.3, 0.2, 0.6];
        let mut cov = vec![0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                cov[i * 3 + j] = (0..3).map(|k| l[i * 3 + k] * l[j * 3 + k]).sum();
            }
        }
        let xs = [0.5, -1.5];
        let lin = linearised_dense(&m, &mu, &cov, &xs[..], 0.1).unwrap();
        let mut rng = chain_rng(3, 0);
        let mut z = vec![0.0; 3];
        let samples: Vec<Params> = (0..20_000)
            .map(|_| {
                fill_standard_normal(&mut rng, &mut z);
                let v: Vec<f64> = (0..3)
                    .map(|i| mu.values()[i] + (0..3).map(|k| l[i * 3 + k] * z[k]).sum::<f64>())
                    .collect();
                Params::from_vec(v)
            })
            .collect();
        let mc = monte_carlo(&samples, |p| Ok(m.forward(p, &xs[..])?.0)).unwrap();
        let var = lin.variances();
        for r in 0..4 {
            let sd = (var[r] - 0.1).sqrt();
            assert!((mc.mean[r] - lin.mean[r]).abs() < 5.0 * sd / 141.0);
            assert!((mc.var[r] + 0.1 - var[r]).abs() < 5.0 * sd * sd * (2.0f64 / 20_000.0).sqrt());
        }
        // Diagonal covariance = dense covariance with those variances.
        let v = [cov[0], cov[4], cov[8]];
        let dense_diag = [v[0], 0.0, 0.0, 0.0, v[1], 0.0, 0.0, 0.0, v[2]];
        let a = linearised_diag(&m, &mu, &v, &xs[..], 0.0).unwrap();
        let b = linearised_dense(&m, &mu, &dense_diag, &xs[..], 0.0).unwrap();
        for (x, y) in a.cov.iter().zip(&b.cov) {
            assert!((x - y).abs() < 1e-12);
        }
        assert!(linearised_diag(&m, &mu, &v[..2], &xs[..], 0.0).is_err());
        // An operator v ↦ Σ v gives the dense result.
        let op = |v: &[f64]| -> Result<Vec<f64>> {
            Ok((0..3)
                .map(|i| (0..3).map(|j| cov[i * 3 + j] * v[j]).sum())
                .collect())
        };
        let all = Subset::all(3);
        let c = linearised(&m, &mu, Covariance::Operator(&op), &all, &xs[..], 0.1).unwrap();
        for (x, y) in c.cov.iter().zip(&lin.cov) {
            assert!((x - y).abs() < 1e-12);
        }
        assert!(linearised_diag(&m, &mu, &v, &xs[..], -1.0).is_err());
    }

    #[test]
    fn mc_log_predictive_is_a_log_mean_exp() {
        let samples = vec![Params::from_vec(vec![0.0]), Params::from_vec(vec![1.0])];
        let lp = mc_log_predictive(&samples, |p| {
            Ok(vec![-p.values()[0], -1000.0 - p.values()[0]])
        })
        .unwrap();
        assert!((lp[0] - (0.5 * (1.0 + (-1.0f64).exp())).ln()).abs() < 1e-12);
        assert!((lp[1] - (-1000.0 + (0.5 * (1.0 + (-1.0f64).exp())).ln())).abs() < 1e-9);
        assert!(monte_carlo(&[], |_| Ok(vec![])).is_err());
    }
}
