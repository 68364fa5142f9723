//! `langevin._langevin`: the Rust side of the Python package `langevin`.
//!
//! The Python modules (`python/langevin/*.py`) validate and convert their
//! arguments (NumPy arrays of `float64`, C order) and call these functions.
//! Every function here:
//! * releases the GIL while Rust computes (but for the SGMCMC transforms,
//!   whose density is Python and needs it);
//! * turns errors into Python exceptions with the library's message
//!   (`ValueError` for bad input, [`LangevinError`] otherwise), and catches
//!   panics ([`guard`]) so that none crosses into Python.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use faer::Mat;
use langevin::curvature::OutputLikelihood;
use langevin::laplace::{
    DenseFisherLaplace, DenseGgnLaplace, DenseHessianConfig, DenseHessianLaplace,
    DenseLaplaceState, DiagFisherLaplace, DiagGgnLaplace, DiagLaplaceState, LaplaceConfig,
};
use langevin::optim::Optimizer;
use langevin::sgmcmc::{
    Baoa, BaoaConfig, BaoaState, MomentaInit, Sghmc, SghmcConfig, SghmcState, Sgld, SgldConfig,
    SgldState, Sgnht, SgnhtConfig, SgnhtState,
};
use langevin::vi::{DenseVi, DenseViConfig, DenseViState, DiagVi, DiagViConfig, DiagViState};
use langevin_core::{
    chain_rng, ChainRng, LogDensity, ParamLayout, Params, Transform, TransformState,
};
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray2};
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

mod curvature;
use curvature::{report, ErrorSlot, Outer, PyOutputModel, PyPerExample};

create_exception!(
    _langevin,
    LangevinError,
    PyRuntimeError,
    "An error of the langevin library (not the caller's input)."
);
create_exception!(
    _langevin,
    NonFiniteLogDensityError,
    PyValueError,
    "The log density or its gradient was NaN or infinite; the state is unchanged."
);
create_exception!(
    _langevin,
    DivergenceError,
    LangevinError,
    "A fit stopped on too many divergent steps (`langevin fit` exit code 3)."
);

/// A library error as a Python exception.
fn core_err(e: langevin_core::Error) -> PyErr {
    let msg = e.to_string();
    if matches!(e.root(), langevin_core::Error::NonFiniteLogDensity { .. }) {
        NonFiniteLogDensityError::new_err(msg)
    } else if e.is_bad_input() {
        PyValueError::new_err(msg)
    } else {
        LangevinError::new_err(msg)
    }
}

fn thermo_err(e: langevin_thermo::error::ThermoError) -> PyErr {
    if e.is_bad_input() {
        PyValueError::new_err(e.to_string())
    } else {
        LangevinError::new_err(e.to_string())
    }
}

/// Runs `f`, turning a panic into a [`LangevinError`].
fn guard<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(LangevinError::new_err(format!(
            "internal error (a bug in langevin): {}",
            panic_message(&p)
        ))),
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// A C-order `float64` matrix as a faer matrix.
fn to_mat(a: &PyReadonlyArray2<'_, f64>) -> Mat<f64> {
    let v = a.as_array();
    Mat::from_fn(v.nrows(), v.ncols(), |i, j| v[(i, j)])
}

fn mat_to_py<'py>(py: Python<'py>, m: &Mat<f64>) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let rows: Vec<Vec<f64>> = (0..m.nrows())
        .map(|i| (0..m.ncols()).map(|j| m[(i, j)]).collect())
        .collect();
    if rows.is_empty() {
        return Ok(PyArray1::<f64>::from_vec(py, vec![])
            .reshape([0, m.ncols()])?
            .to_owned());
    }
    Ok(PyArray2::from_vec2(py, &rows)?)
}

fn chains_of(x: &PyReadonlyArray2<'_, f64>) -> Vec<Vec<f64>> {
    x.as_array()
        .rows()
        .into_iter()
        .map(|r| r.to_vec())
        .collect()
}

// ---------------------------------------------------------------------------
// `langevin fit` in-process
// ---------------------------------------------------------------------------

#[derive(clap::Parser)]
#[command(name = "langevin fit", no_binary_name = true)]
struct FitCommand {
    #[command(flatten)]
    args: langevin_cli::fit::FitArgs,
}

/// The log posterior (the model's, on the training rows, in f64) of every
/// row of the run folder's `samples.csv`, in file order.
fn draws_log_posterior(
    d: &langevin_cli::fit::DataArgs,
    out: &std::path::Path,
) -> anyhow::Result<Vec<f64>> {
    use candle_core::{DType, Device};
    let prep = langevin_cli::fit::data::prepare(d)?;
    let model = &prep.model;
    let density = model.density(DType::F64, &Device::Cpu);
    let batch = model.batch(&prep.train_x, &prep.train_y, DType::F64, &Device::Cpu)?;
    let text = std::fs::read_to_string(out.join(langevin::run::SAMPLES_FILE))?;
    let rows: Vec<&str> = text.lines().skip(1).collect();
    // Spread over the cores: a full-batch evaluation per draw.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = rows.len().div_ceil(threads).max(1);
    let parts: Vec<anyhow::Result<Vec<f64>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = rows
            .chunks(chunk)
            .map(|part| {
                let (density, batch) = (&density, &batch);
                scope.spawn(move || -> anyhow::Result<Vec<f64>> {
                    let mut lp = Vec::with_capacity(part.len());
                    for line in part {
                        let values: Vec<f64> = line
                            .split(',')
                            .skip(2)
                            .map(|v| v.parse::<f64>())
                            .collect::<Result<_, _>>()?;
                        let params = Params::new(model.layout().clone(), values)?;
                        lp.push(density.value(&params, batch)?.0);
                    }
                    Ok(lp)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a log posterior thread panicked")))
            })
            .collect()
    });
    let mut lp = Vec::with_capacity(rows.len());
    for p in parts {
        lp.extend(p?);
    }
    Ok(lp)
}

/// The data options of a run folder's `run.json` (its resolved
/// configuration), to prepare its data again; `None` when they cannot be
/// read back.
fn data_args_of(config: &serde_json::Value) -> Option<langevin_cli::fit::DataArgs> {
    let c = config.as_object()?;
    let data = c.get("data")?.as_str()?;
    let data = data.strip_prefix("bundled:").unwrap_or(data);
    let hidden: Vec<String> = c
        .get("hidden")
        .and_then(|h| h.as_array())
        .map(|h| h.iter().map(|v| v.to_string()).collect())
        .unwrap_or_default();
    let json = serde_json::json!({
        "data": data,
        "target": c.get("target")?,
        "model": c.get("model")?,
        "task": c.get("task")?,
        "hidden": if hidden.is_empty() { serde_json::Value::Null } else { hidden.join(",").into() },
        "prior_sd": c.get("prior_sd")?,
        "noise_sd": c.get("noise_sd").cloned().unwrap_or(serde_json::Value::Null),
        "batch_size": serde_json::Value::Null,
        "test_fraction": c.get("test_fraction")?,
        "seed": c.get("seed")?,
        "no_standardize": !c.get("standardize")?.as_bool()?,
    });
    serde_json::from_value(json).ok()
}

/// The log posterior of every draw of a `langevin fit` run folder (rows of
/// `samples.csv`), from its data prepared again as `run.json` says (`None`
/// when the data cannot be found or no longer gives the run's model and
/// standardisation). The GIL is released.
#[pyfunction]
fn run_log_posterior(py: Python<'_>, dir: std::path::PathBuf) -> Option<Vec<f64>> {
    py.allow_threads(move || {
        catch_unwind(AssertUnwindSafe(|| -> Option<Vec<f64>> {
            let meta = langevin_cli::rundir::read_meta(&dir).ok()?;
            let d = data_args_of(&meta.config)?;
            // Quietly: prepare() may print nothing, but check what it gives.
            let prep = langevin_cli::fit::data::prepare(&d).ok()?;
            if prep.model.spec() != &meta.model
                || prep.model.param_names() != meta.param_names.as_slice()
                || serde_json::to_value(&prep.meta_standardizer).ok()?
                    != serde_json::to_value(&meta.standardizer).ok()?
            {
                return None;
            }
            draws_log_posterior(&d, &dir).ok()
        }))
        .ok()
        .flatten()
    })
}

/// Run `langevin fit` with these command-line arguments (without `fit`),
/// in-process, on a worker thread, with the GIL released. Ctrl-C (a signal
/// seen by the calling thread) interrupts the run's samplers at their next
/// poll and raises `KeyboardInterrupt`. Returns the log posterior of every
/// draw (the rows of `samples.csv`) when `--out` is given.
#[pyfunction]
fn fit_cli(py: Python<'_>, argv: Vec<String>) -> PyResult<Option<Vec<f64>>> {
    use clap::Parser;
    let cmd = FitCommand::try_parse_from(argv).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let (data_args, out_dir) = (cmd.args.d.clone(), cmd.args.out.clone());
    let (tx, rx) = mpsc::channel();
    let rx = Mutex::new(rx);
    let worker = std::thread::Builder::new()
        .name("langevin-fit".into())
        .spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(|| {
                langevin_cli::fit::run(cmd.args)?;
                match &out_dir {
                    Some(out) => draws_log_posterior(&data_args, out).map(Some),
                    None => Ok(None),
                }
            }));
            let _ = tx.send(());
            r
        })
        .map_err(|e| LangevinError::new_err(format!("cannot start the fit thread: {e}")))?;
    loop {
        let done = py.allow_threads(|| match rx.lock() {
            Ok(rx) => rx.recv_timeout(Duration::from_millis(50)),
            Err(_) => Err(mpsc::RecvTimeoutError::Disconnected),
        });
        if !matches!(done, Err(mpsc::RecvTimeoutError::Timeout)) {
            break;
        }
        if let Err(e) = py.check_signals() {
            // Stop every sampler in progress (they poll every 100 steps),
            // wait for this run to end, and raise.
            langevin_cli::fit::sample::INTERRUPT.store(true, Ordering::Relaxed);
            let _ = py.allow_threads(|| worker.join());
            langevin_cli::fit::sample::INTERRUPT.store(false, Ordering::Relaxed);
            return Err(e);
        }
    }
    let result = match worker.join() {
        Ok(r) => r,
        Err(p) => Err(p),
    };
    match result {
        Ok(Ok(lp)) => Ok(lp),
        Ok(Err(e)) => {
            let msg = format!("{e:#}");
            Err(match langevin_cli::exit::code_for(&e) {
                2 => PyValueError::new_err(msg),
                3 => DivergenceError::new_err(msg),
                _ => LangevinError::new_err(msg),
            })
        }
        Err(p) => Err(LangevinError::new_err(format!(
            "internal error (a bug in langevin): {}",
            panic_message(&p)
        ))),
    }
}

/// The bundled data sets: `(name, default target, task, description)`.
#[pyfunction]
fn bundled_names() -> Vec<(String, String, String, String)> {
    langevin_models::bundled::BUNDLED
        .iter()
        .map(|b| {
            (
                b.name.to_string(),
                b.target.to_string(),
                b.task.to_string(),
                b.description.to_string(),
            )
        })
        .collect()
}

/// A bundled data set: `(X, y, feature_names, target_name)`.
#[pyfunction]
#[pyo3(signature = (name, target=None))]
#[allow(clippy::type_complexity)]
fn bundled_load<'py>(
    py: Python<'py>,
    name: &str,
    target: Option<&str>,
) -> PyResult<(
    Bound<'py, PyArray2<f64>>,
    Bound<'py, PyArray1<f64>>,
    Vec<String>,
    String,
)> {
    let Some(b) = langevin_models::bundled::find(name) else {
        let names: Vec<&str> = langevin_models::bundled::BUNDLED
            .iter()
            .map(|b| b.name)
            .collect();
        return Err(PyValueError::new_err(format!(
            "no bundled data set `{name}` (bundled: {})",
            names.join(", ")
        )));
    };
    let ds = b
        .load(target)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let d = ds.feature_names.len();
    let n = ds.y.len();
    let x = PyArray1::from_vec(py, ds.x).reshape([n, d])?;
    Ok((
        x,
        PyArray1::from_vec(py, ds.y),
        ds.feature_names,
        ds.target_name,
    ))
}

// ---------------------------------------------------------------------------
// Diagnostics
// ---------------------------------------------------------------------------

/// One diagnostic of a `(chain, draw)` array: `kind` is `ess_bulk`,
/// `ess_tail`, `ess_mean` (Geyer's basic ESS), `ess_quantile`, `rhat`,
/// `rhat_basic`, `mcse_mean`, `mcse_sd` or `mcse_quantile` (`prob` for the
/// quantile ones).
#[pyfunction]
#[pyo3(signature = (kind, x, prob=0.5))]
fn diag(py: Python<'_>, kind: &str, x: PyReadonlyArray2<'_, f64>, prob: f64) -> PyResult<f64> {
    use langevin::diagnostics as d;
    let chains = chains_of(&x);
    let kind = kind.to_string();
    py.allow_threads(move || {
        guard(|| {
            let refs: Vec<&[f64]> = chains.iter().map(|c| c.as_slice()).collect();
            let r = match kind.as_str() {
                "ess_bulk" => d::ess_bulk(&refs),
                "ess_tail" => d::ess_tail(&refs),
                "ess_mean" => d::ess_basic(&refs),
                "ess_quantile" => d::ess_quantile(&refs, prob),
                "rhat" => d::rhat(&refs),
                "rhat_basic" => d::rhat_basic(&refs),
                "mcse_mean" => d::mcse_mean(&refs),
                "mcse_sd" => d::mcse_sd(&refs),
                "mcse_quantile" => d::mcse_quantile(&refs, prob),
                other => {
                    return Err(PyValueError::new_err(format!(
                        "unknown diagnostic `{other}`"
                    )))
                }
            };
            r.map_err(core_err)
        })
    })
}

/// Kernel Stein discrepancy (IMQ kernel) of the rows of `x` against the
/// scores `grad` (same shape).
#[pyfunction]
#[pyo3(signature = (x, grad, c=1.0, beta=-0.5))]
fn ksd(
    py: Python<'_>,
    x: PyReadonlyArray2<'_, f64>,
    grad: PyReadonlyArray2<'_, f64>,
    c: f64,
    beta: f64,
) -> PyResult<f64> {
    let (xs, gs) = (chains_of(&x), chains_of(&grad));
    py.allow_threads(move || {
        guard(|| langevin::diagnostics::ksd_imq(&xs, &gs, c, beta).map_err(core_err))
    })
}

// ---------------------------------------------------------------------------
// Thermodynamic computing
// ---------------------------------------------------------------------------

/// Exact OU path on the grid `ts` from `x0`: an array `(len(ts), d)`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn ou_sample<'py>(
    py: Python<'py>,
    seed: u64,
    ts: Vec<f64>,
    x0: Vec<f64>,
    a: PyReadonlyArray2<'py, f64>,
    b: Vec<f64>,
    d: PyReadonlyArray2<'py, f64>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let (a, d) = (to_mat(&a), to_mat(&d));
    let path = py.allow_threads(move || {
        guard(|| {
            let mut rng = chain_rng(seed, 0);
            langevin_thermo::ou::sample(&ts, &x0, a.as_ref(), &b, d.as_ref(), &mut rng)
                .map_err(thermo_err)
        })
    })?;
    let n = path.times.len();
    PyArray1::from_vec(py, path.states).reshape([n, path.dim])
}

/// Log density of the path `xs` (rows at the times `ts`) given its first state.
#[pyfunction]
fn ou_log_prob(
    py: Python<'_>,
    ts: Vec<f64>,
    xs: PyReadonlyArray2<'_, f64>,
    a: PyReadonlyArray2<'_, f64>,
    b: Vec<f64>,
    d: PyReadonlyArray2<'_, f64>,
) -> PyResult<f64> {
    let xs: Vec<f64> = xs.as_array().iter().copied().collect();
    let (a, d) = (to_mat(&a), to_mat(&d));
    py.allow_threads(move || {
        guard(|| {
            langevin_thermo::ou::log_prob(&ts, &xs, a.as_ref(), &b, d.as_ref()).map_err(thermo_err)
        })
    })
}

/// The settings of a thermodynamic computation.
fn thermo_config(
    seed: u64,
    analog_time: f64,
    sampling_interval: f64,
    burn_in: f64,
    beta: f64,
    batches: usize,
) -> langevin_thermo::linalg::ThermoConfig {
    langevin_thermo::linalg::ThermoConfig {
        analog_time,
        sampling_interval,
        burn_in,
        beta,
        batches,
        seed,
    }
}

type Info = (f64, f64, usize);

/// `op` (`solve`, `inv`, `expm`, `expnegm`, `logdet`) by the simulated
/// thermodynamic device: `(value, std_error, (error_estimate, analog_time,
/// readouts))`; `b` only for `solve`.
#[pyfunction]
#[pyo3(signature = (op, a, b, seed, analog_time, sampling_interval, burn_in, beta, batches))]
#[allow(clippy::too_many_arguments)]
fn thermo_linalg<'py>(
    py: Python<'py>,
    op: &str,
    a: PyReadonlyArray2<'py, f64>,
    b: Option<Vec<f64>>,
    seed: u64,
    analog_time: f64,
    sampling_interval: f64,
    burn_in: f64,
    beta: f64,
    batches: usize,
) -> PyResult<(PyObject, PyObject, Info)> {
    use langevin_thermo::linalg as l;
    enum Out {
        Vec(l::Estimate<Vec<f64>>),
        Mat(l::Estimate<Mat<f64>>),
        Scalar(l::Estimate<f64>),
    }
    let a = to_mat(&a);
    let cfg = thermo_config(seed, analog_time, sampling_interval, burn_in, beta, batches);
    let op = op.to_string();
    let out = py.allow_threads(move || {
        guard(|| {
            let r = match op.as_str() {
                "solve" => {
                    let b = b.ok_or_else(|| PyValueError::new_err("solve needs b"))?;
                    l::solve(a.as_ref(), &b, &cfg).map(Out::Vec)
                }
                "inv" => l::inv(a.as_ref(), &cfg).map(Out::Mat),
                "expm" => l::expm(a.as_ref(), &cfg).map(Out::Mat),
                "expnegm" => l::expnegm(a.as_ref(), &cfg).map(Out::Mat),
                "logdet" => l::logdet(a.as_ref(), &cfg).map(Out::Scalar),
                other => {
                    return Err(PyValueError::new_err(format!(
                        "unknown operation `{other}`"
                    )))
                }
            };
            r.map_err(thermo_err)
        })
    })?;
    Ok(match out {
        Out::Vec(e) => (
            PyArray1::from_vec(py, e.value).into_any().unbind(),
            PyArray1::from_vec(py, e.std_error).into_any().unbind(),
            (e.error_estimate, e.analog_time, e.readouts),
        ),
        Out::Mat(e) => (
            mat_to_py(py, &e.value)?.into_any().unbind(),
            mat_to_py(py, &e.std_error)?.into_any().unbind(),
            (e.error_estimate, e.analog_time, e.readouts),
        ),
        Out::Scalar(e) => (
            e.value.into_pyobject(py)?.into_any().unbind(),
            e.std_error.into_pyobject(py)?.into_any().unbind(),
            (e.error_estimate, e.analog_time, e.readouts),
        ),
    })
}

// ---------------------------------------------------------------------------
// SGMCMC transforms over a Python log density
// ---------------------------------------------------------------------------

/// The name of the single parameter of a layout built from an array (the
/// density then sees an array, not a dict).
pub(crate) const ARRAY_PARAM: &str = "__array__";

/// Parameters as the Python callables see them: a dict of arrays shaped as
/// in the layout, or one array when the layout is one array ([`ARRAY_PARAM`]).
pub(crate) fn params_to_py<'py>(py: Python<'py>, p: &Params) -> PyResult<Bound<'py, PyAny>> {
    let layout = p.layout();
    let specs = layout.specs();
    if specs.len() == 1 && specs[0].name == ARRAY_PARAM {
        let a = PyArray1::from_slice(py, p.values());
        return Ok(a.reshape(specs[0].shape.clone())?.into_any());
    }
    let dict = PyDict::new(py);
    for (k, s) in specs.iter().enumerate() {
        let off = layout.offset(k);
        let a = PyArray1::from_slice(py, &p.values()[off..off + s.numel()]);
        dict.set_item(&s.name, a.reshape(s.shape.clone())?)?;
    }
    Ok(dict.into_any())
}

/// A Python callable `log_posterior(params, batch) -> (value, grads)` as a
/// log density. `params` and `grads` are a dict of arrays (or one array),
/// shaped as in the layout of the parameters. A Python exception is kept in
/// `error` (to be raised again, with its traceback) and reported to the
/// sampler as [`langevin_core::Error::Density`].
struct PyDensity {
    f: Py<PyAny>,
    error: ErrorSlot,
}

impl PyDensity {
    fn call(
        &self,
        py: Python<'_>,
        p: &Params,
        batch: &Py<PyAny>,
        grad: &mut [f64],
    ) -> PyResult<f64> {
        let out = self
            .f
            .bind(py)
            .call1((params_to_py(py, p)?, batch.bind(py)))?;
        let tuple = out.downcast::<PyTuple>().map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err(
                "log_posterior must return a tuple (value, grads)",
            )
        })?;
        if tuple.len() != 2 {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "log_posterior must return (value, grads), got a tuple of {}",
                tuple.len()
            )));
        }
        let value: f64 = tuple.get_item(0)?.extract().map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err("log_posterior's value must be a float")
        })?;
        let g = tuple.get_item(1)?;
        let layout = p.layout();
        let specs = layout.specs();
        let np = py.import("numpy")?;
        let flat = |obj: Bound<'_, PyAny>, what: &str, into: &mut [f64]| -> PyResult<()> {
            let arr = np.call_method1("ravel", (obj,))?;
            let arr = np.call_method1("asarray", (arr, "float64"))?;
            let arr = arr.downcast::<PyArray1<f64>>()?.readonly();
            let v = arr.as_array();
            if v.len() != into.len() {
                return Err(PyValueError::new_err(format!(
                    "gradient of {what}: {} entries, expected {}",
                    v.len(),
                    into.len()
                )));
            }
            for (o, x) in into.iter_mut().zip(v.iter()) {
                *o = *x;
            }
            Ok(())
        };
        if specs.len() == 1 && specs[0].name == ARRAY_PARAM {
            flat(g, "the parameters", grad)?;
        } else {
            let dict = g.downcast::<PyDict>().map_err(|_| {
                pyo3::exceptions::PyTypeError::new_err(
                    "grads must be a dict of arrays, like params",
                )
            })?;
            for (k, s) in specs.iter().enumerate() {
                let off = layout.offset(k);
                let item = dict.get_item(&s.name)?.ok_or_else(|| {
                    PyValueError::new_err(format!("grads has no entry `{}`", s.name))
                })?;
                flat(item, &s.name, &mut grad[off..off + s.numel()])?;
            }
        }
        Ok(value)
    }
}

impl LogDensity for PyDensity {
    type Batch = Py<PyAny>;
    type Aux = ();

    fn value_and_grad(
        &self,
        params: &Params,
        batch: &Py<PyAny>,
        grad: &mut [f64],
    ) -> langevin_core::Result<(f64, ())> {
        Python::with_gil(|py| self.call(py, params, batch, grad))
            .map(|v| (v, ()))
            .map_err(|e| report(&self.error, e))
    }
}

type Density = Arc<PyDensity>;

enum Kind {
    Sgld(Sgld<Density>),
    Sghmc(Sghmc<Density>),
    Sgnht(Sgnht<Density>),
    Baoa(Baoa<Density>),
    ViDiag(DiagVi<Density>),
    ViDense(DenseVi<Density>),
    LaplaceHessian(DenseHessianLaplace<Density>),
    LaplaceDiagFisher(DiagFisherLaplace<PyPerExample>),
    LaplaceDenseFisher(DenseFisherLaplace<PyPerExample>),
    LaplaceDiagGgn(DiagGgnLaplace<PyOutputModel>),
    LaplaceDenseGgn(DenseGgnLaplace<PyOutputModel>),
}

#[derive(Clone)]
enum AnyState {
    Sgld(SgldState),
    Sghmc(SghmcState),
    Sgnht(SgnhtState),
    Baoa(BaoaState),
    ViDiag(DiagViState),
    ViDense(DenseViState),
    /// Every dense Laplace variant (Hessian, Fisher, GGN).
    LaplaceDense(DenseLaplaceState),
    /// Every diagonal Laplace variant (Fisher, GGN).
    LaplaceDiag(DiagLaplaceState),
}

impl AnyState {
    fn inner(&self) -> &dyn StateView {
        match self {
            AnyState::Sgld(s) => s,
            AnyState::Sghmc(s) => s,
            AnyState::Sgnht(s) => s,
            AnyState::Baoa(s) => s,
            AnyState::ViDiag(s) => s,
            AnyState::ViDense(s) => s,
            AnyState::LaplaceDense(s) => s,
            AnyState::LaplaceDiag(s) => s,
        }
    }
    fn momenta(&self) -> Option<&[f64]> {
        match self {
            AnyState::Sghmc(s) => Some(&s.momenta),
            AnyState::Sgnht(s) => Some(&s.momenta),
            AnyState::Baoa(s) => Some(&s.momenta),
            _ => None,
        }
    }
}

trait StateView {
    fn params(&self) -> &Params;
    fn step(&self) -> u64;
    fn log_density(&self) -> f64;
}

impl<T: TransformState> StateView for T {
    fn params(&self) -> &Params {
        TransformState::params(self)
    }
    fn step(&self) -> u64 {
        TransformState::step(self)
    }
    fn log_density(&self) -> f64 {
        TransformState::log_density(self)
    }
}

/// The state of a chain: the sampler's state and the chain's generator.
/// Immutable: `update` returns a new state.
#[pyclass(frozen, module = "langevin._langevin")]
#[derive(Clone)]
struct State {
    inner: AnyState,
    rng: ChainRng,
    method: &'static str,
}

#[pymethods]
impl State {
    /// The parameters (a dict of arrays, or an array, as given to `init`).
    #[getter]
    fn params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        params_to_py(py, self.inner.inner().params())
    }
    /// The parameters, flattened (ravel order of the dict's entries).
    #[getter]
    fn flat_params<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        PyArray1::from_slice(py, self.inner.inner().params().values())
    }
    /// Steps taken.
    #[getter]
    fn step(&self) -> u64 {
        self.inner.inner().step()
    }
    /// Log posterior at the parameters the last step evaluated (NaN before).
    #[getter]
    fn log_posterior(&self) -> f64 {
        self.inner.inner().log_density()
    }
    /// VI: the standard deviations of q, flattened (the square roots of
    /// the covariance's diagonal for dense VI); diagonal Laplace: `1/sqrt(P)`
    /// (temperature 1; `None` while a precision entry is not positive);
    /// `None` otherwise.
    #[getter]
    fn sd<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArray1<f64>>> {
        match &self.inner {
            AnyState::ViDiag(s) => Some(PyArray1::from_vec(py, s.sd())),
            AnyState::ViDense(s) => {
                let d = s.params.len();
                let c = s.covariance();
                Some(PyArray1::from_vec(
                    py,
                    (0..d).map(|j| c[j * d + j].sqrt()).collect(),
                ))
            }
            AnyState::LaplaceDiag(s) => s.sd(1.0).ok().map(|v| PyArray1::from_vec(py, v)),
            _ => None,
        }
    }
    /// VI: the last NELBO estimate (`None` otherwise).
    #[getter]
    fn nelbo(&self) -> Option<f64> {
        match &self.inner {
            AnyState::ViDiag(s) => Some(s.nelbo),
            AnyState::ViDense(s) => Some(s.nelbo),
            _ => None,
        }
    }
    /// Dense Laplace: the precision matrix `(m, m)` over the approximated
    /// parameters (all `d`, or the `subset`'s), `None` otherwise.
    #[getter]
    fn prec<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyArray2<f64>>>> {
        match &self.inner {
            AnyState::LaplaceDense(s) => {
                let n = s.subset.len();
                Ok(Some(PyArray1::from_slice(py, &s.prec).reshape([n, n])?))
            }
            _ => Ok(None),
        }
    }
    /// Diagonal Laplace: the precision's diagonal `(m,)` over the
    /// approximated parameters, `None` otherwise.
    #[getter]
    fn prec_diag<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArray1<f64>>> {
        match &self.inner {
            AnyState::LaplaceDiag(s) => Some(PyArray1::from_slice(py, &s.prec_diag)),
            _ => None,
        }
    }
    /// Laplace: the flat indices (ravel order of the parameters) that the
    /// precision covers, `None` otherwise.
    #[getter]
    fn subset_indices<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArray1<u64>>> {
        let idx = match &self.inner {
            AnyState::LaplaceDiag(s) => s.subset.indices(),
            AnyState::LaplaceDense(s) => s.subset.indices(),
            _ => return None,
        };
        Some(PyArray1::from_vec(
            py,
            idx.iter().map(|&i| i as u64).collect(),
        ))
    }
    /// Dense VI: the lower-triangular factor `L` of the covariance `L L^T`
    /// (`(d, d)`; posteriors' `L_factor`), `None` otherwise.
    #[getter(L_factor)]
    fn l_factor<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyArray2<f64>>>> {
        match &self.inner {
            AnyState::ViDense(s) => {
                let d = s.params.len();
                Ok(Some(PyArray1::from_slice(py, &s.chol).reshape([d, d])?))
            }
            _ => Ok(None),
        }
    }
    /// The covariance of the approximation at temperature 1: dense VI's
    /// `L L^T`, dense Laplace's `P^-1` (over the subset); `None` otherwise.
    #[getter]
    fn cov<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyArray2<f64>>>> {
        let (c, m) = match &self.inner {
            AnyState::ViDense(s) => (s.covariance(), s.params.len()),
            AnyState::LaplaceDense(s) => (s.covariance(1.0).map_err(core_err)?, s.subset.len()),
            _ => return Ok(None),
        };
        Ok(Some(PyArray1::from_vec(py, c).reshape([m, m])?))
    }
    /// Momenta, flattened (`None` for SGLD, VI and Laplace).
    #[getter]
    fn momenta<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArray1<f64>>> {
        self.inner.momenta().map(|m| PyArray1::from_slice(py, m))
    }
    fn __repr__(&self) -> String {
        format!(
            "State(method={}, step={}, log_posterior={})",
            self.method,
            self.step(),
            self.log_posterior()
        )
    }
}

/// A transform over Python callables (posteriors' `build`).
#[pyclass(frozen, module = "langevin._langevin")]
struct PyTransform {
    kind: Kind,
    /// The callables' last Python exception.
    error: ErrorSlot,
    method: &'static str,
}

fn momenta_init(m: Option<f64>) -> MomentaInit {
    match m {
        None => MomentaInit::Normal,
        Some(c) => MomentaInit::Constant(c),
    }
}

/// Parameters from a dict of arrays (or one array): `(layout, values)`.
fn params_from_py(obj: &Bound<'_, PyAny>) -> PyResult<Params> {
    let py = obj.py();
    let np = py.import("numpy")?;
    let as_f64 = |o: Bound<'_, PyAny>, what: &str| -> PyResult<(Vec<usize>, Vec<f64>)> {
        let arr = np.call_method1("asarray", (o, "float64")).map_err(|e| {
            pyo3::exceptions::PyTypeError::new_err(format!("{what}: not an array of numbers ({e})"))
        })?;
        let shape: Vec<usize> = arr.getattr("shape")?.extract()?;
        let flat = np.call_method1("ravel", (arr,))?;
        let flat = flat.downcast::<PyArray1<f64>>()?.readonly();
        let v = flat.as_array().to_vec();
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(PyValueError::new_err(format!(
                "{what}: entry {i} is not finite ({})",
                v[i]
            )));
        }
        Ok((shape, v))
    };
    let (specs, values) = if let Ok(dict) = obj.downcast::<PyDict>() {
        let mut specs = Vec::new();
        let mut values = Vec::new();
        for (k, v) in dict.iter() {
            let name: String = k.extract().map_err(|_| {
                pyo3::exceptions::PyTypeError::new_err("params: the dict's keys must be strings")
            })?;
            let (shape, vals) = as_f64(v, &format!("params[{name:?}]"))?;
            specs.push((name, shape));
            values.extend(vals);
        }
        (specs, values)
    } else {
        let (shape, vals) = as_f64(obj.clone(), "params")?;
        (vec![(ARRAY_PARAM.to_string(), shape)], vals)
    };
    if values.is_empty() {
        return Err(PyValueError::new_err("params: no parameters"));
    }
    let layout = ParamLayout::new(specs).map_err(core_err)?;
    Params::new(layout, values).map_err(core_err)
}

impl PyTransform {
    /// One step from `state` (a copy: the argument is never changed).
    fn step_once(&self, py: Python<'_>, state: &mut State, batch: &Py<PyAny>) -> PyResult<()> {
        let r = match (&self.kind, &mut state.inner) {
            (Kind::Sgld(t), AnyState::Sgld(s)) => t.step(s, batch, &mut state.rng).map(drop),
            (Kind::Sghmc(t), AnyState::Sghmc(s)) => t.step(s, batch, &mut state.rng).map(drop),
            (Kind::Sgnht(t), AnyState::Sgnht(s)) => t.step(s, batch, &mut state.rng).map(drop),
            (Kind::Baoa(t), AnyState::Baoa(s)) => t.step(s, batch, &mut state.rng).map(drop),
            (Kind::ViDiag(t), AnyState::ViDiag(s)) => t.step(s, batch, &mut state.rng).map(drop),
            (Kind::ViDense(t), AnyState::ViDense(s)) => t.step(s, batch, &mut state.rng).map(drop),
            (Kind::LaplaceHessian(t), AnyState::LaplaceDense(s)) => {
                t.step(s, batch, &mut state.rng).map(drop)
            }
            (Kind::LaplaceDenseFisher(t), AnyState::LaplaceDense(s)) => {
                t.step(s, batch, &mut state.rng).map(drop)
            }
            (Kind::LaplaceDenseGgn(t), AnyState::LaplaceDense(s)) => {
                t.step(s, batch, &mut state.rng).map(drop)
            }
            (Kind::LaplaceDiagFisher(t), AnyState::LaplaceDiag(s)) => {
                t.step(s, batch, &mut state.rng).map(drop)
            }
            (Kind::LaplaceDiagGgn(t), AnyState::LaplaceDiag(s)) => {
                t.step(s, batch, &mut state.rng).map(drop)
            }
            _ => {
                return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                    "a {} state given to a {} transform",
                    state.method, self.method
                )))
            }
        };
        r.map_err(|e| self.raise(py, e))
    }

    /// The Python exception of the density if it raised, else the library's.
    fn raise(&self, _py: Python<'_>, e: langevin_core::Error) -> PyErr {
        let kept = self.error.lock().ok().and_then(|mut s| s.take());
        match (kept, e.root()) {
            (Some(err), langevin_core::Error::Density(_)) => err,
            _ => core_err(e),
        }
    }
}

#[pymethods]
impl PyTransform {
    /// The initial state at `params` (a dict of arrays, or an array); the
    /// chain's generator is `chain_rng(seed, chain)`.
    #[pyo3(signature = (params, seed=0, chain=0))]
    fn init(&self, params: &Bound<'_, PyAny>, seed: u64, chain: u64) -> PyResult<State> {
        let params = params_from_py(params)?;
        let mut rng = chain_rng(seed, chain);
        let inner = match &self.kind {
            Kind::Sgld(t) => t.init(params, &mut rng).map(AnyState::Sgld),
            Kind::Sghmc(t) => t.init(params, &mut rng).map(AnyState::Sghmc),
            Kind::Sgnht(t) => t.init(params, &mut rng).map(AnyState::Sgnht),
            Kind::Baoa(t) => t.init(params, &mut rng).map(AnyState::Baoa),
            Kind::ViDiag(t) => t.init(params, &mut rng).map(AnyState::ViDiag),
            Kind::ViDense(t) => t.init(params, &mut rng).map(AnyState::ViDense),
            Kind::LaplaceHessian(t) => t.init(params, &mut rng).map(AnyState::LaplaceDense),
            Kind::LaplaceDenseFisher(t) => t.init(params, &mut rng).map(AnyState::LaplaceDense),
            Kind::LaplaceDenseGgn(t) => t.init(params, &mut rng).map(AnyState::LaplaceDense),
            Kind::LaplaceDiagFisher(t) => t.init(params, &mut rng).map(AnyState::LaplaceDiag),
            Kind::LaplaceDiagGgn(t) => t.init(params, &mut rng).map(AnyState::LaplaceDiag),
        }
        .map_err(core_err)?;
        Ok(State {
            inner,
            rng,
            method: self.method,
        })
    }

    /// One step on `batch`: a new state (`state` is unchanged, also when
    /// the density raises or returns a non-finite value).
    fn update(&self, py: Python<'_>, state: &State, batch: Py<PyAny>) -> PyResult<State> {
        let mut s = state.clone();
        self.step_once(py, &mut s, &batch)?;
        Ok(s)
    }

    /// `n_steps` steps in Rust, batch `i % len(batches)` at step `i` (a
    /// list; anything else, a tuple `(x, y)` included, is the batch of
    /// every step). Returns
    /// `(state, trace)`, `trace` a dict of `params` (kept draws x flat
    /// parameters) and `log_posterior`, every `thin`-th step kept. On an
    /// error nothing is returned (the given state is unchanged).
    #[pyo3(signature = (state, batches, n_steps, thin=1))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        state: &State,
        batches: Bound<'py, PyAny>,
        n_steps: u64,
        thin: u64,
    ) -> PyResult<(State, Bound<'py, PyDict>)> {
        if thin == 0 {
            return Err(PyValueError::new_err("thin must be at least 1"));
        }
        // Only a list is a sequence of batches: a tuple is one batch, as
        // posteriors' `(x, y)` batches are.
        let list: Vec<Py<PyAny>> = if let Ok(l) = batches.downcast::<PyList>() {
            l.iter().map(|b| b.unbind()).collect()
        } else {
            vec![batches.clone().unbind()]
        };
        if list.is_empty() {
            return Err(PyValueError::new_err("batches: empty"));
        }
        let mut s = state.clone();
        let dim = s.inner.inner().params().len();
        let mut trace = Vec::new();
        let mut lp = Vec::new();
        for i in 0..n_steps {
            if i % 100 == 99 {
                py.check_signals()?;
            }
            let batch = &list[(i % list.len() as u64) as usize];
            self.step_once(py, &mut s, batch)?;
            if (i + 1) % thin == 0 {
                trace.extend_from_slice(s.inner.inner().params().values());
                lp.push(s.inner.inner().log_density());
            }
        }
        let out = PyDict::new(py);
        let n = lp.len();
        out.set_item("params", PyArray1::from_vec(py, trace).reshape([n, dim])?)?;
        out.set_item("log_posterior", PyArray1::from_vec(py, lp))?;
        Ok((s, out))
    }

    #[getter]
    fn method(&self) -> &'static str {
        self.method
    }
}

/// `n` draws `(n, d)` (flat parameters) from the approximation of a VI
/// or Laplace state at `temperature` (Laplace; VI's q has its own
/// temperature built in and refuses another), with the generator
/// `chain_rng(seed, chain)`. Parameters outside a Laplace `subset`
/// stay at the mean.
#[pyfunction]
#[pyo3(signature = (state, n, temperature=1.0, seed=0, chain=0))]
fn sample_state<'py>(
    py: Python<'py>,
    state: &State,
    n: usize,
    temperature: f64,
    seed: u64,
    chain: u64,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let mut rng = chain_rng(seed, chain);
    let draws = match &state.inner {
        AnyState::ViDiag(_) | AnyState::ViDense(_) if temperature != 1.0 => {
            return Err(PyValueError::new_err(
                "temperature: VI's q is sampled as fitted (its temperature is the transform's)",
            ))
        }
        AnyState::ViDiag(s) => s.sample(n, &mut rng),
        AnyState::ViDense(s) => s.sample(n, &mut rng),
        AnyState::LaplaceDiag(s) => s.sample(n, temperature, &mut rng).map_err(core_err)?,
        AnyState::LaplaceDense(s) => s.sample(n, temperature, &mut rng).map_err(core_err)?,
        _ => {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "sample: a {} state is a chain, not an approximation (VI or Laplace)",
                state.method
            )))
        }
    };
    let d = state.inner.inner().params().len();
    let flat: Vec<f64> = draws
        .iter()
        .flat_map(|p| p.values().iter().copied())
        .collect();
    PyArray1::from_vec(py, flat).reshape([n, d])
}

/// The outer likelihood of a GGN transform: `bernoulli`, `categorical`,
/// `gaussian` (with `noise_var`) or a callable `(outputs, batch) -> (n, k, k)`
/// Hessians of `-log p(y | f)`.
fn outer_of(outer: Option<&Bound<'_, PyAny>>, noise_var: f64) -> PyResult<Outer> {
    let Some(o) = outer else {
        return Err(PyValueError::new_err(
            "outer_log_likelihood is required: \"bernoulli\", \"categorical\", \"gaussian\" or a callable (outputs, batch) -> Hessians",
        ));
    };
    if let Ok(name) = o.downcast::<PyString>() {
        let name = name.to_cow()?;
        return match name.as_ref() {
            "bernoulli" => Ok(Outer::Known(OutputLikelihood::Bernoulli)),
            "categorical" => Ok(Outer::Known(OutputLikelihood::Categorical)),
            "gaussian" => {
                if !(noise_var.is_finite() && noise_var > 0.0) {
                    return Err(PyValueError::new_err(format!(
                        "noise_var must be finite and > 0, got {noise_var}"
                    )));
                }
                Ok(Outer::Known(OutputLikelihood::Gaussian {
                    variance: noise_var,
                }))
            }
            other => Err(PyValueError::new_err(format!(
                "outer_log_likelihood `{other}`: expected \"bernoulli\", \"categorical\", \"gaussian\" or a callable"
            ))),
        };
    }
    if o.is_callable() {
        return Ok(Outer::Callable(o.clone().unbind()));
    }
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "outer_log_likelihood must be a name or a callable, got {}",
        o.get_type().name()?
    )))
}

/// Build a transform: `method` is `sgld`, `sghmc`, `sgnht`, `baoa` (with
/// posteriors' hyper-parameter names), `vi-diag` (Adam with step `lr`,
/// `n_samples`, `stl`, `init_log_sds`), `vi-dense` (`init_scale`: `L`
/// starts at `init_scale * I`), `laplace-hessian` (`rescale`,
/// `init_prec_diag`), `laplace-diag-fisher` / `laplace-dense-fisher` (`f`
/// is a per-example log posterior; `init_prec_diag`, `subset`) or
/// `laplace-diag-ggn` / `laplace-dense-ggn` (`f` is the model's forward
/// with its Jacobian; `outer`, `noise_var`, `init_prec_diag`, `subset`).
#[pyfunction]
#[pyo3(signature = (method, f, lr=1e-3, alpha=0.01, beta=0.0, sigma=1.0, temperature=1.0, momenta=None, xi=None, n_samples=1, stl=true, init_log_sds=0.0, rescale=1.0, init_prec_diag=0.0, init_scale=1.0, subset=None, outer=None, noise_var=1.0))]
#[allow(clippy::too_many_arguments)]
fn build(
    method: &str,
    f: Bound<'_, PyAny>,
    lr: f64,
    alpha: f64,
    beta: f64,
    sigma: f64,
    temperature: f64,
    momenta: Option<f64>,
    xi: Option<f64>,
    n_samples: usize,
    stl: bool,
    init_log_sds: f64,
    rescale: f64,
    init_prec_diag: f64,
    init_scale: f64,
    subset: Option<Vec<String>>,
    outer: Option<Bound<'_, PyAny>>,
    noise_var: f64,
) -> PyResult<PyTransform> {
    let what = match method {
        "laplace-diag-fisher" | "laplace-dense-fisher" => {
            "log_posterior must be callable (params, batch) -> (values per example, grads per example)"
        }
        "laplace-diag-ggn" | "laplace-dense-ggn" => {
            "forward must be callable (params, batch) -> (outputs, jacobian)"
        }
        _ => "log_posterior must be callable (params, batch) -> (value, grads)",
    };
    if !f.is_callable() {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "{what}, got {}",
            f.get_type().name()?
        )));
    }
    let error: ErrorSlot = Arc::new(Mutex::new(None));
    let d: Density = Arc::new(PyDensity {
        f: f.clone().unbind(),
        error: error.clone(),
    });
    let laplace = LaplaceConfig {
        init_prec_diag,
        subset: subset.clone(),
    };
    let per_example = || PyPerExample {
        f: f.clone().unbind(),
        error: error.clone(),
    };
    let output_model = || -> PyResult<PyOutputModel> {
        Ok(PyOutputModel {
            forward: f.clone().unbind(),
            outer: outer_of(outer.as_ref(), noise_var)?,
            error: error.clone(),
        })
    };
    let curvature_model = matches!(
        method,
        "laplace-diag-fisher" | "laplace-dense-fisher" | "laplace-diag-ggn" | "laplace-dense-ggn"
    );
    if subset.is_some() && !curvature_model {
        return Err(PyValueError::new_err(format!(
            "subset: not an option of {method} (the Fisher and GGN Laplace variants have it)"
        )));
    }
    let (kind, method) = match method {
        "sgld" => (
            Sgld::new(
                d,
                SgldConfig {
                    step_size: lr.into(),
                    temperature: temperature.into(),
                    beta,
                },
            )
            .map(Kind::Sgld),
            "sgld",
        ),
        "sghmc" => (
            Sghmc::new(
                d,
                SghmcConfig {
                    step_size: lr.into(),
                    temperature: temperature.into(),
                    friction: alpha,
                    beta,
                    sigma,
                    momenta: momenta_init(momenta),
                },
            )
            .map(Kind::Sghmc),
            "sghmc",
        ),
        "sgnht" => (
            Sgnht::new(
                d,
                SgnhtConfig {
                    step_size: lr.into(),
                    temperature: temperature.into(),
                    friction: alpha,
                    beta,
                    sigma,
                    momenta: momenta_init(momenta),
                    thermostat: xi,
                },
            )
            .map(Kind::Sgnht),
            "sgnht",
        ),
        "baoa" => (
            Baoa::new(
                d,
                BaoaConfig {
                    step_size: lr.into(),
                    temperature: temperature.into(),
                    friction: alpha,
                    sigma,
                    momenta: momenta_init(momenta),
                },
            )
            .map(Kind::Baoa),
            "baoa",
        ),
        "vi-diag" => (
            DiagVi::new(
                d,
                DiagViConfig {
                    optimizer: Optimizer::adam(lr),
                    temperature: temperature.into(),
                    n_samples,
                    stick_the_landing: stl,
                    init_log_sd: init_log_sds,
                },
            )
            .map(Kind::ViDiag),
            "vi-diag",
        ),
        "vi-dense" => (
            DenseVi::new(
                d,
                DenseViConfig {
                    optimizer: Optimizer::adam(lr),
                    temperature: temperature.into(),
                    n_samples,
                    stick_the_landing: stl,
                    init_scale,
                },
            )
            .map(Kind::ViDense),
            "vi-dense",
        ),
        "laplace-hessian" => (
            DenseHessianLaplace::new(
                d,
                DenseHessianConfig {
                    init_prec_diag,
                    rescale,
                    ..DenseHessianConfig::default()
                },
            )
            .map(Kind::LaplaceHessian),
            "laplace-hessian",
        ),
        "laplace-diag-fisher" => (
            DiagFisherLaplace::new(per_example(), laplace).map(Kind::LaplaceDiagFisher),
            "laplace-diag-fisher",
        ),
        "laplace-dense-fisher" => (
            DenseFisherLaplace::new(per_example(), laplace).map(Kind::LaplaceDenseFisher),
            "laplace-dense-fisher",
        ),
        "laplace-diag-ggn" => (
            DiagGgnLaplace::new(output_model()?, laplace).map(Kind::LaplaceDiagGgn),
            "laplace-diag-ggn",
        ),
        "laplace-dense-ggn" => (
            DenseGgnLaplace::new(output_model()?, laplace).map(Kind::LaplaceDenseGgn),
            "laplace-dense-ggn",
        ),
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown method `{other}` (sgld, sghmc, sgnht, baoa, vi-diag, vi-dense, laplace-hessian, \
                 laplace-diag-fisher, laplace-dense-fisher, laplace-diag-ggn, laplace-dense-ggn)"
            )))
        }
    };
    Ok(PyTransform {
        kind: kind.map_err(core_err)?,
        error,
        method,
    })
}

#[pymodule]
fn _langevin(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("LangevinError", py.get_type::<LangevinError>())?;
    m.add(
        "NonFiniteLogDensityError",
        py.get_type::<NonFiniteLogDensityError>(),
    )?;
    m.add("DivergenceError", py.get_type::<DivergenceError>())?;
    m.add_function(wrap_pyfunction!(fit_cli, m)?)?;
    m.add_function(wrap_pyfunction!(run_log_posterior, m)?)?;
    m.add_function(wrap_pyfunction!(bundled_names, m)?)?;
    m.add_function(wrap_pyfunction!(bundled_load, m)?)?;
    m.add_function(wrap_pyfunction!(diag, m)?)?;
    m.add_function(wrap_pyfunction!(ksd, m)?)?;
    m.add_function(wrap_pyfunction!(ou_sample, m)?)?;
    m.add_function(wrap_pyfunction!(ou_log_prob, m)?)?;
    m.add_function(wrap_pyfunction!(thermo_linalg, m)?)?;
    m.add_function(wrap_pyfunction!(build, m)?)?;
    m.add_function(wrap_pyfunction!(sample_state, m)?)?;
    m.add_class::<State>()?;
    m.add_class::<PyTransform>()?;
    Ok(())
}
