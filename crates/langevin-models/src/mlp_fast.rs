//! The MLP's log posterior with a hand-written backward pass over
//! preallocated buffers (no autograd, no allocation per call once warm).
//!
//! Same model and same value as the candle MLP of [`crate::model`]:
//!
//! ```text
//! h₀ = x,  z_l = h_{l-1} W_l + b_l,  h_l = relu(z_l)  (l < L),  out = z_L
//! log_posterior(θ, B) = (1/|B|) Σᵢ log p(yᵢ | outᵢ) + log N(θ; 0, s² I) / N
//! ```
//!
//! with a categorical (softmax; the targets are the one-hot rows of
//! [`Batch::y`](crate::Batch), soft labels allowed) or Gaussian likelihood
//! (fixed noise sd, or a learned `log_noise_sd`, the last parameter). The
//! gradient is the textbook backward pass:
//!
//! ```text
//! δ_L = ∂ mean log p / ∂ out          (softmax: (y − p Σy)/|B|,  Gaussian: r/(σ²|B|))
//! ∇W_l = h_{l-1}ᵀ δ_l,   ∇b_l = Σ_rows δ_l,   δ_{l-1} = (δ_l W_lᵀ) ⊙ [h_{l-1} > 0]
//! ```
//!
//! and nothing else: unlike a general autograd, the gradient with respect to
//! the input `x` is never formed (for a 784-256-256-10 network that is a
//! quarter of the matrix-product work of candle's backward pass). ReLU's
//! derivative at exactly 0 is taken as 0 (PyTorch's convention; candle takes 1).
//!
//! The matrix products are [`gemm`]'s (the crate candle itself calls), one
//! thread by default ([`MlpDensity::with_threads`] for more). Activations,
//! deltas and the gradient live in per-thread scratch buffers that grow to the
//! largest batch seen and are reused, so the density is `Send + Sync` and
//! several chains on several threads each get their own buffers.
//!
//! The model runs in f32 or f64 ([`MlpDensity::new`]'s `dtype`); parameters
//! and gradients are exchanged as f64 in ravel order (`layer{l}.weight[in,out]`,
//! `layer{l}.bias[out]`, …, then `log_noise_sd` when learned); the
//! log-likelihood and the prior are summed in f64.
//!
//! **Per-example terms** ([`PerExampleLogLik`]): `ℓᵢ(θ) = log p(yᵢ | xᵢ, θ) +
//! log p(θ)/N`, the log posterior of a batch of one, so their mean is the
//! density's value. One forward and one backward pass for the whole batch
//! give the per-layer deltas `δ_{l,i}`; example `i`'s weight gradient is the
//! outer product `h_{l-1,i} ⊗ δ_{l,i}` (and `δ_{l,i}` for the bias), written
//! straight into the `n × dim` output.
//!
//! **Hessian-vector products** ([`LogDensity::hvp_exact`]): exact, by
//! Pearlmutter's R-operator (the backward pass differentiated along `v`,
//! about three gradient evaluations), in f64 whatever the dtype. Central
//! differences of this density's gradient are unreliable: a step that
//! crosses a ReLU kink adds a gradient jump divided by the step.
//!
//! Non-finite parameters or data give a non-finite value or gradient (never a
//! panic); the transforms report them as [`langevin_core::Error::NonFiniteLogDensity`].

use std::cell::RefCell;
use std::f64::consts::PI;

use candle_core::{DType, Storage, Tensor, WithDType};
use gemm::Parallelism;
use langevin::curvature::{DiagFisherBatch, PerExample, PerExampleLogLik};
use langevin_core::{Error, LogDensity, ParamLayout, Params, Result};

use crate::model::{Batch, CandleModelDensity, Model, ModelKind, Noise, Task};

/// The output layer's likelihood.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MlpLikelihood {
    /// Categorical over `n_classes` softmax outputs; targets are one-hot rows.
    Categorical { n_classes: usize },
    /// Gaussian with a fixed standard deviation; one output.
    GaussianFixed { sd: f64 },
    /// Gaussian with a learned `log_noise_sd` (the last parameter); one output.
    GaussianLearned,
}

impl MlpLikelihood {
    fn n_outputs(self) -> usize {
        match self {
            MlpLikelihood::Categorical { n_classes } => n_classes,
            _ => 1,
        }
    }
}

/// The MLP log posterior with an analytic gradient; see the module docs.
#[derive(Debug, Clone)]
pub struct MlpDensity {
    /// `[d, hidden..., outputs]`.
    widths: Vec<usize>,
    likelihood: MlpLikelihood,
    /// `1 / (s² N)`: the prior's contribution to the gradient is `-θ · prior_scale`.
    prior_scale: f64,
    /// `log N(0; 0, s² I) / N` (the normalising constant of the prior, over N).
    prior_const_over_n: f64,
    layout: ParamLayout,
    /// Offsets of `layer{l}.weight` and `layer{l}.bias` in ravel order.
    w_off: Vec<usize>,
    b_off: Vec<usize>,
    dtype: DType,
    threads: usize,
}

impl MlpDensity {
    /// An MLP with layer widths `widths = [d, hidden..., outputs]`, prior
    /// standard deviation `prior_sd`, `n_train` training rows, evaluated in
    /// `dtype` (F32 or F64) on one thread.
    pub fn new(
        widths: &[usize],
        likelihood: MlpLikelihood,
        prior_sd: f64,
        n_train: usize,
        dtype: DType,
    ) -> Result<Self> {
        if widths.len() < 2 || widths.contains(&0) {
            return Err(Error::config(
                "widths",
                format!("need an input width, one or more positive layer widths and an output width, got {widths:?}"),
            ));
        }
        let out = *widths.last().expect("len >= 2");
        if out != likelihood.n_outputs() {
            return Err(Error::DimensionMismatch {
                what: "MLP output width",
                expected: likelihood.n_outputs(),
                got: out,
            });
        }
        match likelihood {
            MlpLikelihood::Categorical { n_classes } if n_classes < 2 => {
                return Err(Error::config("n_classes", "need at least 2 classes"))
            }
            MlpLikelihood::GaussianFixed { sd } if !(sd.is_finite() && sd > 0.0) => {
                return Err(Error::config(
                    "noise_sd",
                    format!("must be finite and > 0, got {sd}"),
                ))
            }
            _ => {}
        }
        if !(prior_sd.is_finite() && prior_sd > 0.0) {
            return Err(Error::config(
                "prior_sd",
                format!("must be finite and > 0, got {prior_sd}"),
            ));
        }
        if n_train == 0 {
            return Err(Error::config("n_train", "no training rows"));
        }
        if !matches!(dtype, DType::F32 | DType::F64) {
            return Err(Error::config(
                "dtype",
                format!("the MLP runs in f32 or f64, not {dtype:?}"),
            ));
        }
        let mut specs: Vec<(String, Vec<usize>)> = Vec::new();
        for (l, w) in widths.windows(2).enumerate() {
            specs.push((format!("layer{l}.weight"), vec![w[0], w[1]]));
            specs.push((format!("layer{l}.bias"), vec![w[1]]));
        }
        if likelihood == MlpLikelihood::GaussianLearned {
            specs.push(("log_noise_sd".into(), vec![]));
        }
        let layout = ParamLayout::new(specs)?;
        let n_layers = widths.len() - 1;
        let w_off = (0..n_layers).map(|l| layout.offset(2 * l)).collect();
        let b_off = (0..n_layers).map(|l| layout.offset(2 * l + 1)).collect();
        let s2 = prior_sd * prior_sd;
        let n = n_train as f64;
        Ok(Self {
            widths: widths.to_vec(),
            likelihood,
            prior_scale: 1.0 / (s2 * n),
            prior_const_over_n: -0.5 * layout.len() as f64 * (2.0 * PI * s2).ln() / n,
            layout,
            w_off,
            b_off,
            dtype,
            threads: 1,
        })
    }

    /// Let each large matrix product (≥ 2^25 multiply-adds; smaller ones
    /// lose more to thread hand-off than they gain) use `threads` threads
    /// (rayon); 1 (the default) runs on the calling thread only, the right
    /// choice when several chains already run in parallel.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// The parameter layout (ravel order).
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// `[d, hidden..., outputs]`.
    pub fn widths(&self) -> &[usize] {
        &self.widths
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The output layer's likelihood.
    pub fn likelihood(&self) -> MlpLikelihood {
        self.likelihood
    }

    /// FLOPs of the matrix products of one value-and-gradient evaluation on
    /// `m` rows: forward, weight gradients, and the deltas of layers 2..L
    /// (no input gradient). Element-wise work is not counted.
    pub fn flops(&self, m: usize) -> f64 {
        let mm = |k: usize, n: usize| 2.0 * m as f64 * k as f64 * n as f64;
        let mut f = 0.0;
        for (l, w) in self.widths.windows(2).enumerate() {
            f += 2.0 * mm(w[0], w[1]);
            if l > 0 {
                f += mm(w[0], w[1]);
            }
        }
        f
    }

    /// Add `Σᵢ gᵢ ⊙ gᵢ` over the rows of `batch` into `acc` (ravel order),
    /// with `gᵢ = ∇ℓᵢ` the per-example gradients of
    /// [`per_example`](PerExampleLogLik::per_example), without forming them:
    /// per layer `(h∘h)ᵀ(δ∘δ) − 2cθ ⊙ hᵀδ + m c²θ²` with `c = 1/(s²N)`
    /// (two matrix products instead of an `m × dim` array). Returns the mean
    /// of the `ℓᵢ` (the density's value).
    pub fn accumulate_diag_fisher(
        &self,
        params: &Params,
        batch: &Batch,
        acc: &mut [f64],
    ) -> Result<f64> {
        self.check_params(params)?;
        self.run(params.values(), batch, Out::DiagFisher(acc))
    }

    fn parallelism(&self) -> Parallelism {
        if self.threads > 1 {
            Parallelism::Rayon(self.threads)
        } else {
            Parallelism::None
        }
    }

    fn check_params(&self, params: &Params) -> Result<()> {
        if params.len() != self.layout.len() {
            return Err(Error::DimensionMismatch {
                what: "MLP parameter vector",
                expected: self.layout.len(),
                got: params.len(),
            });
        }
        Ok(())
    }

    fn run(&self, theta: &[f64], batch: &Batch, out: Out<'_>) -> Result<f64> {
        match self.dtype {
            DType::F64 => {
                F64_SCRATCH.with(|s| self.run_in::<f64>(&mut s.borrow_mut(), theta, batch, out))
            }
            _ => F32_SCRATCH.with(|s| self.run_in::<f32>(&mut s.borrow_mut(), theta, batch, out)),
        }
    }

    /// Forward and backward pass in precision `T`.
    fn run_in<T: Real>(
        &self,
        s: &mut Scratch<T>,
        theta: &[f64],
        batch: &Batch,
        out: Out<'_>,
    ) -> Result<f64> {
        let widths = &self.widths;
        let n_layers = widths.len() - 1;
        let d = widths[0];
        let k = widths[n_layers];
        let max_w = *widths[1..].iter().max().expect("len >= 2");
        let par = self.parallelism();
        let zero = T::from_f64(0.0);

        // Data.
        let m = read_rows(&batch.x, d, "batch features (columns)", &mut s.x)?;
        if m == 0 {
            return Err(Error::Data("empty batch".into()));
        }
        let y_rows = read_f64(&batch.y, &mut s.y)?;
        let y_cols = if self.likelihood.n_outputs() == 1 {
            1
        } else {
            k
        };
        if y_rows != m * y_cols {
            return Err(Error::DimensionMismatch {
                what: "batch targets",
                expected: m * y_cols,
                got: y_rows,
            });
        }

        // Parameters in T; the prior in f64.
        let Scratch {
            w,
            x,
            y,
            acts,
            d0,
            d1,
            g,
            sq_a,
            sq_d,
            g2,
            offs,
        } = s;
        let w = ensure(w, theta.len());
        // Eight partial sums: a single running sum is a serial dependency
        // chain that showed up in profiles (and cannot vectorise).
        let mut part = [0.0f64; 8];
        let mut wc = w.chunks_exact_mut(8);
        let mut tc = theta.chunks_exact(8);
        for (a, t) in (&mut wc).zip(&mut tc) {
            for l in 0..8 {
                a[l] = T::from_f64(t[l]);
                part[l] += t[l] * t[l];
            }
        }
        for (a, &t) in wc.into_remainder().iter_mut().zip(tc.remainder()) {
            *a = T::from_f64(t);
            part[0] += t * t;
        }
        let sq: f64 = part.iter().sum();
        let log_prior_over_n = -0.5 * sq * self.prior_scale + self.prior_const_over_n;
        let x: &[T] = &x[..m * d];
        let y: &[f64] = &y[..m * y_cols];

        // Forward: acts holds h_1 .. h_{L-1} and out = z_L, each m × width.
        offs.clear();
        let mut total = 0;
        for &wd in &widths[1..] {
            offs.push(total);
            total += m * wd;
        }
        let act_off: &[usize] = offs;
        let acts = ensure(acts, total);
        for l in 0..n_layers {
            let (din, dout) = (widths[l], widths[l + 1]);
            let (prev, rest) = acts.split_at_mut(act_off[l]);
            let input: &[T] = if l == 0 {
                x
            } else {
                &prev[act_off[l - 1]..act_off[l - 1] + m * din]
            };
            let z = &mut rest[..m * dout];
            let bias = &w[self.b_off[l]..self.b_off[l] + dout];
            for row in z.chunks_exact_mut(dout) {
                row.copy_from_slice(bias);
            }
            let wl = &w[self.w_off[l]..self.w_off[l] + din * dout];
            matmul((m, dout, din), z, true, (input, din, 1), (wl, dout, 1), par);
            if l + 1 < n_layers {
                for v in z.iter_mut() {
                    // NaN stays NaN (and is reported), negatives become 0;
                    // a select, not a branch, so that it vectorises.
                    *v = if *v < zero { zero } else { *v };
                }
            }
        }

        // Output layer: log-likelihood and δ_L = ∂/∂z_L, scaled by `scale`
        // (1/m for the batch mean, 1 per example).
        let per_example = !matches!(out, Out::Mean(_));
        if let Out::PerExample { values, grads } = &out {
            if values.len() != m || grads.len() != m * theta.len() {
                return Err(Error::DimensionMismatch {
                    what: "per-example output (rows)",
                    expected: m,
                    got: values.len(),
                });
            }
        }
        if let Out::DiagFisher(acc) = &out {
            if acc.len() != theta.len() {
                return Err(Error::DimensionMismatch {
                    what: "diagonal Fisher accumulator",
                    expected: theta.len(),
                    got: acc.len(),
                });
            }
        }
        let scale = if per_example { 1.0 } else { 1.0 / m as f64 };
        let z_out = &acts[act_off[n_layers - 1]..act_off[n_layers - 1] + m * k];
        let d0 = ensure(d0, m * max_w);
        let d1 = ensure(d1, m * max_w);
        let mut ll_sum = 0.0;
        let mut d_log_sd = 0.0;
        // Per-example log-likelihoods (and d/d log_sd) go to `values` / `d1` later.
        let mut row_ll = |i: usize, v: f64, values: &mut Option<&mut [f64]>| {
            ll_sum += v;
            if let Some(vals) = values.as_deref_mut() {
                vals[i] = v + log_prior_over_n;
            }
        };
        let (mean_grad, mut values, mut pe_grads, mut fisher) = match out {
            Out::Mean(g) => (Some(g), None, None, None),
            Out::PerExample { values, grads } => (None, Some(values), Some(grads), None),
            Out::DiagFisher(acc) => (None, None, None, Some(acc)),
        };
        let mut log_sd_rows: Vec<f64> = Vec::new();
        match self.likelihood {
            MlpLikelihood::Categorical { .. } => {
                for i in 0..m {
                    let zr = &z_out[i * k..(i + 1) * k];
                    let yr = &y[i * k..(i + 1) * k];
                    let mx = zr.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b.to_f64()));
                    let se: f64 = zr.iter().map(|&v| (v.to_f64() - mx).exp()).sum();
                    let lse = mx + se.ln();
                    let sy: f64 = yr.iter().sum();
                    let yz: f64 = zr.iter().zip(yr).map(|(&z, &y)| y * z.to_f64()).sum();
                    row_ll(i, yz - sy * lse, &mut values);
                    for (c, dz) in d0[i * k..(i + 1) * k].iter_mut().enumerate() {
                        let p = (zr[c].to_f64() - lse).exp();
                        *dz = T::from_f64((yr[c] - sy * p) * scale);
                    }
                }
            }
            MlpLikelihood::GaussianFixed { sd } => {
                let inv_var = 1.0 / (sd * sd);
                let c = -sd.ln() - 0.5 * (2.0 * PI).ln();
                for i in 0..m {
                    let r = y[i] - z_out[i].to_f64();
                    row_ll(i, -0.5 * r * r * inv_var + c, &mut values);
                    d0[i] = T::from_f64(r * inv_var * scale);
                }
            }
            MlpLikelihood::GaussianLearned => {
                let log_sd = theta[theta.len() - 1];
                let inv_var = (-2.0 * log_sd).exp();
                let c = -log_sd - 0.5 * (2.0 * PI).ln();
                if per_example {
                    log_sd_rows.resize(m, 0.0);
                }
                for i in 0..m {
                    let r = y[i] - z_out[i].to_f64();
                    row_ll(i, -0.5 * r * r * inv_var + c, &mut values);
                    d0[i] = T::from_f64(r * inv_var * scale);
                    let dls = r * r * inv_var - 1.0;
                    d_log_sd += dls;
                    if per_example {
                        log_sd_rows[i] = dls;
                    }
                }
            }
        }
        let value = ll_sum / m as f64 + log_prior_over_n;

        // Backward.
        let dim = theta.len();
        let g = ensure(g, if pe_grads.is_some() { 0 } else { dim });
        let (ps, mf) = (self.prior_scale, m as f64);
        let (mut cur, mut other) = (d0, d1);
        for l in (0..n_layers).rev() {
            let (din, dout) = (widths[l], widths[l + 1]);
            let input: &[T] = if l == 0 {
                x
            } else {
                &acts[act_off[l - 1]..act_off[l - 1] + m * din]
            };
            let delta = &cur[..m * dout];
            let (wo, bo) = (self.w_off[l], self.b_off[l]);
            if let Some(grads) = pe_grads.as_deref_mut() {
                for i in 0..m {
                    let gi = &mut grads[i * dim..(i + 1) * dim];
                    let di = &delta[i * dout..(i + 1) * dout];
                    let ai = &input[i * din..(i + 1) * din];
                    for (j, &a) in ai.iter().enumerate() {
                        let a = a.to_f64();
                        let o = wo + j * dout;
                        for ((gv, &dv), &t) in
                            gi[o..o + dout].iter_mut().zip(di).zip(&theta[o..o + dout])
                        {
                            *gv = a * dv.to_f64() - ps * t;
                        }
                    }
                    for ((gv, &dv), &t) in gi[bo..bo + dout]
                        .iter_mut()
                        .zip(di)
                        .zip(&theta[bo..bo + dout])
                    {
                        *gv = dv.to_f64() - ps * t;
                    }
                }
            } else {
                // ∇W_l = inputᵀ δ: inputᵀ is din × m with strides (1, din).
                matmul(
                    (din, dout, m),
                    &mut g[wo..wo + din * dout],
                    false,
                    (input, 1, din),
                    (delta, dout, 1),
                    par,
                );
                let gb = &mut g[bo..bo + dout];
                gb.fill(zero);
                for row in delta.chunks_exact(dout) {
                    for (a, &b) in gb.iter_mut().zip(row) {
                        *a += b;
                    }
                }
                if let Some(acc) = fisher.as_deref_mut() {
                    // Σᵢ (aᵢⱼ δᵢₖ − cθ)² = [(h∘h)ᵀ(δ∘δ)]ⱼₖ − 2cθ [hᵀδ]ⱼₖ + m c²θ².
                    let asq = ensure(sq_a, m * din);
                    for (q, &a) in asq.iter_mut().zip(input) {
                        *q = a * a;
                    }
                    let dsq = ensure(sq_d, m * dout);
                    for (q, &v) in dsq.iter_mut().zip(delta) {
                        *q = v * v;
                    }
                    let g2 = ensure(g2, din * dout);
                    matmul(
                        (din, dout, m),
                        g2,
                        false,
                        (asq, 1, din),
                        (dsq, dout, 1),
                        par,
                    );
                    let rng = wo..wo + din * dout;
                    for (((a, &q), &g1), &t) in acc[rng.clone()]
                        .iter_mut()
                        .zip(g2.iter())
                        .zip(&g[rng.clone()])
                        .zip(&theta[rng])
                    {
                        *a += q.to_f64() - 2.0 * ps * t * g1.to_f64() + mf * ps * ps * t * t;
                    }
                    for kk in 0..dout {
                        let s2: f64 = (0..m).map(|i| dsq[i * dout + kk].to_f64()).sum();
                        let t = theta[bo + kk];
                        acc[bo + kk] +=
                            s2 - 2.0 * ps * t * g[bo + kk].to_f64() + mf * ps * ps * t * t;
                    }
                }
            }
            if l > 0 {
                // δ_{l-1} = (δ_l W_lᵀ) ⊙ [h_{l-1} > 0]; W_lᵀ is dout × din with strides (1, dout).
                let wl = &w[wo..wo + din * dout];
                let prev = &mut other[..m * din];
                matmul(
                    (m, din, dout),
                    prev,
                    false,
                    (delta, dout, 1),
                    (wl, 1, dout),
                    par,
                );
                for (dv, &h) in prev.iter_mut().zip(input) {
                    *dv = if h > zero { *dv } else { zero };
                }
                std::mem::swap(&mut cur, &mut other);
            }
        }

        // Gradient out (f64, with the prior's term).
        if let Some(gout) = mean_grad {
            for ((o, &gv), &t) in gout.iter_mut().zip(g.iter()).zip(theta) {
                *o = gv.to_f64() - ps * t;
            }
            if self.likelihood == MlpLikelihood::GaussianLearned {
                gout[dim - 1] = d_log_sd / m as f64 - ps * theta[dim - 1];
            }
        }
        if let Some(acc) = fisher {
            if self.likelihood == MlpLikelihood::GaussianLearned {
                let t = theta[dim - 1];
                acc[dim - 1] += log_sd_rows
                    .iter()
                    .map(|d| (d - ps * t).powi(2))
                    .sum::<f64>();
            }
        }
        if let Some(grads) = pe_grads {
            if self.likelihood == MlpLikelihood::GaussianLearned {
                for (i, dls) in log_sd_rows.iter().enumerate() {
                    grads[(i + 1) * dim - 1] = dls - ps * theta[dim - 1];
                }
            }
        }
        Ok(value)
    }
}

impl MlpDensity {
    /// The exact Hessian-vector product `out = ∇²ℓ(θ) v` by Pearlmutter's
    /// R-operator (forward-mode differentiation of the backward pass along
    /// `v`), always in f64 whatever the density's dtype:
    ///
    /// ```text
    /// R z_l = R h_{l-1} W_l + h_{l-1} V_l + v_{b,l},  R h_l = R z_l ⊙ [z_l > 0],  R h_0 = 0
    /// R δ_L = (∂²mean log p/∂out²) R z_L            (+ the log_noise_sd cross term)
    /// R∇W_l = R h_{l-1}ᵀ δ_l + h_{l-1}ᵀ R δ_l,   R∇b_l = Σ_rows R δ_l
    /// R δ_{l-1} = (R δ_l W_lᵀ + δ_l V_lᵀ) ⊙ [h_{l-1} > 0]
    /// ```
    ///
    /// plus `−v/(s²N)` from the prior. ReLU's second derivative is 0 away
    /// from its kink, so this is the Hessian of the piecewise-smooth log
    /// posterior wherever no pre-activation is exactly 0 (the same
    /// convention as autograd); differencing gradients instead is wrong
    /// whenever the step crosses a kink. Costs about three gradient
    /// evaluations.
    fn r_op(&self, theta: &[f64], v: &[f64], batch: &Batch, out: &mut [f64]) -> Result<()> {
        let widths = &self.widths;
        let nl = widths.len() - 1;
        let k = widths[nl];
        let dim = theta.len();
        let par = self.parallelism();
        let mut x = Vec::new();
        let m = read_rows::<f64>(&batch.x, widths[0], "batch features (columns)", &mut x)?;
        if m == 0 {
            return Err(Error::Data("empty batch".into()));
        }
        x.truncate(m * widths[0]);
        let mut y = Vec::new();
        let y_cols = if self.likelihood.n_outputs() == 1 {
            1
        } else {
            k
        };
        let y_len = read_f64(&batch.y, &mut y)?;
        if y_len != m * y_cols {
            return Err(Error::DimensionMismatch {
                what: "batch targets",
                expected: m * y_cols,
                got: y_len,
            });
        }
        // Forward with tangents: a[l] = h_l (a[nl] = z_L), ra[l] = R h_l.
        let mut a: Vec<Vec<f64>> = vec![x];
        let mut ra: Vec<Vec<f64>> = vec![vec![0.0; m * widths[0]]];
        for l in 0..nl {
            let (din, dout) = (widths[l], widths[l + 1]);
            let (wo, bo) = (self.w_off[l], self.b_off[l]);
            let (wl, vwl) = (&theta[wo..wo + din * dout], &v[wo..wo + din * dout]);
            let mut z = theta[bo..bo + dout].repeat(m);
            let mut rz = v[bo..bo + dout].repeat(m);
            matmul(
                (m, dout, din),
                &mut z,
                true,
                (&a[l], din, 1),
                (wl, dout, 1),
                par,
            );
            matmul(
                (m, dout, din),
                &mut rz,
                true,
                (&a[l], din, 1),
                (vwl, dout, 1),
                par,
            );
            if l > 0 {
                matmul(
                    (m, dout, din),
                    &mut rz,
                    true,
                    (&ra[l], din, 1),
                    (wl, dout, 1),
                    par,
                );
            }
            if l + 1 < nl {
                for (zv, rv) in z.iter_mut().zip(rz.iter_mut()) {
                    // Masked where z ≤ 0 or z is NaN (the gradient's mask).
                    let active = *zv > 0.0;
                    if !active {
                        *rv = 0.0;
                        if *zv < 0.0 {
                            *zv = 0.0;
                        }
                    }
                }
            }
            a.push(z);
            ra.push(rz);
        }
        // Output layer: δ_L and R δ_L (both with the 1/m of the batch mean).
        let mf = m as f64;
        let (z_out, rz_out) = (&a[nl], &ra[nl]);
        let mut delta = vec![0.0; m * k];
        let mut rdelta = vec![0.0; m * k];
        let mut r_log_sd = 0.0;
        match self.likelihood {
            MlpLikelihood::Categorical { .. } => {
                for i in 0..m {
                    let zr = &z_out[i * k..(i + 1) * k];
                    let rr = &rz_out[i * k..(i + 1) * k];
                    let yr = &y[i * k..(i + 1) * k];
                    let mx = zr.iter().fold(f64::NEG_INFINITY, |acc, &b| acc.max(b));
                    let lse = mx + zr.iter().map(|&zv| (zv - mx).exp()).sum::<f64>().ln();
                    let sy: f64 = yr.iter().sum();
                    let p: Vec<f64> = zr.iter().map(|&zv| (zv - lse).exp()).collect();
                    let pr: f64 = p.iter().zip(rr).map(|(a, b)| a * b).sum();
                    for c in 0..k {
                        delta[i * k + c] = (yr[c] - sy * p[c]) / mf;
                        rdelta[i * k + c] = -sy * p[c] * (rr[c] - pr) / mf;
                    }
                }
            }
            MlpLikelihood::GaussianFixed { sd } => {
                let inv_var = 1.0 / (sd * sd);
                for i in 0..m {
                    delta[i] = (y[i] - z_out[i]) * inv_var / mf;
                    rdelta[i] = -rz_out[i] * inv_var / mf;
                }
            }
            MlpLikelihood::GaussianLearned => {
                let vs = v[dim - 1];
                let inv_var = (-2.0 * theta[dim - 1]).exp();
                for i in 0..m {
                    let r = y[i] - z_out[i];
                    delta[i] = r * inv_var / mf;
                    rdelta[i] = (-rz_out[i] - 2.0 * r * vs) * inv_var / mf;
                    r_log_sd += -2.0 * r * (rz_out[i] + r * vs) * inv_var / mf;
                }
            }
        }
        // Backward with tangents.
        out.fill(0.0);
        for l in (0..nl).rev() {
            let (din, dout) = (widths[l], widths[l + 1]);
            let (wo, bo) = (self.w_off[l], self.b_off[l]);
            let (input, rinput) = (&a[l], &ra[l]);
            let gw = &mut out[wo..wo + din * dout];
            matmul(
                (din, dout, m),
                gw,
                false,
                (input, 1, din),
                (&rdelta, dout, 1),
                par,
            );
            if l > 0 {
                matmul(
                    (din, dout, m),
                    gw,
                    true,
                    (rinput, 1, din),
                    (&delta, dout, 1),
                    par,
                );
            }
            let gb = &mut out[bo..bo + dout];
            for row in rdelta.chunks_exact(dout) {
                for (g, r) in gb.iter_mut().zip(row) {
                    *g += r;
                }
            }
            if l > 0 {
                let (wl, vwl) = (&theta[wo..wo + din * dout], &v[wo..wo + din * dout]);
                let mut nd = vec![0.0; m * din];
                let mut nrd = vec![0.0; m * din];
                matmul(
                    (m, din, dout),
                    &mut nd,
                    false,
                    (&delta, dout, 1),
                    (wl, 1, dout),
                    par,
                );
                matmul(
                    (m, din, dout),
                    &mut nrd,
                    false,
                    (&rdelta, dout, 1),
                    (wl, 1, dout),
                    par,
                );
                matmul(
                    (m, din, dout),
                    &mut nrd,
                    true,
                    (&delta, dout, 1),
                    (vwl, 1, dout),
                    par,
                );
                for ((dv, rv), &h) in nd.iter_mut().zip(nrd.iter_mut()).zip(input.iter()) {
                    let active = h > 0.0;
                    if !active {
                        *dv = 0.0;
                        *rv = 0.0;
                    }
                }
                delta = nd;
                rdelta = nrd;
            }
        }
        let ps = self.prior_scale;
        for (o, vi) in out.iter_mut().zip(v) {
            *o -= ps * vi;
        }
        if self.likelihood == MlpLikelihood::GaussianLearned {
            out[dim - 1] += r_log_sd;
        }
        Ok(())
    }
}

/// The generalised Gauss-Newton matrix of an [`MlpDensity`] on one batch at
/// fixed parameters, as a Jacobian-free operator without autograd:
///
/// ```text
/// G v = Σᵢ Jᵢᵀ Hᵢ (Jᵢ v)      (sum over the batch's rows, no prior)
/// ```
///
/// with `Jᵢ` the Jacobian of row `i`'s network output `z_L` and `Hᵢ` the
/// Hessian of `−log p(yᵢ | z_L)` in the output (softmax: `diag(p) − ppᵀ`;
/// Gaussian: `1/σ²`), the convention of
/// `langevin::curvature::OutputModel::ggnvp`. With a learned noise scale the
/// output `log σ` adds `2 m v_σ` to its own entry (the Fisher information of
/// `N(f, σ²)` in `(f, log σ)` is `diag(1/σ², 2)`).
///
/// [`MlpDensity::ggn_operator`] runs the forward pass once (in f64) and keeps
/// the activations and the output Hessians; each [`MlpGgn::apply`] is then a
/// tangent forward pass (`J v`, the R-operator's forward half) and one
/// ordinary backward pass (`Jᵀ u`): about four matrix products per layer,
/// against a candle forward and two backward passes through autograd.
#[derive(Debug, Clone)]
pub struct MlpGgn {
    widths: Vec<usize>,
    w_off: Vec<usize>,
    b_off: Vec<usize>,
    likelihood: MlpLikelihood,
    theta: Vec<f64>,
    m: usize,
    /// `h_0 = x, h_1, …, h_{L-1}` (after the ReLU), each `m × width`.
    acts: Vec<Vec<f64>>,
    /// Softmax probabilities (`m × k`) for a categorical output.
    probs: Vec<f64>,
    /// `1/σ²` for a Gaussian output.
    inv_var: f64,
}

impl MlpDensity {
    /// The GGN of this network on `batch` at `params` (see [`MlpGgn`]):
    /// one forward pass in f64, whatever the density's dtype. Errors on
    /// mismatched shapes and on a non-finite network output.
    pub fn ggn_operator(&self, params: &Params, batch: &Batch) -> Result<MlpGgn> {
        self.check_params(params)?;
        let theta = params.values();
        let widths = &self.widths;
        let nl = widths.len() - 1;
        let k = widths[nl];
        let par = self.parallelism();
        let mut x = Vec::new();
        let m = read_rows::<f64>(&batch.x, widths[0], "batch features (columns)", &mut x)?;
        if m == 0 {
            return Err(Error::Data("empty batch".into()));
        }
        x.truncate(m * widths[0]);
        let y_cols = if self.likelihood.n_outputs() == 1 {
            1
        } else {
            k
        };
        if batch.y.elem_count() != m * y_cols {
            return Err(Error::DimensionMismatch {
                what: "batch targets",
                expected: m * y_cols,
                got: batch.y.elem_count(),
            });
        }
        let mut acts: Vec<Vec<f64>> = vec![x];
        let mut z_out = Vec::new();
        for l in 0..nl {
            let (din, dout) = (widths[l], widths[l + 1]);
            let (wo, bo) = (self.w_off[l], self.b_off[l]);
            let mut z = theta[bo..bo + dout].repeat(m);
            matmul(
                (m, dout, din),
                &mut z,
                true,
                (&acts[l], din, 1),
                (&theta[wo..wo + din * dout], dout, 1),
                par,
            );
            if l + 1 < nl {
                z.iter_mut()
                    .for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v });
                acts.push(z);
            } else {
                z_out = z;
            }
        }
        if z_out.iter().any(|v| !v.is_finite()) {
            return Err(Error::Density("non-finite model output".into()));
        }
        let (mut probs, mut inv_var) = (Vec::new(), 1.0);
        match self.likelihood {
            MlpLikelihood::Categorical { .. } => {
                probs = z_out;
                for row in probs.chunks_exact_mut(k) {
                    let mx = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                    row.iter_mut().for_each(|v| *v = (*v - mx).exp());
                    let s: f64 = row.iter().sum();
                    row.iter_mut().for_each(|v| *v /= s);
                }
            }
            MlpLikelihood::GaussianFixed { sd } => inv_var = 1.0 / (sd * sd),
            MlpLikelihood::GaussianLearned => inv_var = (-2.0 * theta[theta.len() - 1]).exp(),
        }
        Ok(MlpGgn {
            widths: widths.clone(),
            w_off: self.w_off.clone(),
            b_off: self.b_off.clone(),
            likelihood: self.likelihood,
            theta: theta.to_vec(),
            m,
            acts,
            probs,
            inv_var,
        })
    }

    /// `G v` of [`MlpGgn`] on `batch` at `params` (a fresh
    /// [`ggn_operator`](Self::ggn_operator) for one product).
    pub fn ggnvp(&self, params: &Params, batch: &Batch, v: &[f64]) -> Result<Vec<f64>> {
        let op = self.ggn_operator(params, batch)?;
        let mut out = vec![0.0; v.len()];
        op.apply(v, &mut out)?;
        Ok(out)
    }
}

impl MlpGgn {
    /// Number of parameters.
    pub fn dim(&self) -> usize {
        self.theta.len()
    }

    /// Rows of the batch.
    pub fn rows(&self) -> usize {
        self.m
    }

    /// `out = G v` (see [`MlpGgn`]). A non-finite result is an error
    /// ([`Error::Density`]), `out` then holds it.
    pub fn apply(&self, v: &[f64], out: &mut [f64]) -> Result<()> {
        let dim = self.theta.len();
        for (what, got) in [("GGN vector", v.len()), ("GGN output", out.len())] {
            if got != dim {
                return Err(Error::DimensionMismatch {
                    what,
                    expected: dim,
                    got,
                });
            }
        }
        let (widths, theta, m) = (&self.widths, &self.theta, self.m);
        let nl = widths.len() - 1;
        let k = widths[nl];
        let par = Parallelism::None;
        // Tangent forward: r_l = R z_l, masked to R h_l below the output.
        let mut r: Vec<f64> = Vec::new();
        for l in 0..nl {
            let (din, dout) = (widths[l], widths[l + 1]);
            let (wo, bo) = (self.w_off[l], self.b_off[l]);
            let mut rz = v[bo..bo + dout].repeat(m);
            matmul(
                (m, dout, din),
                &mut rz,
                true,
                (&self.acts[l], din, 1),
                (&v[wo..wo + din * dout], dout, 1),
                par,
            );
            if l > 0 {
                matmul(
                    (m, dout, din),
                    &mut rz,
                    true,
                    (&r, din, 1),
                    (&theta[wo..wo + din * dout], dout, 1),
                    par,
                );
            }
            if l + 1 < nl {
                for (rv, &h) in rz.iter_mut().zip(&self.acts[l + 1]) {
                    if h <= 0.0 {
                        *rv = 0.0;
                    }
                }
            }
            r = rz;
        }
        // Output Hessian: u = H (J v).
        match self.likelihood {
            MlpLikelihood::Categorical { .. } => {
                for (rr, p) in r.chunks_exact_mut(k).zip(self.probs.chunks_exact(k)) {
                    let pr: f64 = p.iter().zip(rr.iter()).map(|(a, b)| a * b).sum();
                    for (rc, &pc) in rr.iter_mut().zip(p) {
                        *rc = pc * (*rc - pr);
                    }
                }
            }
            _ => r.iter_mut().for_each(|x| *x *= self.inv_var),
        }
        // Backward: Jᵀ u.
        let mut delta = r;
        for l in (0..nl).rev() {
            let (din, dout) = (widths[l], widths[l + 1]);
            let (wo, bo) = (self.w_off[l], self.b_off[l]);
            let input = &self.acts[l];
            matmul(
                (din, dout, m),
                &mut out[wo..wo + din * dout],
                false,
                (input, 1, din),
                (&delta, dout, 1),
                par,
            );
            let gb = &mut out[bo..bo + dout];
            gb.fill(0.0);
            for row in delta.chunks_exact(dout) {
                for (g, d) in gb.iter_mut().zip(row) {
                    *g += d;
                }
            }
            if l > 0 {
                let mut prev = vec![0.0; m * din];
                matmul(
                    (m, din, dout),
                    &mut prev,
                    false,
                    (&delta, dout, 1),
                    (&theta[wo..wo + din * dout], 1, dout),
                    par,
                );
                for (dv, &h) in prev.iter_mut().zip(input) {
                    if h <= 0.0 {
                        *dv = 0.0;
                    }
                }
                delta = prev;
            }
        }
        if self.likelihood == MlpLikelihood::GaussianLearned {
            out[dim - 1] = 2.0 * m as f64 * v[dim - 1];
        }
        if out.iter().any(|x| !x.is_finite()) {
            return Err(Error::Density("non-finite GGN-vector product".into()));
        }
        Ok(())
    }
}

/// Where a pass writes its result.
enum Out<'a> {
    /// The batch-mean gradient (f64, ravel order).
    Mean(&'a mut [f64]),
    /// Per-example values and row-major `n × dim` gradients.
    PerExample {
        values: &'a mut [f64],
        grads: &'a mut [f64],
    },
    /// `Σᵢ gᵢ ⊙ gᵢ` over the rows, added into the slice (ravel order).
    DiagFisher(&'a mut [f64]),
}

impl LogDensity for MlpDensity {
    type Batch = Batch;
    type Aux = ();

    fn value_and_grad(
        &self,
        params: &Params,
        batch: &Batch,
        grad: &mut [f64],
    ) -> Result<(f64, ())> {
        self.check_params(params)?;
        if grad.len() != params.len() {
            return Err(Error::DimensionMismatch {
                what: "gradient buffer",
                expected: params.len(),
                got: grad.len(),
            });
        }
        Ok((self.run(params.values(), batch, Out::Mean(grad))?, ()))
    }

    /// Exact, by the R-operator (see `MlpDensity::r_op` in the source): in
    /// f64 whatever the density's dtype, so for an f32 density it is the
    /// Hessian of the same model evaluated in f64 (relative error about
    /// `1e-14`), not of its f32 rounding.
    fn hvp_exact(
        &self,
        params: &Params,
        batch: &Batch,
        v: &[f64],
        out: &mut [f64],
    ) -> Result<bool> {
        self.check_params(params)?;
        for (what, got) in [("hvp vector", v.len()), ("hvp output", out.len())] {
            if got != params.len() {
                return Err(Error::DimensionMismatch {
                    what,
                    expected: params.len(),
                    got,
                });
            }
        }
        self.r_op(params.values(), v, batch, out)?;
        Ok(true)
    }
}

impl PerExampleLogLik for MlpDensity {
    type Batch = Batch;

    /// `ℓᵢ = log p(yᵢ | xᵢ, θ) + log p(θ)/N` and its gradient for every row,
    /// from one forward and one backward pass (outer-product trick).
    fn per_example(&self, params: &Params, batch: &Batch) -> Result<PerExample> {
        self.check_params(params)?;
        let n = batch.x.dim(0)?;
        let dim = params.len();
        let mut values = vec![0.0; n];
        let mut grads = vec![0.0; n * dim];
        self.run(
            params.values(),
            batch,
            Out::PerExample {
                values: &mut values,
                grads: &mut grads,
            },
        )?;
        Ok(PerExample {
            n,
            dim,
            values,
            grads,
        })
    }

    /// Fused: [`MlpDensity::accumulate_diag_fisher`] into a zeroed buffer
    /// (two matrix products per layer, no `n × dim` array).
    fn diag_fisher(&self, params: &Params, batch: &Batch) -> Result<DiagFisherBatch> {
        let mut sum_sq = vec![0.0; params.len()];
        let mean_value = self.accumulate_diag_fisher(params, batch, &mut sum_sq)?;
        Ok(DiagFisherBatch {
            n: batch.x.dim(0)?,
            mean_value,
            sum_sq,
        })
    }
}

/// The element types the density runs in (f32, f64).
trait Real: WithDType + Default {}
impl Real for f32 {}
impl Real for f64 {}

/// Per-thread buffers, grown to the largest batch seen and reused.
struct Scratch<T> {
    /// θ in T.
    w: Vec<T>,
    /// Batch features (m × d) in T.
    x: Vec<T>,
    /// Targets in f64.
    y: Vec<f64>,
    /// Activations h_1 .. h_{L-1} and the output z_L.
    acts: Vec<T>,
    /// Deltas (ping-pong).
    d0: Vec<T>,
    d1: Vec<T>,
    /// Batch-mean gradient in T.
    g: Vec<T>,
    /// Diagonal Fisher: squared activations, squared deltas, their product.
    sq_a: Vec<T>,
    sq_d: Vec<T>,
    g2: Vec<T>,
    /// Offsets of the layers' activations in `acts`.
    offs: Vec<usize>,
}

impl<T> Scratch<T> {
    const fn new() -> Self {
        Self {
            w: Vec::new(),
            x: Vec::new(),
            y: Vec::new(),
            acts: Vec::new(),
            d0: Vec::new(),
            d1: Vec::new(),
            g: Vec::new(),
            sq_a: Vec::new(),
            sq_d: Vec::new(),
            g2: Vec::new(),
            offs: Vec::new(),
        }
    }
}

thread_local! {
    static F32_SCRATCH: RefCell<Scratch<f32>> = const { RefCell::new(Scratch::new()) };
    static F64_SCRATCH: RefCell<Scratch<f64>> = const { RefCell::new(Scratch::new()) };
}

/// The first `n` entries of `v`, growing it (never shrinking) as needed.
fn ensure<T: Copy + Default>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    if v.len() < n {
        v.resize(n, T::default());
    }
    &mut v[..n]
}

/// Copy a 2-D `rows × d` tensor into `buf` (converted to T); returns `rows`.
fn read_rows<T: Real>(t: &Tensor, d: usize, what: &'static str, buf: &mut Vec<T>) -> Result<usize> {
    let (rows, cols) = t.dims2()?;
    if cols != d {
        return Err(Error::DimensionMismatch {
            what,
            expected: d,
            got: cols,
        });
    }
    copy_tensor(t, buf)?;
    Ok(rows)
}

/// Copy all of `t` into `buf` as f64; returns the element count.
fn read_f64(t: &Tensor, buf: &mut Vec<f64>) -> Result<usize> {
    copy_tensor(t, buf)
}

/// Copy `t` (any shape, row-major) into the front of `buf`, converted to `T`.
/// Contiguous f32/f64 CPU tensors are read in place; anything else goes
/// through candle's conversion.
fn copy_tensor<T: Real>(t: &Tensor, buf: &mut Vec<T>) -> Result<usize> {
    let n = t.elem_count();
    let dst = ensure(buf, n);
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets()) {
            match t.dtype() {
                DType::F32 => return Ok(convert(&cpu.as_slice::<f32>()?[a..b], dst)),
                DType::F64 => return Ok(convert(&cpu.as_slice::<f64>()?[a..b], dst)),
                _ => {}
            }
        }
    }
    let v = t
        .flatten_all()?
        .to_device(&candle_core::Device::Cpu)?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    Ok(convert(&v, dst))
}

fn convert<S: WithDType, T: WithDType>(src: &[S], dst: &mut [T]) -> usize {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = T::from_f64(s.to_f64());
    }
    src.len()
}

/// `dst (m × n, row-major) = [dst +] lhs · rhs`, with `lhs` (m × k) and
/// `rhs` (k × n) given as `(slice, row stride, column stride)` so that
/// transposed views need no copy.
/// Products with fewer multiply-adds than this ignore the density's thread
/// count (see [`matmul`]).
const PAR_MIN_MULADDS: usize = 1 << 25;

fn matmul<T: Real>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    accumulate: bool,
    lhs: (&[T], usize, usize),
    rhs: (&[T], usize, usize),
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    let fits = |len: usize, r: usize, c: usize, rs: usize, cs: usize| {
        r == 0 || c == 0 || (r - 1) * rs + (c - 1) * cs < len
    };
    assert!(
        dst.len() >= m * n
            && fits(lhs.0.len(), m, k, lhs.1, lhs.2)
            && fits(rhs.0.len(), k, n, rhs.1, rhs.2),
        "matmul operands too short"
    );
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(T::from_f64(0.0));
        }
        return;
    }
    // Small products run on the calling thread: at two threads the MLP
    // 784-256-256-10 step at batch 64 (largest product 12.8 M
    // multiply-adds) took 2.47 ms with every product on rayon and 2.18 ms
    // with none (`bench_posteriors mlp_step` at 2 threads), although a lone
    // 64×784×256 product is faster on two threads (113 against 160 µs); a
    // 1024³ product halves (12.0 → 6.4 ms).
    let par = if m * n * k < PAR_MIN_MULADDS {
        Parallelism::None
    } else {
        par
    };
    // SAFETY: the assertion above keeps every index gemm reads or writes
    // inside the three slices; `dst` does not alias the operands (it is a
    // distinct `&mut`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.0.as_ptr(),
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0.as_ptr(),
            rhs.2 as isize,
            rhs.1 as isize,
            T::from_f64(1.0),
            T::from_f64(1.0),
            false,
            false,
            false,
            par,
        );
    }
}

impl MlpDensity {
    /// The density of an MLP [`Model`] (same layout and value as its candle density).
    pub fn for_model(model: &Model, dtype: DType) -> crate::Result<Self> {
        let spec = model.spec();
        if spec.kind != ModelKind::Mlp {
            return Err(Error::config("model", format!("{} is not an MLP", spec.kind)).into());
        }
        let likelihood = match (spec.task, spec.noise) {
            (Task::Classification { n_classes }, _) => MlpLikelihood::Categorical { n_classes },
            (Task::Regression, _) if model.layout().index_of("log_noise_sd").is_some() => {
                MlpLikelihood::GaussianLearned
            }
            (Task::Regression, Noise::Fixed(sd)) => MlpLikelihood::GaussianFixed { sd },
            (Task::Regression, Noise::Learned) => MlpLikelihood::GaussianFixed { sd: 1.0 },
        };
        let mut widths = vec![spec.feature_names.len()];
        widths.extend(&spec.hidden);
        widths.push(likelihood.n_outputs());
        let d = Self::new(&widths, likelihood, spec.prior_sd, spec.n_train, dtype)?;
        if d.layout.len() != model.n_params() {
            return Err(Error::DimensionMismatch {
                what: "MLP parameter count",
                expected: model.n_params(),
                got: d.layout.len(),
            }
            .into());
        }
        Ok(d)
    }
}

/// A model's log posterior as a [`LogDensity`]: the hand-written MLP
/// ([`MlpDensity`]) or candle autograd for every other case.
pub enum ModelDensity {
    Candle(CandleModelDensity),
    Mlp(MlpDensity),
}

impl LogDensity for ModelDensity {
    type Batch = Batch;
    type Aux = ();

    fn value_and_grad(
        &self,
        params: &Params,
        batch: &Batch,
        grad: &mut [f64],
    ) -> Result<(f64, ())> {
        match self {
            ModelDensity::Candle(d) => d.value_and_grad(params, batch, grad),
            ModelDensity::Mlp(d) => d.value_and_grad(params, batch, grad),
        }
    }

    /// The value without a backward pass where the density has one.
    fn value(&self, params: &Params, batch: &Batch) -> Result<(f64, ())> {
        match self {
            ModelDensity::Candle(d) => d.value(params, batch),
            ModelDensity::Mlp(d) => d.value(params, batch),
        }
    }

    /// The exact product where the variant has one (candle with double
    /// backward available; see [`LogDensity::hvp_exact`]).
    fn hvp_exact(
        &self,
        params: &Params,
        batch: &Batch,
        v: &[f64],
        out: &mut [f64],
    ) -> Result<bool> {
        match self {
            ModelDensity::Candle(d) => d.hvp_exact(params, batch, v, out),
            ModelDensity::Mlp(d) => d.hvp_exact(params, batch, v, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::Rng;

    fn model(d: usize, hidden: &[usize], task: Task, noise: Noise, n_train: usize) -> Model {
        Model::new(crate::ModelSpec {
            kind: ModelKind::Mlp,
            task,
            feature_names: (0..d).map(|i| format!("f{i}")).collect(),
            hidden: hidden.to_vec(),
            prior_sd: 1.3,
            noise,
            n_train,
        })
        .unwrap()
    }

    /// Random features, targets and parameters (biases and `log_noise_sd` non-zero).
    fn data(m: &Model, rows: usize, seed: u64) -> (Vec<f64>, Vec<f64>, Params) {
        let mut rng = langevin_core::chain_rng(seed, 7);
        let d = m.spec().feature_names.len();
        let mut x = vec![0.0; rows * d];
        langevin_core::rng::fill_standard_normal(&mut rng, &mut x);
        let y: Vec<f64> = (0..rows)
            .map(|_| match m.spec().task {
                Task::Classification { n_classes } => rng.random_range(0..n_classes) as f64,
                Task::Regression => rng.random_range(-2.0..2.0),
            })
            .collect();
        let mut p = m.init(&mut rng);
        for v in p.values_mut().iter_mut() {
            *v += 0.1 * rng.random_range(-1.0..1.0);
        }
        (x, y, p)
    }

    fn cases() -> Vec<(Model, usize)> {
        vec![
            (
                model(
                    5,
                    &[7],
                    Task::Classification { n_classes: 3 },
                    Noise::Learned,
                    50,
                ),
                9,
            ),
            (
                model(
                    12,
                    &[16, 9],
                    Task::Classification { n_classes: 4 },
                    Noise::Learned,
                    1000,
                ),
                33,
            ),
            (model(4, &[6, 5], Task::Regression, Noise::Learned, 20), 11),
            (model(3, &[8], Task::Regression, Noise::Fixed(0.7), 20), 1),
            (
                model(
                    30,
                    &[40, 20, 10],
                    Task::Classification { n_classes: 10 },
                    Noise::Learned,
                    60_000,
                ),
                64,
            ),
        ]
    }

    fn grad_of<D: LogDensity<Batch = Batch>>(dens: &D, p: &Params, b: &Batch) -> (f64, Vec<f64>) {
        let mut g = vec![f64::NAN; p.len()];
        let (v, _) = dens.value_and_grad(p, b, &mut g).unwrap();
        (v, g)
    }

    #[test]
    fn value_and_gradient_match_candle_autograd() {
        for seed in 0..3 {
            for (m, rows) in cases() {
                let (x, y, p) = data(&m, rows, seed);
                let b64 = m.batch(&x, &y, DType::F64, &Device::Cpu).unwrap();
                let b32 = m.batch(&x, &y, DType::F32, &Device::Cpu).unwrap();
                let (vr, gr) = grad_of(&m.candle_density(DType::F64, &Device::Cpu), &p, &b64);
                let scale = gr.iter().fold(1e-3f64, |a, g| a.max(g.abs()));
                // f64: equal to rounding.
                let fast = m.mlp_density(DType::F64).unwrap();
                let (v, g) = grad_of(&fast, &p, &b64);
                assert!((v - vr).abs() < 1e-10 * (1.0 + vr.abs()), "{v} vs {vr}");
                for (i, (a, r)) in g.iter().zip(&gr).enumerate() {
                    assert!((a - r).abs() < 1e-10 * scale, "f64 grad {i}: {a} vs {r}");
                }
                // f32 (also read from an f64 batch): f32 rounding.
                let fast = m.mlp_density(DType::F32).unwrap();
                for b in [&b32, &b64] {
                    let (v, g) = grad_of(&fast, &p, b);
                    assert!((v - vr).abs() < 1e-5 * (1.0 + vr.abs()), "{v} vs {vr}");
                    for (i, (a, r)) in g.iter().zip(&gr).enumerate() {
                        assert!((a - r).abs() < 2e-5 * scale, "f32 grad {i}: {a} vs {r}");
                    }
                }
                // And the candle f32 density agrees with the fast f32 one.
                let (vc, gc) = grad_of(&m.candle_density(DType::F32, &Device::Cpu), &p, &b32);
                let (v, g) = grad_of(&fast, &p, &b32);
                assert!((v - vc).abs() < 1e-5 * (1.0 + vc.abs()));
                for (a, c) in g.iter().zip(&gc) {
                    assert!((a - c).abs() < 4e-5 * scale, "{a} vs {c}");
                }
            }
        }
    }

    #[test]
    fn model_density_uses_the_fast_path_for_mlps_on_the_cpu() {
        let (m, _) = cases().remove(0);
        assert!(matches!(
            m.density(DType::F32, &Device::Cpu),
            ModelDensity::Mlp(_)
        ));
        assert!(matches!(
            m.density(DType::F64, &Device::Cpu),
            ModelDensity::Mlp(_)
        ));
        assert!(matches!(
            m.density(DType::BF16, &Device::Cpu),
            ModelDensity::Candle(_)
        ));
        let glm = Model::new(crate::ModelSpec {
            kind: ModelKind::Softmax,
            ..m.spec().clone()
        })
        .unwrap();
        assert!(matches!(
            glm.density(DType::F32, &Device::Cpu),
            ModelDensity::Candle(_)
        ));
        assert!(MlpDensity::for_model(&glm, DType::F32).is_err());
    }

    #[test]
    fn model_density_value_is_the_value_of_value_and_grad() {
        // `value` skips the backward pass (candle) but not the number:
        // every model kind, both routes, f64.
        for kind in [
            ModelKind::Linear,
            ModelKind::Logistic,
            ModelKind::Softmax,
            ModelKind::Mlp,
        ] {
            let (base, rows) = cases().remove(0);
            let task = match kind {
                ModelKind::Linear => Task::Regression,
                ModelKind::Logistic => Task::Classification { n_classes: 2 },
                _ => base.spec().task,
            };
            let m = Model::new(crate::ModelSpec {
                kind,
                task,
                ..base.spec().clone()
            })
            .unwrap();
            let (x, y, p) = data(&m, rows, 3);
            let b = m.batch(&x, &y, DType::F64, &Device::Cpu).unwrap();
            let dens = m.density(DType::F64, &Device::Cpu);
            let (v, _) = grad_of(&dens, &p, &b);
            let (w, ()) = dens.value(&p, &b).unwrap();
            assert!(
                (v - w).abs() <= 1e-12 * v.abs().max(1.0),
                "{kind:?}: {v} vs {w}"
            );
        }
    }

    #[test]
    fn per_example_terms_match_batches_of_one() {
        for (m, rows) in cases() {
            let (x, y, p) = data(&m, rows, 11);
            let d = m.spec().feature_names.len();
            for dtype in [DType::F64, DType::F32] {
                let fast = m.mlp_density(dtype).unwrap();
                let b = m.batch(&x, &y, dtype, &Device::Cpu).unwrap();
                let pe = fast.per_example(&p, &b).unwrap();
                assert_eq!((pe.n, pe.dim), (rows, p.len()));
                let tol = if dtype == DType::F64 { 1e-10 } else { 2e-5 };
                // Mean of the per-example terms = the batch density.
                let (v, g) = grad_of(&fast, &p, &b);
                let scale = g.iter().fold(1e-3f64, |a, g| a.max(g.abs()));
                assert!((pe.mean_value() - v).abs() < tol * (1.0 + v.abs()));
                for (a, r) in pe.mean_grad().iter().zip(&g) {
                    assert!((a - r).abs() < tol * scale, "{a} vs {r}");
                }
                // Each row = the density of a batch of one.
                for i in 0..rows {
                    let bi = m
                        .batch(&x[i * d..(i + 1) * d], &y[i..i + 1], dtype, &Device::Cpu)
                        .unwrap();
                    let (vi, gi) = grad_of(&fast, &p, &bi);
                    let scale = gi.iter().fold(1e-3f64, |a, g| a.max(g.abs()));
                    assert!((pe.values[i] - vi).abs() < tol * (1.0 + vi.abs()));
                    for (a, r) in pe.grad(i).iter().zip(&gi) {
                        assert!((a - r).abs() < tol * scale, "row {i}: {a} vs {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn fused_diag_fisher_equals_the_sum_of_squared_per_example_gradients() {
        for (m, rows) in cases() {
            let (x, y, mut p) = data(&m, rows, 13);
            // Large parameters make the prior's cross term visible.
            p.values_mut().iter_mut().for_each(|v| *v *= 3.0);
            for dtype in [DType::F64, DType::F32] {
                let fast = m.mlp_density(dtype).unwrap();
                let b = m.batch(&x, &y, dtype, &Device::Cpu).unwrap();
                let pe = fast.per_example(&p, &b).unwrap();
                let mut want = vec![0.5; p.len()];
                for i in 0..rows {
                    for (w, g) in want.iter_mut().zip(pe.grad(i)) {
                        *w += g * g;
                    }
                }
                let mut acc = vec![0.5; p.len()];
                let v = fast.accumulate_diag_fisher(&p, &b, &mut acc).unwrap();
                assert!((v - pe.mean_value()).abs() < 1e-6 * (1.0 + v.abs()));
                let tol = if dtype == DType::F64 { 1e-9 } else { 1e-4 };
                let scale = want.iter().fold(1.0f64, |a, w| a.max(w.abs()));
                for (i, (a, w)) in acc.iter().zip(&want).enumerate() {
                    assert!(
                        (a - w).abs() < tol * scale,
                        "{dtype:?} entry {i}: {a} vs {w}"
                    );
                }
                assert!(fast.accumulate_diag_fisher(&p, &b, &mut acc[1..]).is_err());
                // Through the trait: the fused override equals the default
                // (squared rows of `per_example`) that any model gets.
                struct Unfused<'a>(&'a MlpDensity);
                impl PerExampleLogLik for Unfused<'_> {
                    type Batch = Batch;
                    fn per_example(&self, p: &Params, b: &Batch) -> Result<PerExample> {
                        self.0.per_example(p, b)
                    }
                }
                let fused = fast.diag_fisher(&p, &b).unwrap();
                let plain = Unfused(&fast).diag_fisher(&p, &b).unwrap();
                assert_eq!((fused.n, plain.n), (rows, rows));
                assert!((fused.mean_value - plain.mean_value).abs() < 1e-6 * (1.0 + v.abs()));
                for (a, w) in fused.sum_sq.iter().zip(&plain.sum_sq) {
                    assert!((a - w).abs() < tol * scale, "{dtype:?}: {a} vs {w}");
                }
            }
        }
    }

    #[test]
    fn threads_share_the_density_and_get_identical_results() {
        let (m, rows) = cases().remove(1);
        let (x, y, p) = data(&m, rows, 3);
        let fast = m.mlp_density(DType::F32).unwrap();
        let b = m.batch(&x, &y, DType::F32, &Device::Cpu).unwrap();
        let reference = grad_of(&fast, &p, &b);
        // A bigger batch on this thread first: buffers grow, results unchanged.
        let (x2, y2, _) = data(&m, 3 * rows, 4);
        let b2 = m.batch(&x2, &y2, DType::F32, &Device::Cpu).unwrap();
        grad_of(&fast, &p, &b2);
        assert_eq!(grad_of(&fast, &p, &b), reference);
        // Batch is not Sync (candle tensors are), so each thread builds its own.
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    let b = m.batch(&x, &y, DType::F32, &Device::Cpu).unwrap();
                    for _ in 0..3 {
                        assert_eq!(grad_of(&fast, &p, &b), reference);
                    }
                });
            }
        });
        let two = m.mlp_density(DType::F32).unwrap().with_threads(2);
        let (v, g) = grad_of(&two, &p, &b);
        assert!((v - reference.0).abs() < 1e-6 * (1.0 + v.abs()));
        for (a, r) in g.iter().zip(&reference.1) {
            assert!((a - r).abs() < 1e-5 * (1.0 + r.abs()));
        }
    }

    #[test]
    fn bad_inputs_are_errors_and_nan_is_reported_not_a_panic() {
        let (m, rows) = cases().remove(0);
        let (x, y, p) = data(&m, rows, 5);
        let fast = m.mlp_density(DType::F32).unwrap();
        let b = m.batch(&x, &y, DType::F32, &Device::Cpu).unwrap();
        let mut g = vec![0.0; p.len()];
        let short = Params::from_vec(vec![0.0; p.len() - 1]);
        assert!(matches!(
            fast.value_and_grad(&short, &b, &mut g),
            Err(Error::DimensionMismatch { .. })
        ));
        assert!(matches!(
            fast.value_and_grad(&p, &b, &mut g[1..]),
            Err(Error::DimensionMismatch { .. })
        ));
        let wide = Batch {
            x: Tensor::zeros((rows, 6), DType::F32, &Device::Cpu).unwrap(),
            y: b.y.clone(),
        };
        assert!(matches!(
            fast.value_and_grad(&p, &wide, &mut g),
            Err(Error::DimensionMismatch { .. })
        ));
        let empty = Batch {
            x: Tensor::zeros((0, 5), DType::F32, &Device::Cpu).unwrap(),
            y: Tensor::zeros((0, 3), DType::F32, &Device::Cpu).unwrap(),
        };
        assert!(matches!(
            fast.value_and_grad(&p, &empty, &mut g),
            Err(Error::Data(_))
        ));
        let few_targets = Batch {
            x: b.x.clone(),
            y: b.y.narrow(0, 0, rows - 1).unwrap(),
        };
        assert!(fast.value_and_grad(&p, &few_targets, &mut g).is_err());
        // NaN in the data or in the parameters: a non-finite value or
        // gradient, which the transforms report.
        let mut xn = x.clone();
        xn[3] = f64::NAN;
        let bn = m.batch(&xn, &y, DType::F32, &Device::Cpu).unwrap();
        let (v, _) = fast.value_and_grad(&p, &bn, &mut g).unwrap();
        assert!(langevin_core::check_finite(v, &g, 0).is_err());
        let mut pn = p.clone();
        pn.values_mut()[0] = f64::INFINITY;
        let (v, _) = fast.value_and_grad(&pn, &b, &mut g).unwrap();
        assert!(!v.is_finite());
        assert!(fast.per_example(&pn, &b).unwrap().check_finite(0).is_err());
        assert!(fast.diag_fisher(&pn, &b).unwrap().check_finite(0).is_err());
        // Construction errors.
        let cat = MlpLikelihood::Categorical { n_classes: 3 };
        assert!(MlpDensity::new(&[4], cat, 1.0, 10, DType::F32).is_err());
        assert!(MlpDensity::new(&[4, 0, 3], cat, 1.0, 10, DType::F32).is_err());
        assert!(MlpDensity::new(&[4, 2], cat, 1.0, 10, DType::F32).is_err());
        assert!(MlpDensity::new(&[4, 3], cat, 0.0, 10, DType::F32).is_err());
        assert!(MlpDensity::new(&[4, 3], cat, 1.0, 0, DType::F32).is_err());
        assert!(MlpDensity::new(&[4, 3], cat, 1.0, 10, DType::U8).is_err());
        let fixed = MlpLikelihood::GaussianFixed { sd: -1.0 };
        assert!(MlpDensity::new(&[4, 1], fixed, 1.0, 10, DType::F32).is_err());
    }

    #[test]
    fn flops_count_the_matrix_products() {
        let d = MlpDensity::new(
            &[784, 256, 256, 10],
            MlpLikelihood::Categorical { n_classes: 10 },
            1.0,
            60_000,
            DType::F32,
        )
        .unwrap();
        assert_eq!(d.layout().len(), 269_322);
        let fwd = 2.0 * 64.0 * (784.0 * 256.0 + 256.0 * 256.0 + 256.0 * 10.0);
        let act = 2.0 * 64.0 * (256.0 * 256.0 + 256.0 * 10.0);
        assert_eq!(d.flops(64), 2.0 * fwd + act);
    }
}
