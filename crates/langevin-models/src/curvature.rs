//! A [`Model`] as the curvature methods see it: per-example log likelihoods
//! (empirical Fisher, EKF) and the network output with its likelihood (GGN),
//! both in f64 through candle's autograd.

use candle_core::{DType, Tensor, D};
use langevin::curvature::{
    CandleOutputModel, CandlePerExample, ModelJacobian, OutputLikelihood, OutputModel,
};
use langevin_core::Params;

use crate::model::{Batch, Model, ModelKind, Noise, Task};

/// Kronecker factors (KFAC) of the GGN, for `langevin::laplace::KronLaplace`.
pub use crate::kron::{kron_model, ModelKron};

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
    /// The hand-written MLP (f64), whose GGN-vector products need no
    /// autograd ([`crate::MlpGgn`]); `None` for the other model kinds.
    mlp: Option<crate::MlpDensity>,
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
    let mlp = (spec.kind == ModelKind::Mlp)
        .then(|| crate::MlpDensity::for_model(model, DType::F64).ok())
        .flatten();
    ModelOutputs {
        net: CandleOutputModel::new(lik, f).with_dtype(DType::F64),
        log_noise,
        mlp,
    }
}

impl ModelOutputs {
    /// For an MLP, the GGN at `params` on `batch` as an operator that keeps
    /// the forward pass for many products ([`crate::MlpGgn`]; the same
    /// products as [`OutputModel::ggnvp`]); `None` for the other models.
    pub fn mlp_ggn(
        &self,
        params: &Params,
        batch: &Batch,
    ) -> Option<langevin_core::Result<crate::MlpGgn>> {
        self.mlp.as_ref().map(|d| d.ggn_operator(params, batch))
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

    /// The network's Jacobian-free product ([`CandleOutputModel`]'s; for an
    /// MLP the hand-written [`crate::MlpGgn`], no autograd). With a
    /// learned noise scale the network part is scaled by `1/σ²` (the network
    /// output has unit variance there and does not depend on `log σ`) and the
    /// `log σ` output adds `2 n v_σ` (its Hessian is block-diagonal).
    fn ggnvp(
        &self,
        params: &Params,
        batch: &Batch,
        v: &[f64],
    ) -> langevin_core::Result<Option<Vec<f64>>> {
        if let Some(mlp) = &self.mlp {
            // The hand-written MLP: the same product without autograd (its
            // learned noise scale included).
            return mlp.ggnvp(params, batch, v).map(Some);
        }
        let Some(mut gv) = self.net.ggnvp(params, batch, v)? else {
            return Ok(None);
        };
        if let Some(ix) = self.log_noise {
            let n = batch.x.dim(0)? as f64;
            let inv_var = (-2.0 * params.values()[ix]).exp();
            gv.iter_mut().for_each(|g| *g *= inv_var);
            gv[ix] += 2.0 * n * v[ix];
        }
        Ok(Some(gv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use langevin::curvature::{ggnvp, ggnvp_via_jacobian};
    use langevin_core::chain_rng;

    use crate::model::ModelSpec;

    /// The Jacobian-free product equals the one through the Jacobian, with a
    /// learned noise scale (linear, MLP regression) and without (softmax).
    #[test]
    fn ggnvp_matches_the_jacobian_path() {
        langevin_core::candle_density::enable_double_backward();
        let (n, d) = (7, 3);
        let x: Vec<f64> = (0..n * d)
            .map(|i| ((i * 7 % 11) as f64 - 5.0) / 4.0)
            .collect();
        let cases = [
            (ModelKind::Linear, Task::Regression, vec![], Noise::Learned),
            (
                ModelKind::Linear,
                Task::Regression,
                vec![],
                Noise::Fixed(0.5),
            ),
            (ModelKind::Mlp, Task::Regression, vec![4], Noise::Learned),
            (
                ModelKind::Softmax,
                Task::Classification { n_classes: 3 },
                vec![],
                Noise::Learned,
            ),
        ];
        for (kind, task, hidden, noise) in cases {
            let spec = ModelSpec {
                kind,
                task,
                feature_names: (0..d).map(|j| format!("x{j}")).collect(),
                hidden,
                prior_sd: 1.0,
                noise,
                n_train: n,
            };
            let model = Model::new(spec).unwrap();
            let y: Vec<f64> = match task {
                Task::Regression => (0..n).map(|i| i as f64 * 0.3 - 1.0).collect(),
                _ => (0..n).map(|i| (i % 3) as f64).collect(),
            };
            let batch = model.batch(&x, &y, DType::F64, &Device::Cpu).unwrap();
            let mut params = model.init(&mut chain_rng(1, 0));
            if let Some(r) = model.layout().range("log_noise_sd") {
                params.values_mut()[r.start] = -0.4;
            }
            let v: Vec<f64> = (0..params.len()).map(|i| (i as f64 * 0.7).sin()).collect();
            let om = output_model(&model);
            let fast = ggnvp(&om, &params, &batch, &v).unwrap();
            let slow = ggnvp_via_jacobian(&om, &params, &batch, &v).unwrap();
            let scale = slow.iter().map(|s| s.abs()).fold(0.0, f64::max);
            for (a, b) in fast.iter().zip(&slow) {
                assert!(
                    (a - b).abs() < 1e-10 * scale,
                    "{kind:?}: {fast:?} vs {slow:?}"
                );
            }
        }
    }

    /// The MLP's hand-written GGN-vector product equals candle's
    /// Jacobian-free one and the one through the Jacobian to 1e-10 (f64), on
    /// random vectors: softmax with two hidden layers, Gaussian with a fixed
    /// and with a learned noise scale; an operator reused for many products
    /// gives what fresh ones give.
    #[test]
    fn mlp_ggnvp_matches_candle() {
        langevin_core::candle_density::enable_double_backward();
        let (n, d) = (13, 5);
        let mut rng = chain_rng(3, 1);
        let mut x = vec![0.0; n * d];
        langevin_core::rng::fill_standard_normal(&mut rng, &mut x);
        let cases = [
            (
                Task::Classification { n_classes: 4 },
                vec![6, 5],
                Noise::Learned,
            ),
            (Task::Regression, vec![7], Noise::Fixed(0.6)),
            (Task::Regression, vec![4, 3], Noise::Learned),
        ];
        for (task, hidden, noise) in cases {
            let spec = ModelSpec {
                kind: ModelKind::Mlp,
                task,
                feature_names: (0..d).map(|j| format!("x{j}")).collect(),
                hidden,
                prior_sd: 1.0,
                noise,
                n_train: n,
            };
            let model = Model::new(spec).unwrap();
            let y: Vec<f64> = match task {
                Task::Regression => (0..n).map(|i| (i as f64 * 0.9).sin()).collect(),
                _ => (0..n).map(|i| (i % 4) as f64).collect(),
            };
            let batch = model.batch(&x, &y, DType::F64, &Device::Cpu).unwrap();
            let mut params = model.init(&mut chain_rng(5, 0));
            // Non-zero biases; a learned noise sd away from 1.
            let mut jitter = vec![0.0; params.len()];
            langevin_core::rng::fill_standard_normal(&mut rng, &mut jitter);
            for (p, j) in params.values_mut().iter_mut().zip(&jitter) {
                *p += 0.3 * j;
            }
            if let Some(r) = model.layout().range("log_noise_sd") {
                params.values_mut()[r.start] = -0.4;
            }
            let om = output_model(&model);
            assert!(om.mlp.is_some());
            let candle = ModelOutputs {
                net: output_model(&model).net,
                log_noise: om.log_noise,
                mlp: None,
            };
            let op = om.mlp_ggn(&params, &batch).unwrap().unwrap();
            assert_eq!((op.dim(), op.rows()), (params.len(), n));
            for _ in 0..3 {
                let mut v = vec![0.0; params.len()];
                langevin_core::rng::fill_standard_normal(&mut rng, &mut v);
                let fast = ggnvp(&om, &params, &batch, &v).unwrap();
                let slow = ggnvp(&candle, &params, &batch, &v).unwrap();
                let jac = ggnvp_via_jacobian(&candle, &params, &batch, &v).unwrap();
                let mut reused = vec![f64::NAN; v.len()];
                op.apply(&v, &mut reused).unwrap();
                let scale = slow.iter().map(|s| s.abs()).fold(1e-300, f64::max);
                for (((a, b), c), r) in fast.iter().zip(&slow).zip(&jac).zip(&reused) {
                    assert!((a - b).abs() < 1e-10 * scale, "{task:?}: {a} vs {b}");
                    assert!((a - c).abs() < 1e-10 * scale, "{task:?}: {a} vs {c}");
                    assert_eq!(a, r);
                }
            }
            // Wrong lengths are errors.
            let mut out = vec![0.0; params.len()];
            assert!(op.apply(&out.clone()[1..], &mut out).is_err());
        }
    }
}
