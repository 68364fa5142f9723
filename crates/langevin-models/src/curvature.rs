//! A [`Model`] as the curvature methods see it: per-example log likelihoods
//! (empirical Fisher, EKF) and the network output with its likelihood (GGN),
//! both in f64 through candle's autograd.

use candle_core::{DType, Tensor, D};
use langevin::curvature::{
    CandleOutputModel, CandlePerExample, ModelJacobian, OutputLikelihood, OutputModel,
};
use langevin_core::Params;

use crate::model::{Batch, Model, ModelKind, Noise, Task};

/// A candle function of the parameter tensors and a batch.
pub type TensorFn = Box<dyn Fn(&[Tensor], &Batch) -> candle_core::Result<Tensor> + Send + Sync>;

/// Per-example log likelihoods `log p(yᵢ | xᵢ, θ)` (no prior), f64.
pub fn per_example_loglik(model: &Model) -> CandlePerExample<Batch, TensorFn> {
    let m = model.clone();
    let spec = model.spec().clone();
    let learned = model.layout().index_of("log_noise_sd").is_some();
    let f: TensorFn = Box::new(move |ts: &[Tensor], b: &Batch| {
        let out = m.forward(ts, &b.x)?;
        let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
        match (spec.kind, spec.task) {
            (_, Task::Regression) => {
                let r2 = (&b.y - &out)?.sqr()?;
                if learned {
                    let log_s = ts.last().ok_or_else(|| {
                        candle_core::Error::Msg("layout has no log_noise_sd".into())
                    })?;
                    let inv_var = (log_s * -2.0)?.exp()?;
                    (r2.broadcast_mul(&inv_var)? * -0.5)?
                        .broadcast_sub(log_s)?
                        .affine(1.0, -half_log_2pi)
                } else {
                    let s = match spec.noise {
                        Noise::Fixed(s) => s,
                        Noise::Learned => 1.0,
                    };
                    r2.affine(-0.5 / (s * s), -s.ln() - half_log_2pi)
                }
            }
            (ModelKind::Logistic, _) => {
                let softplus = (out.relu()? + (out.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
                (&b.y * &out)? - softplus
            }
            _ => {
                // log softmax = out − logsumexp(out) (max-shifted).
                let mx = out.max_keepdim(D::Minus1)?;
                let shifted = out.broadcast_sub(&mx)?;
                let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
                (shifted.broadcast_sub(&lse)? * &b.y)?.sum(1)
            }
        }
    });
    CandlePerExample::new(f).with_dtype(DType::F64)
}

/// The network output with its likelihood, for the GGN. A learned noise
/// scale adds the output `log σ` (the parameter itself) with the Fisher
/// information `diag(1/σ², 2)` of `N(f, σ²)` in `(f, log σ)` as its Hessian.
pub struct ModelOutputs {
    net: CandleOutputModel<Batch, TensorFn>,
    /// Flat index of `log_noise_sd` when the noise is learned.
    log_noise: Option<usize>,
}

/// The model's network output with its likelihood (see [`ModelOutputs`]).
pub fn output_model(model: &Model) -> ModelOutputs {
    let m = model.clone();
    let spec = model.spec();
    let log_noise = model.layout().range("log_noise_sd").map(|r| r.start);
    let lik = match spec.task {
        Task::Regression => {
            let s = match spec.noise {
                Noise::Fixed(s) => s,
                Noise::Learned => 1.0,
            };
            OutputLikelihood::Gaussian { variance: s * s }
        }
        Task::Classification { .. } if spec.kind == ModelKind::Logistic => {
            OutputLikelihood::Bernoulli
        }
        Task::Classification { .. } => OutputLikelihood::Categorical,
    };
    let f: TensorFn = Box::new(move |ts: &[Tensor], b: &Batch| m.forward(ts, &b.x));
    ModelOutputs {
        net: CandleOutputModel::new(lik, f).with_dtype(DType::F64),
        log_noise,
    }
}

impl OutputModel for ModelOutputs {
    type Batch = Batch;

    fn forward(&self, params: &Params, batch: &Batch) -> langevin_core::Result<(Vec<f64>, usize)> {
        let j = self.forward_jacobian(params, batch)?;
        Ok((j.outputs, j.k))
    }

    fn forward_jacobian(
        &self,
        params: &Params,
        batch: &Batch,
    ) -> langevin_core::Result<ModelJacobian> {
        let j = self.net.forward_jacobian(params, batch)?;
        let Some(ix) = self.log_noise else {
            return Ok(j);
        };
        // Outputs (f, log σ) per example; d log σ / dθ = e_ix.
        let (n, d) = (j.n, j.dim);
        let rho = params.values()[ix];
        let mut outputs = Vec::with_capacity(2 * n);
        let mut jac = vec![0.0; 2 * n * d];
        for i in 0..n {
            outputs.push(j.outputs[i]);
            outputs.push(rho);
            jac[2 * i * d..(2 * i + 1) * d].copy_from_slice(&j.jac[i * d..(i + 1) * d]);
            jac[(2 * i + 1) * d + ix] = 1.0;
        }
        Ok(ModelJacobian {
            n,
            k: 2,
            dim: d,
            outputs,
            jac,
        })
    }

    fn output_hessians(
        &self,
        jac: &ModelJacobian,
        batch: &Batch,
    ) -> langevin_core::Result<Vec<f64>> {
        if self.log_noise.is_none() {
            return self.net.output_hessians(jac, batch);
        }
        let mut h = vec![0.0; jac.n * 4];
        for i in 0..jac.n {
            let rho = jac.outputs[2 * i + 1];
            h[4 * i] = (-2.0 * rho).exp();
            h[4 * i + 3] = 2.0;
        }
        Ok(h)
    }
}
