//! Log densities computed by candle, with gradients from candle's autograd.
//!
//! # Exact Hessian-vector products (double backward)
//!
//! [`CandleDensity`] implements [`LogDensity::hvp_exact`] as the gradient of
//! `∇f(θ) · v`: one backward pass that keeps its own graph, then a second
//! backward pass through it. candle 0.11 detaches every gradient during
//! backward (so the second pass would silently miss terms) unless the
//! environment variable `CANDLE_GRAD_DO_NOT_DETACH` is set to a non-empty
//! value other than `0`. candle reads it into a **thread-local** on the first
//! backward pass of each thread and never again, so:
//!
//! * set it in the environment that starts the process
//!   (`CANDLE_GRAD_DO_NOT_DETACH=1 my-program`), or call
//!   [`enable_double_backward`] at the start of `main`, before any thread
//!   (including rayon's pool) runs a backward pass;
//! * a thread that ran a backward pass before the variable was set keeps
//!   detaching for its whole life. [`double_backward_available`] checks the
//!   calling thread with a three-operation probe (`d²(x³)/dx²`, which comes
//!   out `4x` instead of `6x` when gradients are detached), and
//!   `hvp_exact` returns `Ok(false)` on such a thread, so callers fall back
//!   to finite differences instead of returning a wrong "exact" product.
//!
//! With the variable set, every backward pass of the thread builds the graph
//! of its own operations: ordinary gradients cost a little more memory until
//! their `GradStore` is dropped. The product is exact for models whose
//! operations' backward rules are themselves differentiable candle
//! operations (matmul, broadcasting, elementwise arithmetic, `exp`, `log`,
//! `tanh`, `sqr`, `sqrt`, sums, ...); custom ops with a hand-written backward
//! (e.g. `candle_nn::ops::softmax_last_dim`) are differentiated only once:
//! write such models with elementary operations when you need curvature.

use std::cell::Cell;
use std::marker::PhantomData;

use candle_core::{DType, Device, Tensor, Var};

use crate::density::LogDensity;
use crate::error::{Error, Result};
use crate::params::Params;

/// A log density written with candle tensors.
///
/// `f(tensors, batch)` receives one tensor per entry of the parameter layout,
/// in ravel order, with the layout's shapes and the density's dtype (f32 by
/// default), and returns a scalar tensor: the batch-averaged log posterior.
/// Gradients come from candle's reverse-mode autograd and are written back in
/// ravel order as `f64`.
pub struct CandleDensity<B: ?Sized, F> {
    f: F,
    dtype: DType,
    device: Device,
    _batch: PhantomData<fn(&B)>,
}

impl<B: ?Sized, F> CandleDensity<B, F>
where
    F: Fn(&[Tensor], &B) -> candle_core::Result<Tensor> + Send + Sync,
{
    /// An f32 density on the CPU.
    pub fn new(f: F) -> Self {
        Self {
            f,
            dtype: DType::F32,
            device: Device::Cpu,
            _batch: PhantomData,
        }
    }

    /// Evaluate the model in `dtype` (F32 or F64).
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// Evaluate the model on `device`.
    pub fn with_device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The parameter tensors of `params` as candle variables (ravel order).
    pub fn vars(&self, params: &Params) -> Result<Vec<Var>> {
        params_to_vars(params, self.dtype, &self.device)
    }

    /// Call the user's function on plain (non-variable) tensors.
    pub fn eval_tensor(&self, params: &Params, batch: &B) -> Result<Tensor> {
        let vars = self.vars(params)?;
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        Ok((self.f)(&ts, batch)?)
    }
}

/// The environment variable candle 0.11 reads to keep gradient graphs.
pub const DOUBLE_BACKWARD_ENV: &str = "CANDLE_GRAD_DO_NOT_DETACH";

thread_local! {
    /// This thread's probe result (candle's own flag never changes after
    /// the thread's first backward pass, and the probe runs one).
    static DOUBLE_BACKWARD: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Set [`DOUBLE_BACKWARD_ENV`] to `1` for this process (unless it is already
/// set) and report whether double backward works on the calling thread
/// ([`double_backward_available`]).
///
/// Call it at the start of `main`, before other threads exist: changing the
/// environment while another thread reads it through C code (`getenv`) is a
/// data race, and threads that already ran a backward pass keep detaching.
/// Threads started afterwards (e.g. a rayon pool built later) pick it up.
pub fn enable_double_backward() -> bool {
    let set = std::env::var_os(DOUBLE_BACKWARD_ENV).is_some_and(|s| !s.is_empty() && s != "0");
    if !set {
        std::env::set_var(DOUBLE_BACKWARD_ENV, "1");
    }
    double_backward_available()
}

/// Whether candle keeps gradient graphs on the calling thread, so that a
/// second backward pass through a gradient is exact. Probed once per thread
/// (`d²(x³)/dx²` at `x = 1.5` must be `9`; detached gradients give `6`) and
/// cached; the probe fixes candle's own per-thread flag, so the answer
/// cannot change afterwards on this thread.
pub fn double_backward_available() -> bool {
    DOUBLE_BACKWARD.with(|c| {
        if let Some(b) = c.get() {
            return b;
        }
        let b = probe_double_backward().unwrap_or(false);
        c.set(Some(b));
        b
    })
}

fn probe_double_backward() -> candle_core::Result<bool> {
    let x = Var::new(1.5f64, &Device::Cpu)?;
    let y = x.as_tensor().mul(x.as_tensor())?.mul(x.as_tensor())?;
    let g = match y.backward()?.get(x.as_tensor()) {
        Some(g) => g.clone(),
        None => return Ok(false),
    };
    let g2 = match g.backward()?.get(x.as_tensor()) {
        Some(g2) => g2.to_scalar::<f64>()?,
        None => return Ok(false),
    };
    Ok((g2 - 9.0).abs() < 1e-12)
}

/// `Σₖ sum(gₖ ⊙ vₖ)` over the tensors of `grads` belonging to `vars`, with
/// `v` split in ravel order; `None` when no variable has a gradient.
pub fn grad_dot(
    layout: &crate::params::ParamLayout,
    vars: &[Var],
    grads: &candle_core::backprop::GradStore,
    v: &[f64],
) -> Result<Option<Tensor>> {
    let mut acc: Option<Tensor> = None;
    for (k, (spec, var)) in layout.specs().iter().zip(vars).enumerate() {
        let Some(g) = grads.get(var.as_tensor()) else {
            continue;
        };
        let off = layout.offset(k);
        let vk = f64_to_tensor(&v[off..off + spec.numel()], g.dims(), g.dtype(), g.device())?;
        let term = g.mul(&vk)?.sum_all()?;
        acc = Some(match acc {
            Some(a) => a.add(&term)?,
            None => term,
        });
    }
    Ok(acc)
}

/// A tensor of `dtype` (F32 or F64) with `shape` holding `vals`.
pub fn f64_to_tensor(
    vals: &[f64],
    shape: &[usize],
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let t = Tensor::from_vec(vals.to_vec(), shape, device)?;
    Ok(if dtype == DType::F64 {
        t
    } else {
        t.to_dtype(dtype)?
    })
}

/// Write the gradients of `vars` from `grads` into `out` (ravel order),
/// zero where a variable has none.
pub fn write_grads(
    layout: &crate::params::ParamLayout,
    vars: &[Var],
    grads: &candle_core::backprop::GradStore,
    out: &mut [f64],
) -> Result<()> {
    for (k, (spec, var)) in layout.specs().iter().zip(vars).enumerate() {
        let off = layout.offset(k);
        let dst = &mut out[off..off + spec.numel()];
        match grads.get(var.as_tensor()) {
            Some(g) => tensor_into_f64(g, dst)?,
            None => dst.fill(0.0),
        }
    }
    Ok(())
}

/// Build one candle variable per parameter tensor.
pub fn params_to_vars(params: &Params, dtype: DType, device: &Device) -> Result<Vec<Var>> {
    let layout = params.layout();
    let mut out = Vec::with_capacity(layout.specs().len());
    for (k, spec) in layout.specs().iter().enumerate() {
        let off = layout.offset(k);
        let vals = &params.values()[off..off + spec.numel()];
        let shape = spec.shape.clone();
        let var = match dtype {
            DType::F32 => {
                let v: Vec<f32> = vals.iter().map(|&x| x as f32).collect();
                Var::from_vec(v, shape, device)?
            }
            DType::F64 => Var::from_vec(vals.to_vec(), shape, device)?,
            other => {
                return Err(Error::config(
                    "dtype",
                    format!("unsupported dtype {other:?}; use F32 or F64"),
                ))
            }
        };
        out.push(var);
    }
    Ok(out)
}

/// Copy a tensor's values (any float dtype) into `out` as f64, row-major.
pub fn tensor_into_f64(t: &Tensor, out: &mut [f64]) -> Result<()> {
    if t.elem_count() != out.len() {
        return Err(Error::DimensionMismatch {
            what: "tensor size",
            expected: out.len(),
            got: t.elem_count(),
        });
    }
    match t.dtype() {
        DType::F64 => {
            let v = t.flatten_all()?.to_vec1::<f64>()?;
            out.copy_from_slice(&v);
        }
        DType::F32 => {
            let v = t.flatten_all()?.to_vec1::<f32>()?;
            for (o, x) in out.iter_mut().zip(v) {
                *o = f64::from(x);
            }
        }
        _ => {
            let v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            out.copy_from_slice(&v);
        }
    }
    Ok(())
}

impl<B: ?Sized, F> LogDensity for CandleDensity<B, F>
where
    F: Fn(&[Tensor], &B) -> candle_core::Result<Tensor> + Send + Sync,
{
    type Batch = B;
    type Aux = ();

    fn value_and_grad(&self, params: &Params, batch: &B, grad: &mut [f64]) -> Result<(f64, ())> {
        if grad.len() != params.len() {
            return Err(Error::DimensionMismatch {
                what: "gradient buffer",
                expected: params.len(),
                got: grad.len(),
            });
        }
        let vars = self.vars(params)?;
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = (self.f)(&ts, batch)?;
        if out.elem_count() != 1 {
            return Err(Error::Density(format!(
                "log density must be a scalar tensor, got shape {:?}",
                out.dims()
            )));
        }
        let value = out.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?[0];
        let grads = out.backward()?;
        write_grads(params.layout(), &vars, &grads, grad)?;
        Ok((value, ()))
    }

    /// `H v` as the gradient of `∇f · v` by double backward (see the module
    /// doc): exact up to the rounding of the model's dtype. `Ok(false)` when
    /// double backward is unavailable on this thread
    /// ([`double_backward_available`]).
    fn hvp_exact(&self, params: &Params, batch: &B, v: &[f64], out: &mut [f64]) -> Result<bool> {
        for (what, got) in [("hvp vector", v.len()), ("hvp output", out.len())] {
            if got != params.len() {
                return Err(Error::DimensionMismatch {
                    what,
                    expected: params.len(),
                    got,
                });
            }
        }
        if !double_backward_available() {
            return Ok(false);
        }
        let vars = self.vars(params)?;
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let f = (self.f)(&ts, batch)?;
        if f.elem_count() != 1 {
            return Err(Error::Density(format!(
                "log density must be a scalar tensor, got shape {:?}",
                f.dims()
            )));
        }
        let grads = f.backward()?;
        match grad_dot(params.layout(), &vars, &grads, v)? {
            Some(gv) => {
                let hv = gv.backward()?;
                write_grads(params.layout(), &vars, &hv, out)?;
            }
            None => out.fill(0.0),
        }
        Ok(true)
    }

    fn value(&self, params: &Params, batch: &B) -> Result<(f64, ())> {
        let out = self.eval_tensor(params, batch)?;
        let value = out.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?[0];
        Ok((value, ()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ParamLayout;

    #[test]
    fn gradient_of_quadratic_matches_analytic() {
        // log p = -0.5 * sum(w^2) - 2 * b, w: 2x2, b: scalar
        let d = CandleDensity::new(|ts: &[Tensor], _: &()| {
            let w = &ts[0];
            let b = &ts[1];
            (w.sqr()?.sum_all()? * -0.5)? - (b.sum_all()? * 2.0)?
        })
        .with_dtype(DType::F64);
        let layout = ParamLayout::new([("w", vec![2, 2]), ("b", vec![])]).unwrap();
        let p = Params::new(layout, vec![1.0, 2.0, 3.0, 4.0, 0.5]).unwrap();
        let mut g = vec![0.0; 5];
        let (v, ()) = d.value_and_grad(&p, &(), &mut g).unwrap();
        assert!((v - (-15.0 - 1.0)).abs() < 1e-12);
        assert_eq!(g, vec![-1.0, -2.0, -3.0, -4.0, -2.0]);
        assert_eq!(d.value(&p, &()).unwrap().0, v);
    }
}
