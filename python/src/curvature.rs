//! Python callables as the library's curvature models: per-example log
//! posteriors (the empirical-Fisher Laplace variants) and models with
//! outputs and Jacobians (the GGN variants).
//!
//! Conventions (the same as the log densities of `PyDensity`): parameters
//! and gradients are a dict of arrays named like the parameters, or one
//! array when the parameters are one array; per-example quantities carry
//! the examples on a leading axis.

use std::sync::{Arc, Mutex};

use langevin::curvature::{
    ModelJacobian, OutputLikelihood, OutputModel, PerExample, PerExampleLogLik,
};
use langevin_core::{Error, Params, Result};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::{params_to_py, NonFiniteLogDensityError, ARRAY_PARAM};

/// Where a callable's Python exception waits to be raised again (with its
/// traceback) once the library has reported the failed step.
pub(crate) type ErrorSlot = Arc<Mutex<Option<PyErr>>>;

/// Keep `e` for [`raise`](crate::PyTransform) and report it to the library.
pub(crate) fn report(slot: &ErrorSlot, e: PyErr) -> Error {
    let msg = e.to_string();
    if let Ok(mut s) = slot.lock() {
        *s = Some(e);
    }
    Error::Density(msg)
}

/// `obj` as a flat `float64` vector (NumPy's ravel, C order).
pub(crate) fn ravel(obj: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    let np = obj.py().import("numpy")?;
    let arr = np.call_method1("asarray", (obj, "float64"))?;
    let flat = np.call_method1("ravel", (arr,))?;
    let flat = flat.downcast::<PyArray1<f64>>()?.readonly();
    Ok(flat.as_array().to_vec())
}

/// The shape of `obj` as a NumPy array.
fn shape_of(obj: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
    let np = obj.py().import("numpy")?;
    np.call_method1("shape", (obj,))?.extract()
}

/// Per-row arrays (`rows` leading entries of `lead` values each, then one
/// parameter's shape) gathered into a row-major `rows × dim` matrix over
/// the flat parameters: `what` names the quantity in messages.
fn per_row_params(
    grads: &Bound<'_, PyAny>,
    p: &Params,
    rows: usize,
    what: &str,
) -> PyResult<Vec<f64>> {
    let layout = p.layout();
    let specs = layout.specs();
    let d = p.len();
    let mut out = vec![0.0; rows * d];
    let mut put = |obj: &Bound<'_, PyAny>, name: &str, off: usize, numel: usize| -> PyResult<()> {
        let v = ravel(obj)?;
        if v.len() != rows * numel {
            return Err(PyValueError::new_err(format!(
                "{what} of `{name}`: shape {:?} has {} entries, expected {rows} x {numel} \
                 (one row per example{})",
                shape_of(obj)?,
                v.len(),
                if rows > 1 && numel > 0 {
                    ", then the parameter's shape"
                } else {
                    ""
                }
            )));
        }
        for r in 0..rows {
            out[r * d + off..r * d + off + numel].copy_from_slice(&v[r * numel..(r + 1) * numel]);
        }
        Ok(())
    };
    if specs.len() == 1 && specs[0].name == ARRAY_PARAM {
        put(grads, "the parameters", 0, d)?;
    } else {
        let dict = grads.downcast::<PyDict>().map_err(|_| {
            PyTypeError::new_err(format!("{what} must be a dict of arrays, like params"))
        })?;
        for (k, s) in specs.iter().enumerate() {
            let item = dict.get_item(&s.name)?.ok_or_else(|| {
                PyValueError::new_err(format!("{what} has no entry `{}`", s.name))
            })?;
            put(&item, &s.name, layout.offset(k), s.numel())?;
        }
    }
    Ok(out)
}

fn pair<'py>(
    out: &Bound<'py, PyAny>,
    who: &str,
    shape: &str,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let tuple = out
        .downcast::<PyTuple>()
        .map_err(|_| PyTypeError::new_err(format!("{who} must return a tuple {shape}")))?;
    if tuple.len() != 2 {
        return Err(PyTypeError::new_err(format!(
            "{who} must return {shape}, got a tuple of {}",
            tuple.len()
        )));
    }
    Ok((tuple.get_item(0)?, tuple.get_item(1)?))
}

/// `log_posterior(params, batch) -> (values, grads)` per example: `values`
/// of shape `(n,)`, `grads` like params with a leading axis of `n`.
pub(crate) struct PyPerExample {
    pub f: Py<PyAny>,
    pub error: ErrorSlot,
}

impl PyPerExample {
    fn call(&self, py: Python<'_>, p: &Params, batch: &Py<PyAny>) -> PyResult<PerExample> {
        let out = self
            .f
            .bind(py)
            .call1((params_to_py(py, p)?, batch.bind(py)))?;
        let (values, grads) = pair(
            &out,
            "log_posterior",
            "(values per example, grads per example)",
        )?;
        let values = ravel(&values).map_err(|_| {
            PyTypeError::new_err(
                "log_posterior's values must be an array of floats, one per example",
            )
        })?;
        let n = values.len();
        if n == 0 {
            return Err(PyValueError::new_err("log_posterior returned no examples"));
        }
        let grads = per_row_params(&grads, p, n, "per-example grads")?;
        Ok(PerExample {
            n,
            dim: p.len(),
            values,
            grads,
        })
    }
}

impl PerExampleLogLik for PyPerExample {
    type Batch = Py<PyAny>;
    fn per_example(&self, params: &Params, batch: &Py<PyAny>) -> Result<PerExample> {
        Python::with_gil(|py| self.call(py, params, batch)).map_err(|e| report(&self.error, e))
    }
}

/// The outer likelihood of a GGN model: a known one, or a Python callable
/// `hessian(outputs, batch)` giving the `(n, k, k)` Hessians of
/// `-log p(y | f)` in the outputs.
pub(crate) enum Outer {
    Known(OutputLikelihood),
    Callable(Py<PyAny>),
}

/// `forward(params, batch) -> (outputs, jacobian)`: outputs `(n, k)` (or
/// `(n,)` for one output), the Jacobian like params with leading axes
/// `(n, k)`.
pub(crate) struct PyOutputModel {
    pub forward: Py<PyAny>,
    pub outer: Outer,
    pub error: ErrorSlot,
}

fn non_finite(what: &str, v: &[f64]) -> PyResult<()> {
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(NonFiniteLogDensityError::new_err(format!(
            "{what}: entry {i} is {} (the state is unchanged)",
            v[i]
        ))),
    }
}

impl PyOutputModel {
    fn call(&self, py: Python<'_>, p: &Params, batch: &Py<PyAny>) -> PyResult<ModelJacobian> {
        let out = self
            .forward
            .bind(py)
            .call1((params_to_py(py, p)?, batch.bind(py)))?;
        let (outputs, jac) = pair(&out, "forward", "(outputs, jacobian)")?;
        let shape = shape_of(&outputs)?;
        let (n, k) = match shape.as_slice() {
            [n] => (*n, 1),
            [n, k] => (*n, *k),
            _ => {
                return Err(PyValueError::new_err(format!(
                    "forward's outputs must have shape (n, k) or (n,), got {shape:?}"
                )))
            }
        };
        if n == 0 || k == 0 {
            return Err(PyValueError::new_err(format!(
                "forward returned no outputs (shape {shape:?})"
            )));
        }
        let outputs = ravel(&outputs)?;
        let jac = per_row_params(&jac, p, n * k, "the Jacobian (leading axes n, k)")?;
        non_finite("forward's outputs", &outputs)?;
        non_finite("forward's Jacobian", &jac)?;
        Ok(ModelJacobian {
            n,
            k,
            dim: p.len(),
            outputs,
            jac,
        })
    }

    fn hessians(
        &self,
        py: Python<'_>,
        jac: &ModelJacobian,
        batch: &Py<PyAny>,
    ) -> PyResult<Vec<f64>> {
        let (n, k) = (jac.n, jac.k);
        match &self.outer {
            Outer::Known(lik) => {
                let mut out = vec![0.0; n * k * k];
                for i in 0..n {
                    lik.hessian(
                        &jac.outputs[i * k..(i + 1) * k],
                        &mut out[i * k * k..(i + 1) * k * k],
                    )
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                }
                Ok(out)
            }
            Outer::Callable(h) => {
                let f = PyArray1::from_slice(py, &jac.outputs).reshape([n, k])?;
                let out = h.bind(py).call1((f, batch.bind(py)))?;
                let v = ravel(&out)?;
                if v.len() != n * k * k {
                    return Err(PyValueError::new_err(format!(
                        "outer_log_likelihood's Hessians: {} entries, expected n x k x k = {n} x {k} x {k}",
                        v.len()
                    )));
                }
                non_finite("outer_log_likelihood's Hessians", &v)?;
                Ok(v)
            }
        }
    }
}

impl OutputModel for PyOutputModel {
    type Batch = Py<PyAny>;
    fn forward(&self, params: &Params, batch: &Py<PyAny>) -> Result<(Vec<f64>, usize)> {
        let j = self.forward_jacobian(params, batch)?;
        Ok((j.outputs, j.k))
    }
    fn forward_jacobian(&self, params: &Params, batch: &Py<PyAny>) -> Result<ModelJacobian> {
        Python::with_gil(|py| self.call(py, params, batch)).map_err(|e| report(&self.error, e))
    }
    fn output_hessians(&self, jac: &ModelJacobian, batch: &Py<PyAny>) -> Result<Vec<f64>> {
        Python::with_gil(|py| self.hessians(py, jac, batch)).map_err(|e| report(&self.error, e))
    }
}
