//! The user's log posterior: value and gradient.

use std::marker::PhantomData;

use crate::error::{Error, Result};
use crate::params::Params;

/// A log density `log_posterior(params, batch)` with its gradient.
///
/// Convention (as in posteriors): the value is *batch-averaged*, i.e.
/// `mean_i log p(y_i | x_i, θ) + log p(θ) / N` for a data set of size N, so
/// that temperature `T = 1/N` targets the posterior.
pub trait LogDensity: Send + Sync {
    /// What one evaluation reads (a minibatch, or `()` for a fixed density).
    type Batch: ?Sized;
    /// Extra output of the user's function, passed through in `Info`.
    type Aux: Clone + Send + std::fmt::Debug;

    /// Evaluate at `params`, writing the gradient into `grad`
    /// (`grad.len() == params.len()`, ravel order) and returning the value.
    fn value_and_grad(
        &self,
        params: &Params,
        batch: &Self::Batch,
        grad: &mut [f64],
    ) -> Result<(f64, Self::Aux)>;

    /// The value only. The default computes and discards the gradient.
    fn value(&self, params: &Params, batch: &Self::Batch) -> Result<(f64, Self::Aux)> {
        let mut g = vec![0.0; params.len()];
        self.value_and_grad(params, batch, &mut g)
    }

    /// An exact Hessian-vector product `out = ∇²(log density)(params) · v`
    /// (ravel order, `v.len() == out.len() == params.len()`), computed by
    /// second-order automatic differentiation or a hand-written R-operator
    /// rather than by differencing gradients.
    ///
    /// Returns `Ok(true)` when `out` holds the product, `Ok(false)` when this
    /// density has no exact path (`out` is then unspecified); the default
    /// returns `Ok(false)`, and `langevin::curvature::hvp` then falls back to
    /// central differences of [`value_and_grad`](Self::value_and_grad).
    /// "Exact" means exact up to the rounding of the arithmetic that
    /// computes it (measured a few `1e-7` relative for f32 candle models,
    /// `1e-15` for f64), with no truncation error.
    fn hvp_exact(
        &self,
        params: &Params,
        batch: &Self::Batch,
        v: &[f64],
        out: &mut [f64],
    ) -> Result<bool> {
        let _ = (params, batch, v, out);
        Ok(false)
    }
}

impl<D: LogDensity + ?Sized> LogDensity for &D {
    type Batch = D::Batch;
    type Aux = D::Aux;
    fn value_and_grad(
        &self,
        params: &Params,
        batch: &Self::Batch,
        grad: &mut [f64],
    ) -> Result<(f64, Self::Aux)> {
        (**self).value_and_grad(params, batch, grad)
    }
    fn value(&self, params: &Params, batch: &Self::Batch) -> Result<(f64, Self::Aux)> {
        (**self).value(params, batch)
    }
    fn hvp_exact(
        &self,
        params: &Params,
        batch: &Self::Batch,
        v: &[f64],
        out: &mut [f64],
    ) -> Result<bool> {
        (**self).hvp_exact(params, batch, v, out)
    }
}

impl<D: LogDensity + ?Sized> LogDensity for std::sync::Arc<D> {
    type Batch = D::Batch;
    type Aux = D::Aux;
    fn value_and_grad(
        &self,
        params: &Params,
        batch: &Self::Batch,
        grad: &mut [f64],
    ) -> Result<(f64, Self::Aux)> {
        (**self).value_and_grad(params, batch, grad)
    }
    fn value(&self, params: &Params, batch: &Self::Batch) -> Result<(f64, Self::Aux)> {
        (**self).value(params, batch)
    }
    fn hvp_exact(
        &self,
        params: &Params,
        batch: &Self::Batch,
        v: &[f64],
        out: &mut [f64],
    ) -> Result<bool> {
        (**self).hvp_exact(params, batch, v, out)
    }
}

/// Report a NaN/Inf value or gradient as [`Error::NonFiniteLogDensity`].
pub fn check_finite(value: f64, grad: &[f64], step: u64) -> Result<()> {
    let bad_grad = grad.iter().filter(|g| !g.is_finite()).count();
    if !value.is_finite() || bad_grad > 0 {
        return Err(Error::NonFiniteLogDensity {
            step,
            value,
            bad_grad,
        });
    }
    Ok(())
}

/// A hand-written density from a closure
/// `f(theta: &[f64], batch: &B, grad: &mut [f64]) -> f64` that writes the
/// gradient and returns the value.
pub struct FnDensity<B: ?Sized, F> {
    f: F,
    _batch: PhantomData<fn(&B)>,
}

impl<B: ?Sized, F> FnDensity<B, F>
where
    F: Fn(&[f64], &B, &mut [f64]) -> f64 + Send + Sync,
{
    pub fn new(f: F) -> Self {
        Self {
            f,
            _batch: PhantomData,
        }
    }
}

impl<B: ?Sized, F> LogDensity for FnDensity<B, F>
where
    F: Fn(&[f64], &B, &mut [f64]) -> f64 + Send + Sync,
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
        Ok(((self.f)(params.values(), batch, grad), ()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fn_density_and_finiteness() {
        let d = FnDensity::new(|x: &[f64], _: &(), g: &mut [f64]| {
            g[0] = -x[0];
            -0.5 * x[0] * x[0]
        });
        let p = Params::from_vec(vec![2.0]);
        let mut g = vec![0.0];
        let (v, ()) = d.value_and_grad(&p, &(), &mut g).unwrap();
        assert_eq!((v, g[0]), (-2.0, -2.0));
        assert!(check_finite(v, &g, 0).is_ok());
        assert!(matches!(
            check_finite(f64::NAN, &g, 5),
            Err(Error::NonFiniteLogDensity { step: 5, .. })
        ));
        assert!(check_finite(0.0, &[f64::INFINITY], 0).is_err());
    }
}
