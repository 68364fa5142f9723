//! Curvature utilities: per-example gradients, Hessian-, Fisher- and
//! GGN-vector products, dense and diagonal empirical Fisher and GGN, and
//! preconditioned conjugate gradients.
//!
//! Two traits describe what these need beyond a scalar [`LogDensity`]:
//!
//! * [`PerExampleLogLik`]: per-example log-likelihood (or per-example log
//!   posterior) values `ℓᵢ(θ)` and their gradients `gᵢ = ∇ℓᵢ(θ)`. Built from
//!   an f64 closure ([`FnPerExample`]) or a candle closure returning the
//!   vector of the `n` per-example values ([`CandlePerExample`]).
//! * [`OutputModel`]: a model `f(θ, x) ∈ ℝᵏ` per example, its Jacobian
//!   `Jᵢ = ∂f(θ, xᵢ)/∂θ`, and the Hessian `Hᵢ` of the negative outer log
//!   likelihood `−log p(yᵢ | f)` with respect to the output. Built from an
//!   f64 closure returning outputs and Jacobian ([`FnOutputModel`]) or a candle
//!   closure returning the `n × k` outputs ([`CandleOutputModel`]), with an
//!   [`OutputLikelihood`] (Gaussian, Bernoulli-logit, categorical-softmax: for
//!   these canonical links `Hᵢ` does not depend on `yᵢ`).
//!
//! Definitions (sums over the examples of the batch, not means):
//!
//! ```text
//! empirical Fisher  F = Σᵢ gᵢ gᵢᵀ          F v = Σᵢ gᵢ (gᵢᵀ v)
//! GGN               G = Σᵢ Jᵢᵀ Hᵢ Jᵢ       G v = Σᵢ Jᵢᵀ Hᵢ (Jᵢ v)
//! Hessian-vector    H v ≈ (∇ℓ(θ + h v) − ∇ℓ(θ − h v)) / (2h)
//! ```
//!
//! **Hessian-vector products** ([`hvp`], [`hessian`]) use the density's
//! exact product when it has one ([`LogDensity::hvp_exact`]): a
//! [`CandleDensity`](langevin_core::CandleDensity) computes `∇(∇ℓ · v)` by
//! double backward when candle keeps gradient graphs
//! (`CANDLE_GRAD_DO_NOT_DETACH=1`, read once per thread; see
//! [`langevin_core::candle_density`] and
//! [`enable_double_backward`](langevin_core::candle_density::enable_double_backward)),
//! exact up to the rounding of the model's dtype (measured 3e-7 to 5e-7
//! relative for f32, 1e-15 for f64 models; BENCHMARKS.md); the hand-written
//! `langevin_models::MlpDensity` has a Pearlmutter R-operator (f64, always
//! available). Otherwise (closures, candle without the variable) they fall
//! back to central differences of gradients ([`hvp_finite_difference`])
//! with step `h = 1e-5 · max(1, ‖θ‖∞) / ‖v‖∞`: exact up to rounding for
//! quadratic log densities, about 1e-10 to 1e-8 relative for smooth f64
//! models, but only about 1e-3 to 1e-2 relative for f32 gradients (rounding
//! `ε_f32 ‖∇ℓ‖ / h`), and wrong by O(1) when a step crosses a ReLU kink
//! (measured 4.5 relative on a 5 699-parameter ReLU MLP in f64).
//! [`hvp_with_method`] reports which path ran.
//!
//! **GGN-vector products** ([`ggnvp`]) of a [`CandleOutputModel`] never form
//! the Jacobian: `J v` comes from the double-vjp trick
//! (`J v = ∂/∂u [(Jᵀu) · v]`, two backward passes, with double backward
//! enabled) or else from one backward pass per output row, and `Jᵀ (H J v)`
//! from one more backward pass, so memory is `O(d + n k)` instead of the
//! `n k d` of [`OutputModel::forward_jacobian`] (BENCHMARKS.md). Other
//! models go through the Jacobian.
//!
//! **Per-example gradients** of a candle model: one forward pass over the
//! batch, then one backward pass per example through that shared graph
//! (`ℓᵢ.backward()`). For a 64-example batch on a small MLP this costs a few
//! milliseconds (see the test `candle_per_example_grads_are_fast_enough`);
//! the design notes measured a loop of per-example backward passes on candle
//! to beat PyTorch's `vmap` on one thread. Jacobians of a candle
//! [`CandleOutputModel`] are computed the same way, one backward per output.
//!
//! **Conjugate gradients** ([`cg`]) are real-only: complex Hermitian systems
//! are not supported (the library's parameters are real).
//!
//! **Parameter subsets** ([`Subset`]): Laplace methods can restrict the
//! curvature to a list of named tensors (e.g. the last layer); the subset's
//! flat indices follow the ravel order of the layout.
#![allow(clippy::needless_range_loop)]

use std::marker::PhantomData;

use candle_core::{DType, Device, Tensor};
use langevin_core::candle_density::{
    double_backward_available, f64_to_tensor, grad_dot, params_to_vars, tensor_into_f64,
};
use langevin_core::{Error, LogDensity, ParamLayout, Params, Result};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------
// Per-example log likelihoods
// ---------------------------------------------------------------------------

/// Per-example values `ℓᵢ` and gradients `gᵢ` (row-major `n × dim`).
#[derive(Debug, Clone, PartialEq)]
pub struct PerExample {
    pub n: usize,
    pub dim: usize,
    pub values: Vec<f64>,
    pub grads: Vec<f64>,
}

impl PerExample {
    /// The gradient of example `i`.
    pub fn grad(&self, i: usize) -> &[f64] {
        &self.grads[i * self.dim..(i + 1) * self.dim]
    }

    /// Mean of the values.
    pub fn mean_value(&self) -> f64 {
        if self.n == 0 {
            return f64::NAN;
        }
        self.values.iter().sum::<f64>() / self.n as f64
    }

    /// Mean gradient `(1/n) Σᵢ gᵢ`.
    pub fn mean_grad(&self) -> Vec<f64> {
        let mut m = vec![0.0; self.dim];
        for i in 0..self.n {
            for (a, g) in m.iter_mut().zip(self.grad(i)) {
                *a += g;
            }
        }
        let inv = 1.0 / self.n.max(1) as f64;
        m.iter_mut().for_each(|a| *a *= inv);
        m
    }

    /// Error unless every value and gradient entry is finite.
    pub fn check_finite(&self, step: u64) -> Result<()> {
        let bad_grad = self.grads.iter().filter(|g| !g.is_finite()).count();
        if let Some(&v) = self.values.iter().find(|v| !v.is_finite()) {
            return Err(Error::NonFiniteLogDensity {
                step,
                value: v,
                bad_grad,
            });
        }
        if bad_grad > 0 {
            return Err(Error::NonFiniteLogDensity {
                step,
                value: self.mean_value(),
                bad_grad,
            });
        }
        Ok(())
    }

    fn validate(self, dim: usize) -> Result<Self> {
        if self.dim != dim {
            return Err(Error::DimensionMismatch {
                what: "per-example gradient dimension",
                expected: dim,
                got: self.dim,
            });
        }
        if self.values.len() != self.n {
            return Err(Error::DimensionMismatch {
                what: "per-example values",
                expected: self.n,
                got: self.values.len(),
            });
        }
        if self.grads.len() != self.n * dim {
            return Err(Error::DimensionMismatch {
                what: "per-example gradients (n × dim)",
                expected: self.n * dim,
                got: self.grads.len(),
            });
        }
        Ok(self)
    }
}

/// The diagonal empirical Fisher of one batch: `Σᵢ gᵢ ⊙ gᵢ` over its
/// examples, without the `n × dim` array of the `gᵢ` where the model can
/// avoid it ([`PerExampleLogLik::diag_fisher`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DiagFisherBatch {
    /// Number of examples.
    pub n: usize,
    /// Mean of the `ℓᵢ` (NaN for an empty batch).
    pub mean_value: f64,
    /// `Σᵢ gᵢ²`, full ravel order (length `dim`).
    pub sum_sq: Vec<f64>,
}

impl DiagFisherBatch {
    /// Error unless the mean value and every sum is finite: a non-finite
    /// `ℓᵢ` or gradient entry makes them non-finite.
    pub fn check_finite(&self, step: u64) -> Result<()> {
        let bad_grad = self.sum_sq.iter().filter(|g| !g.is_finite()).count();
        if bad_grad > 0 || !(self.n == 0 || self.mean_value.is_finite()) {
            return Err(Error::NonFiniteLogDensity {
                step,
                value: self.mean_value,
                bad_grad,
            });
        }
        Ok(())
    }
}

/// Per-example log-likelihood (or per-example log posterior) values and gradients.
pub trait PerExampleLogLik: Send + Sync {
    type Batch: ?Sized;
    /// `ℓᵢ(θ)` and `∇ℓᵢ(θ)` for every example of `batch`.
    fn per_example(&self, params: &Params, batch: &Self::Batch) -> Result<PerExample>;

    /// `Σᵢ ∇ℓᵢ ⊙ ∇ℓᵢ` over the examples of `batch`, with their number and
    /// the mean `ℓᵢ`. The default squares the rows of
    /// [`per_example`](Self::per_example); a model that can sum the squares
    /// without forming the `n × dim` array (`langevin_models::MlpDensity`:
    /// two matrix products per layer) overrides it. Used by
    /// [`DiagFisherLaplace`](crate::laplace::DiagFisherLaplace).
    fn diag_fisher(&self, params: &Params, batch: &Self::Batch) -> Result<DiagFisherBatch> {
        let pe = self.per_example(params, batch)?.validate(params.len())?;
        let mut sum_sq = vec![0.0; pe.dim];
        for i in 0..pe.n {
            for (a, g) in sum_sq.iter_mut().zip(pe.grad(i)) {
                *a += g * g;
            }
        }
        // A non-finite ℓᵢ or gradient entry makes the mean or a sum
        // non-finite, which `DiagFisherBatch::check_finite` reports.
        Ok(DiagFisherBatch {
            n: pe.n,
            mean_value: pe.mean_value(),
            sum_sq,
        })
    }
}

impl<M: PerExampleLogLik + ?Sized> PerExampleLogLik for &M {
    type Batch = M::Batch;
    fn per_example(&self, params: &Params, batch: &Self::Batch) -> Result<PerExample> {
        (**self).per_example(params, batch)
    }
    fn diag_fisher(&self, params: &Params, batch: &Self::Batch) -> Result<DiagFisherBatch> {
        (**self).diag_fisher(params, batch)
    }
}

/// Per-example terms from a closure `f(theta, batch) -> (values, grads)`,
/// with `grads` row-major `n × dim`.
pub struct FnPerExample<B: ?Sized, F> {
    f: F,
    _b: PhantomData<fn(&B)>,
}

impl<B: ?Sized, F> FnPerExample<B, F>
where
    F: Fn(&[f64], &B) -> (Vec<f64>, Vec<f64>) + Send + Sync,
{
    pub fn new(f: F) -> Self {
        Self { f, _b: PhantomData }
    }
}

impl<B: ?Sized, F> PerExampleLogLik for FnPerExample<B, F>
where
    F: Fn(&[f64], &B) -> (Vec<f64>, Vec<f64>) + Send + Sync,
{
    type Batch = B;
    fn per_example(&self, params: &Params, batch: &B) -> Result<PerExample> {
        let (values, grads) = (self.f)(params.values(), batch);
        PerExample {
            n: values.len(),
            dim: params.len(),
            values,
            grads,
        }
        .validate(params.len())
    }
}

/// Per-example terms of a candle model: `f(tensors, batch)` returns a tensor
/// of `n` per-example values (shape `[n]`); gradients by one backward pass
/// per example through the shared forward graph.
pub struct CandlePerExample<B: ?Sized, F> {
    f: F,
    dtype: DType,
    device: Device,
    _b: PhantomData<fn(&B)>,
}

impl<B: ?Sized, F> CandlePerExample<B, F>
where
    F: Fn(&[Tensor], &B) -> candle_core::Result<Tensor> + Send + Sync,
{
    /// An f32 model on the CPU.
    pub fn new(f: F) -> Self {
        Self {
            f,
            dtype: DType::F32,
            device: Device::Cpu,
            _b: PhantomData,
        }
    }

    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    pub fn with_device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }
}

impl<B: ?Sized, F> PerExampleLogLik for CandlePerExample<B, F>
where
    F: Fn(&[Tensor], &B) -> candle_core::Result<Tensor> + Send + Sync,
{
    type Batch = B;
    fn per_example(&self, params: &Params, batch: &B) -> Result<PerExample> {
        let vars = params_to_vars(params, self.dtype, &self.device)?;
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = (self.f)(&ts, batch)?.flatten_all()?;
        let n = out.elem_count();
        let d = params.len();
        let mut values = vec![0.0; n];
        tensor_into_f64(&out, &mut values)?;
        let mut grads = vec![0.0; n * d];
        for i in 0..n {
            let gs = out.get(i)?.backward()?;
            write_var_grads(params.layout(), &vars, &gs, &mut grads[i * d..(i + 1) * d])?;
        }
        PerExample {
            n,
            dim: d,
            values,
            grads,
        }
        .validate(d)
    }
}

fn write_var_grads(
    layout: &ParamLayout,
    vars: &[candle_core::Var],
    gs: &candle_core::backprop::GradStore,
    out: &mut [f64],
) -> Result<()> {
    for (k, (spec, var)) in layout.specs().iter().zip(vars).enumerate() {
        let off = layout.offset(k);
        let dst = &mut out[off..off + spec.numel()];
        match gs.get(var.as_tensor()) {
            Some(g) => tensor_into_f64(g, dst)?,
            None => dst.fill(0.0),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Model outputs
// ---------------------------------------------------------------------------

/// The outer likelihood `p(y | f)` of a model output `f ∈ ℝᵏ`, with a known
/// Hessian of `−log p(y | f)` in `f` (independent of `y` for these links).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum OutputLikelihood {
    /// `y ~ N(f, variance I)`: `H = I / variance`.
    Gaussian { variance: f64 },
    /// `y ~ Bernoulli(sigmoid(f))`, `k = 1`: `H = p (1 − p)`.
    Bernoulli,
    /// `y ~ Categorical(softmax(f))`: `H = diag(p) − p pᵀ`.
    Categorical,
}

impl OutputLikelihood {
    /// Write the `k × k` Hessian of `−log p(y | f)` at `f` into `out`.
    pub fn hessian(&self, f: &[f64], out: &mut [f64]) -> Result<()> {
        let k = f.len();
        out.fill(0.0);
        match *self {
            OutputLikelihood::Gaussian { variance } => {
                if !(variance.is_finite() && variance > 0.0) {
                    return Err(Error::config(
                        "variance",
                        format!("must be > 0, got {variance}"),
                    ));
                }
                for j in 0..k {
                    out[j * k + j] = 1.0 / variance;
                }
            }
            OutputLikelihood::Bernoulli => {
                if k != 1 {
                    return Err(Error::DimensionMismatch {
                        what: "Bernoulli output size",
                        expected: 1,
                        got: k,
                    });
                }
                let p = 1.0 / (1.0 + (-f[0]).exp());
                out[0] = p * (1.0 - p);
            }
            OutputLikelihood::Categorical => {
                let mx = f.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = f.iter().map(|x| (x - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for a in 0..k {
                    let pa = e[a] / z;
                    for b in 0..k {
                        let pb = e[b] / z;
                        out[a * k + b] = if a == b { pa - pa * pb } else { -pa * pb };
                    }
                }
            }
        }
        Ok(())
    }
}

/// Outputs `f(θ, xᵢ)` (row-major `n × k`) and Jacobian (row-major `(n·k) × dim`,
/// row `i·k + j` is `∂fᵢⱼ/∂θ`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelJacobian {
    pub n: usize,
    pub k: usize,
    pub dim: usize,
    pub outputs: Vec<f64>,
    pub jac: Vec<f64>,
}

impl ModelJacobian {
    /// Rows of the Jacobian of example `i` (`k × dim`).
    pub fn block(&self, i: usize) -> &[f64] {
        &self.jac[i * self.k * self.dim..(i + 1) * self.k * self.dim]
    }

    fn validate(self) -> Result<Self> {
        if self.outputs.len() != self.n * self.k {
            return Err(Error::DimensionMismatch {
                what: "model outputs (n × k)",
                expected: self.n * self.k,
                got: self.outputs.len(),
            });
        }
        if self.jac.len() != self.n * self.k * self.dim {
            return Err(Error::DimensionMismatch {
                what: "model Jacobian (n·k × dim)",
                expected: self.n * self.k * self.dim,
                got: self.jac.len(),
            });
        }
        if self.outputs.iter().chain(&self.jac).any(|x| !x.is_finite()) {
            return Err(Error::Density("non-finite model output or Jacobian".into()));
        }
        Ok(self)
    }
}

/// A model with per-example outputs, their Jacobian, and the Hessian of the
/// negative outer log likelihood in the outputs.
pub trait OutputModel: Send + Sync {
    type Batch: ?Sized;
    /// Outputs (row-major `n × k`) and `k`.
    fn forward(&self, params: &Params, batch: &Self::Batch) -> Result<(Vec<f64>, usize)>;
    /// Outputs and Jacobian.
    fn forward_jacobian(&self, params: &Params, batch: &Self::Batch) -> Result<ModelJacobian>;
    /// Per-example `k × k` Hessians of `−log p(yᵢ | fᵢ)` at the outputs of `jac`
    /// (concatenated, `n·k·k` values).
    fn output_hessians(&self, jac: &ModelJacobian, batch: &Self::Batch) -> Result<Vec<f64>>;

    /// `Σᵢ Jᵢᵀ Hᵢ (Jᵢ v)` without forming the Jacobian, where the model can
    /// (memory `O(dim + n k)`), or `Ok(None)` (the default) to let [`ggnvp`]
    /// go through [`forward_jacobian`](Self::forward_jacobian).
    fn ggnvp(&self, params: &Params, batch: &Self::Batch, v: &[f64]) -> Result<Option<Vec<f64>>> {
        let _ = (params, batch, v);
        Ok(None)
    }
}

impl<M: OutputModel + ?Sized> OutputModel for &M {
    type Batch = M::Batch;
    fn forward(&self, params: &Params, batch: &Self::Batch) -> Result<(Vec<f64>, usize)> {
        (**self).forward(params, batch)
    }
    fn forward_jacobian(&self, params: &Params, batch: &Self::Batch) -> Result<ModelJacobian> {
        (**self).forward_jacobian(params, batch)
    }
    fn output_hessians(&self, jac: &ModelJacobian, batch: &Self::Batch) -> Result<Vec<f64>> {
        (**self).output_hessians(jac, batch)
    }
    fn ggnvp(&self, params: &Params, batch: &Self::Batch, v: &[f64]) -> Result<Option<Vec<f64>>> {
        (**self).ggnvp(params, batch, v)
    }
}

fn likelihood_hessians(lik: &OutputLikelihood, jac: &ModelJacobian) -> Result<Vec<f64>> {
    let k = jac.k;
    let mut out = vec![0.0; jac.n * k * k];
    for i in 0..jac.n {
        lik.hessian(
            &jac.outputs[i * k..(i + 1) * k],
            &mut out[i * k * k..(i + 1) * k * k],
        )?;
    }
    Ok(out)
}

/// A model from an f64 closure `f(theta, batch) -> (outputs n×k, jacobian (n·k)×dim)`.
pub struct FnOutputModel<B: ?Sized, F> {
    k: usize,
    likelihood: OutputLikelihood,
    f: F,
    _b: PhantomData<fn(&B)>,
}

impl<B: ?Sized, F> FnOutputModel<B, F>
where
    F: Fn(&[f64], &B) -> (Vec<f64>, Vec<f64>) + Send + Sync,
{
    /// `k` outputs per example.
    pub fn new(k: usize, likelihood: OutputLikelihood, f: F) -> Result<Self> {
        if k == 0 {
            return Err(Error::config("k", "a model needs at least one output"));
        }
        Ok(Self {
            k,
            likelihood,
            f,
            _b: PhantomData,
        })
    }
}

impl<B: ?Sized, F> OutputModel for FnOutputModel<B, F>
where
    F: Fn(&[f64], &B) -> (Vec<f64>, Vec<f64>) + Send + Sync,
{
    type Batch = B;
    fn forward(&self, params: &Params, batch: &B) -> Result<(Vec<f64>, usize)> {
        let j = self.forward_jacobian(params, batch)?;
        Ok((j.outputs, j.k))
    }
    fn forward_jacobian(&self, params: &Params, batch: &B) -> Result<ModelJacobian> {
        let (outputs, jac) = (self.f)(params.values(), batch);
        if outputs.len() % self.k != 0 {
            return Err(Error::DimensionMismatch {
                what: "model outputs (a multiple of k)",
                expected: self.k,
                got: outputs.len(),
            });
        }
        ModelJacobian {
            n: outputs.len() / self.k,
            k: self.k,
            dim: params.len(),
            outputs,
            jac,
        }
        .validate()
    }
    fn output_hessians(&self, jac: &ModelJacobian, _batch: &B) -> Result<Vec<f64>> {
        likelihood_hessians(&self.likelihood, jac)
    }
}

/// A candle model `f(tensors, batch)` returning outputs of shape `[n, k]`
/// (or `[n]` for `k = 1`); the Jacobian takes one backward pass per output.
pub struct CandleOutputModel<B: ?Sized, F> {
    likelihood: OutputLikelihood,
    f: F,
    dtype: DType,
    device: Device,
    _b: PhantomData<fn(&B)>,
}

impl<B: ?Sized, F> CandleOutputModel<B, F>
where
    F: Fn(&[Tensor], &B) -> candle_core::Result<Tensor> + Send + Sync,
{
    /// An f32 model on the CPU.
    pub fn new(likelihood: OutputLikelihood, f: F) -> Self {
        Self {
            likelihood,
            f,
            dtype: DType::F32,
            device: Device::Cpu,
            _b: PhantomData,
        }
    }

    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    pub fn with_device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    fn nk(out: &Tensor) -> Result<(usize, usize)> {
        match out.dims() {
            [n] => Ok((*n, 1)),
            [n, k] => Ok((*n, *k)),
            other => Err(Error::Density(format!(
                "model output must have shape [n] or [n, k], got {other:?}"
            ))),
        }
    }
}

impl<B: ?Sized, F> OutputModel for CandleOutputModel<B, F>
where
    F: Fn(&[Tensor], &B) -> candle_core::Result<Tensor> + Send + Sync,
{
    type Batch = B;
    fn forward(&self, params: &Params, batch: &B) -> Result<(Vec<f64>, usize)> {
        let vars = params_to_vars(params, self.dtype, &self.device)?;
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = (self.f)(&ts, batch)?;
        let (n, k) = Self::nk(&out)?;
        let mut o = vec![0.0; n * k];
        tensor_into_f64(&out, &mut o)?;
        Ok((o, k))
    }
    fn forward_jacobian(&self, params: &Params, batch: &B) -> Result<ModelJacobian> {
        let vars = params_to_vars(params, self.dtype, &self.device)?;
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = (self.f)(&ts, batch)?;
        let (n, k) = Self::nk(&out)?;
        let flat = out.flatten_all()?;
        let d = params.len();
        let mut outputs = vec![0.0; n * k];
        tensor_into_f64(&flat, &mut outputs)?;
        let mut jac = vec![0.0; n * k * d];
        for r in 0..n * k {
            let gs = flat.get(r)?.backward()?;
            write_var_grads(params.layout(), &vars, &gs, &mut jac[r * d..(r + 1) * d])?;
        }
        ModelJacobian {
            n,
            k,
            dim: d,
            outputs,
            jac,
        }
        .validate()
    }
    fn output_hessians(&self, jac: &ModelJacobian, _batch: &B) -> Result<Vec<f64>> {
        likelihood_hessians(&self.likelihood, jac)
    }

    /// `Jᵀ H (J v)` with vector-Jacobian products only. `J v` by the
    /// double-vjp trick when double backward is available on this thread
    /// (`J v = ∂/∂u [(Jᵀ u) · v]` at `u = 0`: two backward passes), else by
    /// one backward pass per output row (each dotted with `v` and dropped);
    /// then `Jᵀ w` by one backward pass. Never forms the `n k × dim`
    /// Jacobian.
    fn ggnvp(&self, params: &Params, batch: &B, v: &[f64]) -> Result<Option<Vec<f64>>> {
        check_len("vector", params.len(), v.len())?;
        let layout = params.layout();
        let vars = params_to_vars(params, self.dtype, &self.device)?;
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = (self.f)(&ts, batch)?;
        let (n, k) = Self::nk(&out)?;
        let flat = out.flatten_all()?;
        let d = params.len();
        let mut outputs = vec![0.0; n * k];
        tensor_into_f64(&flat, &mut outputs)?;
        if outputs.iter().any(|x| !x.is_finite()) {
            return Err(Error::Density("non-finite model output".into()));
        }
        let mut jv = vec![0.0; n * k];
        if double_backward_available() {
            let u = candle_core::Var::zeros(n * k, self.dtype, &self.device)?;
            let jtu = flat.mul(u.as_tensor())?.sum_all()?.backward()?;
            if let Some(s) = grad_dot(layout, &vars, &jtu, v)? {
                if let Some(t) = s.backward()?.get(u.as_tensor()) {
                    tensor_into_f64(t, &mut jv)?;
                }
            }
        } else {
            let mut row = vec![0.0; d];
            for (r, x) in jv.iter_mut().enumerate() {
                let gs = flat.get(r)?.backward()?;
                write_var_grads(layout, &vars, &gs, &mut row)?;
                *x = dot(&row, v);
            }
        }
        let mut w = vec![0.0; n * k];
        let mut h = vec![0.0; k * k];
        for i in 0..n {
            self.likelihood
                .hessian(&outputs[i * k..(i + 1) * k], &mut h)?;
            for a in 0..k {
                w[i * k + a] = (0..k).map(|b| h[a * k + b] * jv[i * k + b]).sum();
            }
        }
        let wt = f64_to_tensor(&w, &[n * k], self.dtype, &self.device)?;
        let gs = flat.mul(&wt)?.sum_all()?.backward()?;
        let mut res = vec![0.0; d];
        write_var_grads(layout, &vars, &gs, &mut res)?;
        if res.iter().any(|x| !x.is_finite()) {
            return Err(Error::Density("non-finite GGN-vector product".into()));
        }
        Ok(Some(res))
    }
}

// ---------------------------------------------------------------------------
// Parameter subsets
// ---------------------------------------------------------------------------

/// A subset of the flat parameter indices (ravel order), e.g. the last layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subset {
    indices: Vec<usize>,
    full_dim: usize,
}

impl Subset {
    /// Every parameter.
    pub fn all(dim: usize) -> Self {
        Self {
            indices: (0..dim).collect(),
            full_dim: dim,
        }
    }

    /// The tensors called `names` (in the layout's ravel order, whatever the
    /// order of `names`).
    pub fn from_names<S: AsRef<str>>(layout: &ParamLayout, names: &[S]) -> Result<Self> {
        let mut keep = vec![false; layout.specs().len()];
        for n in names {
            let k = layout.index_of(n.as_ref()).ok_or_else(|| {
                Error::config("subset", format!("no parameter called `{}`", n.as_ref()))
            })?;
            keep[k] = true;
        }
        let mut indices = Vec::new();
        for (k, spec) in layout.specs().iter().enumerate() {
            if keep[k] {
                let off = layout.offset(k);
                indices.extend(off..off + spec.numel());
            }
        }
        if indices.is_empty() {
            return Err(Error::config("subset", "selects no parameter"));
        }
        Ok(Self {
            indices,
            full_dim: layout.len(),
        })
    }

    /// Explicit flat indices (sorted, unique, `< dim`).
    pub fn from_indices(mut indices: Vec<usize>, dim: usize) -> Result<Self> {
        indices.sort_unstable();
        indices.dedup();
        if indices.is_empty() {
            return Err(Error::config("subset", "selects no parameter"));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= dim) {
            return Err(Error::config(
                "subset",
                format!("index {bad} out of range for {dim} parameters"),
            ));
        }
        Ok(Self {
            indices,
            full_dim: dim,
        })
    }

    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// Number of selected scalars.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Size of the full parameter vector.
    pub fn full_dim(&self) -> usize {
        self.full_dim
    }

    /// True when the subset is every parameter.
    pub fn is_all(&self) -> bool {
        self.indices.len() == self.full_dim
    }

    /// `out[j] = full[indices[j]]`.
    pub fn gather(&self, full: &[f64], out: &mut [f64]) {
        for (o, &i) in out.iter_mut().zip(&self.indices) {
            *o = full[i];
        }
    }

    /// Error unless the subset was built for `dim` parameters.
    pub fn check_dim(&self, dim: usize) -> Result<()> {
        if self.full_dim != dim {
            return Err(Error::DimensionMismatch {
                what: "parameter subset",
                expected: self.full_dim,
                got: dim,
            });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Fisher, GGN, Hessian
// ---------------------------------------------------------------------------

/// Per-example gradients of `model` at `params` (checked sizes and finiteness).
pub fn per_example_grads<M: PerExampleLogLik>(
    model: &M,
    params: &Params,
    batch: &M::Batch,
) -> Result<PerExample> {
    let pe = model.per_example(params, batch)?;
    pe.check_finite(0)?;
    Ok(pe)
}

/// Add `Σᵢ gᵢ gᵢᵀ` restricted to `subset` into the row-major `m × m` matrix `acc`.
pub(crate) fn accumulate_fisher(pe: &PerExample, subset: &Subset, acc: &mut [f64]) {
    let m = subset.len();
    let mut g = vec![0.0; m];
    for i in 0..pe.n {
        subset.gather(pe.grad(i), &mut g);
        for a in 0..m {
            let ga = g[a];
            if ga == 0.0 {
                continue;
            }
            let row = &mut acc[a * m..(a + 1) * m];
            for (r, gb) in row.iter_mut().zip(&g) {
                *r += ga * gb;
            }
        }
    }
}

/// Dense empirical Fisher `Σᵢ gᵢ gᵢᵀ` (row-major `dim × dim`).
pub fn empirical_fisher<M: PerExampleLogLik>(
    model: &M,
    params: &Params,
    batch: &M::Batch,
) -> Result<Vec<f64>> {
    let pe = per_example_grads(model, params, batch)?;
    let s = Subset::all(params.len());
    let mut f = vec![0.0; s.len() * s.len()];
    accumulate_fisher(&pe, &s, &mut f);
    Ok(f)
}

/// Diagonal of the empirical Fisher, `Σᵢ gᵢ²`.
pub fn diag_empirical_fisher<M: PerExampleLogLik>(
    model: &M,
    params: &Params,
    batch: &M::Batch,
) -> Result<Vec<f64>> {
    let f = model.diag_fisher(params, batch)?;
    f.check_finite(0)?;
    Ok(f.sum_sq)
}

/// Empirical Fisher-vector product `Σᵢ gᵢ (gᵢᵀ v)` without forming the matrix.
pub fn fvp<M: PerExampleLogLik>(
    model: &M,
    params: &Params,
    batch: &M::Batch,
    v: &[f64],
) -> Result<Vec<f64>> {
    check_len("vector", params.len(), v.len())?;
    let pe = per_example_grads(model, params, batch)?;
    let mut out = vec![0.0; params.len()];
    for i in 0..pe.n {
        let g = pe.grad(i);
        let s = dot(g, v);
        for (o, gi) in out.iter_mut().zip(g) {
            *o += s * gi;
        }
    }
    Ok(out)
}

/// Add `Σᵢ Jᵢᵀ Hᵢ Jᵢ` restricted to `subset` into the `m × m` matrix `acc`.
pub(crate) fn accumulate_ggn(jac: &ModelJacobian, hess: &[f64], subset: &Subset, acc: &mut [f64]) {
    let (k, m) = (jac.k, subset.len());
    // Js: k × m rows of the subset Jacobian of one example; HJ = H Js.
    let mut js = vec![0.0; k * m];
    let mut hj = vec![0.0; k * m];
    for i in 0..jac.n {
        let block = jac.block(i);
        for r in 0..k {
            subset.gather(
                &block[r * jac.dim..(r + 1) * jac.dim],
                &mut js[r * m..(r + 1) * m],
            );
        }
        let h = &hess[i * k * k..(i + 1) * k * k];
        hj.fill(0.0);
        for a in 0..k {
            for b in 0..k {
                let hab = h[a * k + b];
                if hab == 0.0 {
                    continue;
                }
                for c in 0..m {
                    hj[a * m + c] += hab * js[b * m + c];
                }
            }
        }
        for r in 0..k {
            let jr = &js[r * m..(r + 1) * m];
            let hr = &hj[r * m..(r + 1) * m];
            for a in 0..m {
                let ja = jr[a];
                if ja == 0.0 {
                    continue;
                }
                let row = &mut acc[a * m..(a + 1) * m];
                for (x, hb) in row.iter_mut().zip(hr) {
                    *x += ja * hb;
                }
            }
        }
    }
}

/// Add `diag(Σᵢ Jᵢᵀ Hᵢ Jᵢ)` restricted to `subset` into `acc`.
pub(crate) fn accumulate_diag_ggn(
    jac: &ModelJacobian,
    hess: &[f64],
    subset: &Subset,
    acc: &mut [f64],
) {
    let k = jac.k;
    for i in 0..jac.n {
        let block = jac.block(i);
        let h = &hess[i * k * k..(i + 1) * k * k];
        for (out, &j) in acc.iter_mut().zip(subset.indices()) {
            let mut s = 0.0;
            for a in 0..k {
                let ja = block[a * jac.dim + j];
                for b in 0..k {
                    s += ja * h[a * k + b] * block[b * jac.dim + j];
                }
            }
            *out += s;
        }
    }
}

pub(crate) fn jacobian_and_hessians<M: OutputModel>(
    model: &M,
    params: &Params,
    batch: &M::Batch,
) -> Result<(ModelJacobian, Vec<f64>)> {
    let jac = model.forward_jacobian(params, batch)?;
    if jac.dim != params.len() {
        return Err(Error::DimensionMismatch {
            what: "model Jacobian columns",
            expected: params.len(),
            got: jac.dim,
        });
    }
    let h = model.output_hessians(&jac, batch)?;
    check_len("output Hessians (n·k·k)", jac.n * jac.k * jac.k, h.len())?;
    if h.iter().any(|x| !x.is_finite()) {
        return Err(Error::Density("non-finite output Hessian".into()));
    }
    Ok((jac, h))
}

/// Dense GGN `Σᵢ Jᵢᵀ Hᵢ Jᵢ` (row-major `dim × dim`).
pub fn ggn<M: OutputModel>(model: &M, params: &Params, batch: &M::Batch) -> Result<Vec<f64>> {
    let (jac, h) = jacobian_and_hessians(model, params, batch)?;
    let s = Subset::all(params.len());
    let mut g = vec![0.0; s.len() * s.len()];
    accumulate_ggn(&jac, &h, &s, &mut g);
    Ok(g)
}

/// Diagonal of the GGN.
pub fn diag_ggn<M: OutputModel>(model: &M, params: &Params, batch: &M::Batch) -> Result<Vec<f64>> {
    let (jac, h) = jacobian_and_hessians(model, params, batch)?;
    let s = Subset::all(params.len());
    let mut g = vec![0.0; s.len()];
    accumulate_diag_ggn(&jac, &h, &s, &mut g);
    Ok(g)
}

/// GGN-vector product `Σᵢ Jᵢᵀ Hᵢ (Jᵢ v)` without forming the matrix, and
/// without the Jacobian where the model offers [`OutputModel::ggnvp`]
/// ([`CandleOutputModel`] does).
pub fn ggnvp<M: OutputModel>(
    model: &M,
    params: &Params,
    batch: &M::Batch,
    v: &[f64],
) -> Result<Vec<f64>> {
    check_len("vector", params.len(), v.len())?;
    if let Some(gv) = model.ggnvp(params, batch, v)? {
        check_len("model GGN-vector product", params.len(), gv.len())?;
        return Ok(gv);
    }
    ggnvp_via_jacobian(model, params, batch, v)
}

/// [`ggnvp`] through the model's full Jacobian ([`OutputModel::forward_jacobian`],
/// `n k × dim` values), whatever the model offers: the reference for the
/// Jacobian-free products.
pub fn ggnvp_via_jacobian<M: OutputModel>(
    model: &M,
    params: &Params,
    batch: &M::Batch,
    v: &[f64],
) -> Result<Vec<f64>> {
    check_len("vector", params.len(), v.len())?;
    let (jac, h) = jacobian_and_hessians(model, params, batch)?;
    let (k, d) = (jac.k, jac.dim);
    let mut out = vec![0.0; d];
    let mut jv = vec![0.0; k];
    for i in 0..jac.n {
        let block = jac.block(i);
        for (a, x) in jv.iter_mut().enumerate() {
            *x = dot(&block[a * d..(a + 1) * d], v);
        }
        let hh = &h[i * k * k..(i + 1) * k * k];
        for a in 0..k {
            let s: f64 = (0..k).map(|b| hh[a * k + b] * jv[b]).sum();
            for (o, j) in out.iter_mut().zip(&block[a * d..(a + 1) * d]) {
                *o += s * j;
            }
        }
    }
    Ok(out)
}

/// How [`hvp_with_method`] computed a Hessian-vector product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HvpMethod {
    /// The density's own exact product ([`LogDensity::hvp_exact`]).
    Exact,
    /// Central differences of gradients ([`hvp_finite_difference`]).
    FiniteDifference,
}

/// Hessian-vector product `∇²ℓ(θ) v` of a log density: the density's exact
/// product where it has one ([`LogDensity::hvp_exact`]: candle densities
/// with double backward enabled), central differences of gradients
/// otherwise (see the module doc for the accuracy of each path).
pub fn hvp<D: LogDensity>(
    density: &D,
    params: &Params,
    batch: &D::Batch,
    v: &[f64],
) -> Result<Vec<f64>> {
    hvp_with_method(density, params, batch, v).map(|(hv, _)| hv)
}

/// [`hvp`], and which path computed it.
pub fn hvp_with_method<D: LogDensity>(
    density: &D,
    params: &Params,
    batch: &D::Batch,
    v: &[f64],
) -> Result<(Vec<f64>, HvpMethod)> {
    let d = params.len();
    check_len("vector", d, v.len())?;
    let mut out = vec![0.0; d];
    if density.hvp_exact(params, batch, v, &mut out)? {
        let bad = out.iter().filter(|x| !x.is_finite()).count();
        if bad > 0 {
            return Err(Error::NonFiniteLogDensity {
                step: 0,
                value: f64::NAN,
                bad_grad: bad,
            });
        }
        return Ok((out, HvpMethod::Exact));
    }
    Ok((
        hvp_finite_difference(density, params, batch, v)?,
        HvpMethod::FiniteDifference,
    ))
}

/// Hessian-vector product by a central difference of gradients,
/// `(∇ℓ(θ + h v) − ∇ℓ(θ − h v)) / (2h)` with
/// `h = 1e-5 · max(1, ‖θ‖∞) / ‖v‖∞`, whatever the density offers. Its
/// error is truncation `O(h² ‖∇³ℓ‖ ‖v‖²)` plus rounding
/// `O(ε ‖∇ℓ‖ / (h ‖v‖))` with `ε` the unit roundoff of the gradient's
/// arithmetic: about `1e-8` relative for f64 models, but about `1e-2` for f32
/// models (`ε ≈ 6e-8`, divided by `h`); see BENCHMARKS.md.
pub fn hvp_finite_difference<D: LogDensity>(
    density: &D,
    params: &Params,
    batch: &D::Batch,
    v: &[f64],
) -> Result<Vec<f64>> {
    let d = params.len();
    check_len("vector", d, v.len())?;
    let vmax = v.iter().fold(0.0f64, |a, x| a.max(x.abs()));
    if vmax == 0.0 {
        return Ok(vec![0.0; d]);
    }
    let tmax = params.values().iter().fold(1.0f64, |a, x| a.max(x.abs()));
    let h = 1e-5 * tmax / vmax;
    let mut p = params.clone();
    let mut gp = vec![0.0; d];
    let mut gm = vec![0.0; d];
    for ((x, x0), vi) in p.values_mut().iter_mut().zip(params.values()).zip(v) {
        *x = x0 + h * vi;
    }
    let (vp, _) = density.value_and_grad(&p, batch, &mut gp)?;
    for ((x, x0), vi) in p.values_mut().iter_mut().zip(params.values()).zip(v) {
        *x = x0 - h * vi;
    }
    let (vm, _) = density.value_and_grad(&p, batch, &mut gm)?;
    langevin_core::check_finite(vp, &gp, 0)?;
    langevin_core::check_finite(vm, &gm, 0)?;
    Ok(gp
        .iter()
        .zip(&gm)
        .map(|(a, b)| (a - b) / (2.0 * h))
        .collect())
}

/// Dense Hessian of a log density restricted to `subset` (row-major
/// `m × m`), one [`hvp`] per column (exact where the density allows it,
/// central differences otherwise), symmetrised.
pub fn hessian_subset<D: LogDensity>(
    density: &D,
    params: &Params,
    batch: &D::Batch,
    subset: &Subset,
) -> Result<Vec<f64>> {
    hessian_subset_with_method(density, params, batch, subset).map(|(h, _)| h)
}

/// [`hessian_subset`], and which path computed its columns
/// ([`HvpMethod::FiniteDifference`] if any column needed it).
pub fn hessian_subset_with_method<D: LogDensity>(
    density: &D,
    params: &Params,
    batch: &D::Batch,
    subset: &Subset,
) -> Result<(Vec<f64>, HvpMethod)> {
    subset.check_dim(params.len())?;
    let m = subset.len();
    let mut hm = vec![0.0; m * m];
    let mut e = vec![0.0; params.len()];
    let mut method = HvpMethod::Exact;
    for (c, &j) in subset.indices().iter().enumerate() {
        e[j] = 1.0;
        let (col, how) = hvp_with_method(density, params, batch, &e)?;
        if how == HvpMethod::FiniteDifference {
            method = how;
        }
        e[j] = 0.0;
        for (r, &i) in subset.indices().iter().enumerate() {
            hm[r * m + c] = col[i];
        }
    }
    for a in 0..m {
        for b in 0..a {
            let s = 0.5 * (hm[a * m + b] + hm[b * m + a]);
            hm[a * m + b] = s;
            hm[b * m + a] = s;
        }
    }
    Ok((hm, method))
}

/// Dense Hessian of a log density (row-major `dim × dim`).
pub fn hessian<D: LogDensity>(density: &D, params: &Params, batch: &D::Batch) -> Result<Vec<f64>> {
    hessian_subset(density, params, batch, &Subset::all(params.len()))
}

// ---------------------------------------------------------------------------
// Conjugate gradients
// ---------------------------------------------------------------------------

/// Settings of [`cg`].
#[derive(Debug, Clone)]
pub struct CgConfig {
    /// Most iterations (default: the dimension).
    pub max_iters: Option<usize>,
    /// Relative tolerance: stop when `‖r‖ ≤ max(tol ‖b‖, atol)`.
    pub tol: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// δ: solves `(A + δ I) x = b`.
    pub damping: f64,
}

impl Default for CgConfig {
    fn default() -> Self {
        Self {
            max_iters: None,
            tol: 1e-10,
            atol: 0.0,
            damping: 0.0,
        }
    }
}

/// What [`cg`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct CgResult {
    pub x: Vec<f64>,
    pub iterations: usize,
    /// `‖b − (A + δI) x‖` of the returned `x` (recursively updated residual).
    pub residual: f64,
    pub converged: bool,
}

/// Preconditioned conjugate gradients for `(A + δ I) x = b` with `A`
/// symmetric positive (semi-)definite, given as `matvec(v, out)` (`out = A v`).
/// `precond(r, out)` applies `M⁻¹` (symmetric positive definite), or `None`.
/// `x0` defaults to zero. Real-only.
pub fn cg<A, P>(
    mut matvec: A,
    b: &[f64],
    x0: Option<&[f64]>,
    mut precond: Option<P>,
    config: &CgConfig,
) -> Result<CgResult>
where
    A: FnMut(&[f64], &mut [f64]) -> Result<()>,
    P: FnMut(&[f64], &mut [f64]) -> Result<()>,
{
    let n = b.len();
    if !(config.tol.is_finite() && config.tol >= 0.0) {
        return Err(Error::config("tol", "must be finite and >= 0"));
    }
    if !(config.atol.is_finite() && config.atol >= 0.0) {
        return Err(Error::config("atol", "must be finite and >= 0"));
    }
    if !config.damping.is_finite() {
        return Err(Error::config("damping", "must be finite"));
    }
    let mut x = match x0 {
        Some(v) => {
            check_len("cg initial guess", n, v.len())?;
            v.to_vec()
        }
        None => vec![0.0; n],
    };
    let max_iters = config.max_iters.unwrap_or(n.max(1));
    let mut ax = vec![0.0; n];
    let apply = |matvec: &mut A, v: &[f64], out: &mut [f64]| -> Result<()> {
        matvec(v, out)?;
        for (o, vi) in out.iter_mut().zip(v) {
            *o += config.damping * vi;
        }
        Ok(())
    };
    apply(&mut matvec, &x, &mut ax)?;
    let mut r: Vec<f64> = b.iter().zip(&ax).map(|(bi, a)| bi - a).collect();
    let target = (config.tol * norm(b)).max(config.atol);
    let mut z = vec![0.0; n];
    let mut precondition = |r: &[f64], z: &mut [f64]| -> Result<()> {
        match precond.as_mut() {
            Some(p) => p(r, z),
            None => {
                z.copy_from_slice(r);
                Ok(())
            }
        }
    };
    precondition(&r, &mut z)?;
    let mut p = z.clone();
    let mut rz = dot(&r, &z);
    let mut ap = vec![0.0; n];
    let mut iterations = 0;
    let mut res = norm(&r);
    while res > target && iterations < max_iters {
        apply(&mut matvec, &p, &mut ap)?;
        let pap = dot(&p, &ap);
        if pap.is_nan() || pap <= 0.0 {
            return Err(Error::NotPositiveDefinite {
                context: Some(format!("cg: pᵀAp = {pap} at iteration {iterations}")),
            });
        }
        let alpha = rz / pap;
        for i in 0..n {
            x[i] += alpha * p[i];
            r[i] -= alpha * ap[i];
        }
        iterations += 1;
        res = norm(&r);
        if res <= target {
            break;
        }
        precondition(&r, &mut z)?;
        let rz_new = dot(&r, &z);
        let beta = rz_new / rz;
        rz = rz_new;
        for i in 0..n {
            p[i] = z[i] + beta * p[i];
        }
    }
    Ok(CgResult {
        x,
        iterations,
        residual: res,
        converged: res <= target,
    })
}

// ---------------------------------------------------------------------------
// Small dense helpers (row-major f64), shared by the dense methods.
// ---------------------------------------------------------------------------

#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[inline]
pub(crate) fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected != got {
        return Err(Error::DimensionMismatch {
            what,
            expected,
            got,
        });
    }
    Ok(())
}

/// The factorisation `A = L Lᵀ` (faer's [`Llt`](faer::linalg::solvers::Llt))
/// of a symmetric positive definite row-major `n × n` matrix; only its lower
/// triangle is read. Non-finite entries and matrices that are not positive
/// definite are [`Error::NotPositiveDefinite`], with `context` in the message.
fn llt(a: &[f64], n: usize, context: &str) -> Result<faer::linalg::solvers::Llt<f64>> {
    check_len("square matrix", n * n, a.len())?;
    if a.iter().any(|x| !x.is_finite()) {
        return Err(Error::NotPositiveDefinite {
            context: Some(format!("{context}: non-finite entries")),
        });
    }
    // The column-major reading of row-major `A` is `Aᵀ`: its lower triangle
    // is the upper triangle of `A`, so factor from the upper side to read
    // `A`'s lower triangle.
    let at = faer::MatRef::from_column_major_slice(a, n, n);
    faer::linalg::solvers::Llt::new(at, faer::Side::Upper).map_err(|e| Error::NotPositiveDefinite {
        context: Some(format!("{context}: {e:?}")),
    })
}

/// Lower Cholesky factor (row-major) of a symmetric positive definite
/// row-major `n × n` matrix, by faer.
pub(crate) fn cholesky(a: &[f64], n: usize, context: &str) -> Result<Vec<f64>> {
    let llt = llt(a, n, context)?;
    let l = llt.L();
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            out[i * n + j] = l[(i, j)];
        }
    }
    Ok(out)
}

/// Solve `Lᵀ x = b` in place (`L` lower, row-major `n × n`), by faer's
/// triangular solve.
pub(crate) fn solve_lower_t(l: &[f64], n: usize, b: &mut [f64]) {
    // The column-major reading of the row-major `L` is `Lᵀ` (upper triangular).
    let lt = faer::MatRef::from_column_major_slice(&l[..n * n], n, n);
    let rhs = faer::MatMut::from_column_major_slice_mut(&mut b[..n], n, 1);
    faer::linalg::triangular_solve::solve_upper_triangular_in_place(lt, rhs, faer::Par::Seq);
}

/// `out = L x` (`L` lower, row-major).
pub(crate) fn lower_matvec(l: &[f64], n: usize, x: &[f64], out: &mut [f64]) {
    for i in 0..n {
        out[i] = dot(&l[i * n..i * n + i + 1], &x[..=i]);
    }
}

/// Inverse (row-major, exactly symmetric) of a symmetric positive definite
/// row-major `n × n` matrix, from faer's Cholesky factorisation
/// ([`Error::NotPositiveDefinite`] when it fails).
pub(crate) fn spd_inverse(a: &[f64], n: usize, context: &str) -> Result<Vec<f64>> {
    use faer::linalg::solvers::DenseSolveCore;
    let inv = llt(a, n, context)?.inverse();
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            out[i * n + j] = inv[(i, j)];
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use langevin_core::FnDensity;
    use rand::Rng;

    fn rand_spd(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = langevin_core::chain_rng(seed, 0);
        let a: Vec<f64> = (0..n * n).map(|_| rng.random::<f64>() - 0.5).collect();
        let mut s = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                s[i * n + j] = (0..n).map(|k| a[i * n + k] * a[j * n + k]).sum::<f64>();
            }
            s[i * n + i] += 0.1;
        }
        s
    }

    #[test]
    fn cholesky_solves_and_inverse_are_consistent() {
        let n = 6;
        let a = rand_spd(n, 3);
        let l = cholesky(&a, n, "test").unwrap();
        for i in 0..n {
            for j in 0..n {
                let llt: f64 = (0..n).map(|k| l[i * n + k] * l[j * n + k]).sum();
                assert!((llt - a[i * n + j]).abs() < 1e-12);
            }
        }
        let inv = spd_inverse(&a, n, "test").unwrap();
        for i in 0..n {
            for j in 0..n {
                let p: f64 = (0..n).map(|k| a[i * n + k] * inv[k * n + j]).sum();
                assert!((p - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9);
            }
        }
        // Lᵀ x = b against back substitution.
        let b: Vec<f64> = (0..n).map(|i| (i as f64 + 0.5).sin()).collect();
        let mut x = b.clone();
        solve_lower_t(&l, n, &mut x);
        for i in 0..n {
            let ltx: f64 = (i..n).map(|k| l[k * n + i] * x[k]).sum();
            assert!((ltx - b[i]).abs() < 1e-12, "{ltx} vs {}", b[i]);
        }
        // The inverse is exactly symmetric and only the lower triangle is read.
        let mut lower_only = a.clone();
        for i in 0..n {
            for j in i + 1..n {
                assert_eq!(inv[i * n + j].to_bits(), inv[j * n + i].to_bits());
                lower_only[i * n + j] = f64::MAX;
            }
        }
        assert_eq!(cholesky(&lower_only, n, "t").unwrap(), l);
        let not_pd = vec![1.0, 2.0, 2.0, 1.0];
        for r in [cholesky(&not_pd, 2, "x"), spd_inverse(&not_pd, 2, "x")] {
            assert!(matches!(r, Err(Error::NotPositiveDefinite { .. })));
        }
        let nan = vec![1.0, f64::NAN, f64::NAN, 1.0];
        assert!(matches!(
            spd_inverse(&nan, 2, "x"),
            Err(Error::NotPositiveDefinite { .. })
        ));
        assert!(matches!(
            spd_inverse(&[1.0, 0.0, 0.0], 2, "x"),
            Err(Error::DimensionMismatch { .. })
        ));
        assert_eq!(spd_inverse(&[], 0, "empty").unwrap(), Vec::<f64>::new());
    }

    #[test]
    fn cg_matches_a_direct_solve_with_damping_and_preconditioner() {
        for seed in 0..4 {
            let n = 20;
            let a = rand_spd(n, seed);
            let damping = 0.3;
            let b: Vec<f64> = (0..n).map(|i| (i as f64).sin()).collect();
            let mut ad = a.clone();
            for i in 0..n {
                ad[i * n + i] += damping;
            }
            let inv = spd_inverse(&ad, n, "t").unwrap();
            let direct: Vec<f64> = (0..n).map(|i| dot(&inv[i * n..(i + 1) * n], &b)).collect();
            let mv = |v: &[f64], out: &mut [f64]| -> Result<()> {
                for i in 0..n {
                    out[i] = dot(&a[i * n..(i + 1) * n], v);
                }
                Ok(())
            };
            let cfg = CgConfig {
                damping,
                tol: 1e-12,
                max_iters: Some(200),
                ..CgConfig::default()
            };
            let r = cg(
                mv,
                &b,
                None,
                None::<fn(&[f64], &mut [f64]) -> Result<()>>,
                &cfg,
            )
            .unwrap();
            assert!(r.converged && r.residual <= 1e-12 * norm(&b), "{r:?}");
            for (x, y) in r.x.iter().zip(&direct) {
                assert!((x - y).abs() < 1e-8, "{x} vs {y}");
            }
            // Jacobi preconditioner: same answer.
            let diag: Vec<f64> = (0..n).map(|i| ad[i * n + i]).collect();
            let pc = |r: &[f64], z: &mut [f64]| -> Result<()> {
                for i in 0..n {
                    z[i] = r[i] / diag[i];
                }
                Ok(())
            };
            let r2 = cg(mv, &b, None, Some(pc), &cfg).unwrap();
            assert!(r2.converged);
            for (x, y) in r2.x.iter().zip(&direct) {
                assert!((x - y).abs() < 1e-8);
            }
            // Tolerance and iteration cap are honoured.
            let loose = CgConfig {
                max_iters: Some(2),
                ..cfg.clone()
            };
            let r3 = cg(
                mv,
                &b,
                None,
                None::<fn(&[f64], &mut [f64]) -> Result<()>>,
                &loose,
            )
            .unwrap();
            assert_eq!(r3.iterations, 2);
            assert!(!r3.converged);
        }
    }

    #[test]
    fn hvp_matches_an_analytic_hessian() {
        // log p = -sum(x^4)/4 + x0 x1: H = diag(-3x^2) + offdiag(1).
        let d = FnDensity::new(|x: &[f64], _: &(), g: &mut [f64]| {
            g[0] = -x[0].powi(3) + x[1];
            g[1] = -x[1].powi(3) + x[0];
            -(x[0].powi(4) + x[1].powi(4)) / 4.0 + x[0] * x[1]
        });
        let p = Params::from_vec(vec![0.7, -1.3]);
        let v = [0.4, 2.0];
        let hv = hvp(&d, &p, &(), &v).unwrap();
        let h = [[-3.0 * 0.49, 1.0], [1.0, -3.0 * 1.69]];
        for i in 0..2 {
            let exact = h[i][0] * v[0] + h[i][1] * v[1];
            assert!((hv[i] - exact).abs() < 1e-7, "{} vs {exact}", hv[i]);
        }
        let full = hessian(&d, &p, &()).unwrap();
        assert!((full[1] - 1.0).abs() < 1e-7 && (full[0] + 1.47).abs() < 1e-7);
    }

    /// Linear-Gaussian model f(θ, x) = w·x + b, y ~ N(f, 1).
    fn linear_data(n: usize) -> (Vec<[f64; 3]>, Vec<f64>) {
        let mut rng = langevin_core::chain_rng(9, 0);
        let xs: Vec<[f64; 3]> = (0..n)
            .map(|_| {
                [
                    rng.random::<f64>(),
                    rng.random::<f64>(),
                    rng.random::<f64>(),
                ]
            })
            .collect();
        let ys = xs.iter().map(|x| x[0] - 2.0 * x[2] + 0.1).collect();
        (xs, ys)
    }

    #[test]
    fn fisher_ggn_and_their_vector_products_agree_with_naive_sums() {
        let (xs, ys) = linear_data(15);
        let data = (xs, ys);
        type Data = (Vec<[f64; 3]>, Vec<f64>);
        let pe = FnPerExample::new(|t: &[f64], b: &Data| {
            let mut vals = Vec::new();
            let mut grads = Vec::new();
            for (x, y) in b.0.iter().zip(&b.1) {
                let f = t[0] * x[0] + t[1] * x[1] + t[2] * x[2] + t[3];
                vals.push(-0.5 * (y - f).powi(2));
                let r = y - f;
                grads.extend([r * x[0], r * x[1], r * x[2], r]);
            }
            (vals, grads)
        });
        let model = FnOutputModel::new(
            1,
            OutputLikelihood::Gaussian { variance: 1.0 },
            |t: &[f64], b: &Data| {
                let mut out = Vec::new();
                let mut jac = Vec::new();
                for x in &b.0 {
                    out.push(t[0] * x[0] + t[1] * x[1] + t[2] * x[2] + t[3]);
                    jac.extend([x[0], x[1], x[2], 1.0]);
                }
                (out, jac)
            },
        )
        .unwrap();
        let p = Params::from_vec(vec![0.3, -0.2, 0.5, 0.0]);
        let f = empirical_fisher(&pe, &p, &data).unwrap();
        let fd = diag_empirical_fisher(&pe, &p, &data).unwrap();
        let g = ggn(&model, &p, &data).unwrap();
        let gd = diag_ggn(&model, &p, &data).unwrap();
        let v = [1.0, -0.5, 0.25, 2.0];
        let fv = fvp(&pe, &p, &data, &v).unwrap();
        let gv = ggnvp(&model, &p, &data, &v).unwrap();
        let all = pe.per_example(&p, &data).unwrap();
        for a in 0..4 {
            let mut fva = 0.0;
            let mut gva = 0.0;
            for b in 0..4 {
                let naive_f: f64 = (0..15).map(|i| all.grad(i)[a] * all.grad(i)[b]).sum();
                let ja = |x: &[f64; 3], c: usize| if c < 3 { x[c] } else { 1.0 };
                let naive_g: f64 = data.0.iter().map(|x| ja(x, a) * ja(x, b)).sum();
                assert!((f[a * 4 + b] - naive_f).abs() < 1e-10);
                assert!((g[a * 4 + b] - naive_g).abs() < 1e-10);
                fva += naive_f * v[b];
                gva += naive_g * v[b];
            }
            assert!((fd[a] - f[a * 4 + a]).abs() < 1e-12);
            assert!((gd[a] - g[a * 4 + a]).abs() < 1e-12);
            assert!((fv[a] - fva).abs() < 1e-10);
            assert!((gv[a] - gva).abs() < 1e-10);
        }
    }

    #[test]
    fn categorical_hessian_is_softmax_covariance() {
        let mut h = vec![0.0; 9];
        OutputLikelihood::Categorical
            .hessian(&[0.0, 0.0, 0.0], &mut h)
            .unwrap();
        assert!((h[0] - (1.0 / 3.0 - 1.0 / 9.0)).abs() < 1e-15);
        assert!((h[1] + 1.0 / 9.0).abs() < 1e-15);
        let mut hb = vec![0.0];
        OutputLikelihood::Bernoulli
            .hessian(&[0.0], &mut hb)
            .unwrap();
        assert_eq!(hb[0], 0.25);
        assert!(OutputLikelihood::Bernoulli
            .hessian(&[0.0, 1.0], &mut h[..4])
            .is_err());
    }

    #[test]
    fn subsets_follow_ravel_order() {
        let layout =
            ParamLayout::new([("w1", vec![2, 2]), ("b1", vec![2]), ("w2", vec![2])]).unwrap();
        let s = Subset::from_names(&layout, &["w2", "b1"]).unwrap();
        assert_eq!(s.indices(), &[4, 5, 6, 7]);
        assert!(Subset::from_names(&layout, &["nope"]).is_err());
        assert!(Subset::from_indices(vec![9], 8).is_err());
    }

    /// Candle per-example gradients agree with the f64 closure, and a batch of
    /// 64 on a 2-layer MLP (10 → 32 → 1) is fast.
    #[test]
    fn candle_per_example_grads_match_and_are_fast_enough() {
        let (din, h, n) = (10usize, 32usize, 64usize);
        let layout = ParamLayout::new([
            ("w1", vec![din, h]),
            ("b1", vec![h]),
            ("w2", vec![h, 1]),
            ("b2", vec![1]),
        ])
        .unwrap();
        let mut rng = langevin_core::chain_rng(1, 0);
        let vals: Vec<f64> = (0..layout.len())
            .map(|_| rng.random::<f64>() - 0.5)
            .collect();
        let p = Params::new(layout, vals).unwrap();
        let xs: Vec<f64> = (0..n * din).map(|_| rng.random::<f64>()).collect();
        let ys: Vec<f64> = (0..n).map(|_| rng.random::<f64>()).collect();
        let x = Tensor::from_vec(xs.clone(), (n, din), &Device::Cpu).unwrap();
        let y = Tensor::from_vec(ys.clone(), n, &Device::Cpu).unwrap();
        let model = CandlePerExample::new(|t: &[Tensor], b: &(Tensor, Tensor)| {
            let hdn = b.0.matmul(&t[0])?.broadcast_add(&t[1])?.tanh()?;
            let f = hdn.matmul(&t[2])?.broadcast_add(&t[3])?.squeeze(1)?;
            (f - &b.1)?.sqr()? * -0.5
        })
        .with_dtype(DType::F64);
        let batch = (x, y);
        let t0 = std::time::Instant::now();
        let pe = model.per_example(&p, &batch).unwrap();
        let elapsed = t0.elapsed();
        assert_eq!((pe.n, pe.dim), (n, p.len()));
        // Check example 5 against a finite difference of its own value.
        let i = 5;
        let value_i =
            |theta: &Params| -> f64 { model.per_example(theta, &batch).unwrap().values[i] };
        for j in [0usize, 17, din * h + 3, p.len() - 1] {
            let mut a = p.clone();
            let mut b = p.clone();
            a.values_mut()[j] += 1e-6;
            b.values_mut()[j] -= 1e-6;
            let fd = (value_i(&a) - value_i(&b)) / 2e-6;
            assert!(
                (pe.grad(i)[j] - fd).abs() < 1e-6,
                "{j}: {} vs {fd}",
                pe.grad(i)[j]
            );
        }
        // Generous bound for a shared, debug-built CI machine.
        assert!(
            elapsed.as_secs_f64() < 5.0,
            "per-example grads took {elapsed:?}"
        );
    }
}
