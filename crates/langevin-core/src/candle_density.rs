//! Log densities computed by candle, with gradients from candle's autograd.

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
        let layout = params.layout();
        for (k, (spec, var)) in layout.specs().iter().zip(&vars).enumerate() {
            let off = layout.offset(k);
            let dst = &mut grad[off..off + spec.numel()];
            match grads.get(var.as_tensor()) {
                Some(g) => tensor_into_f64(g, dst)?,
                None => dst.fill(0.0),
            }
        }
        Ok((value, ()))
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
