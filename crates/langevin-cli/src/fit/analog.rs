//! `langevin fit --method analog`: the analog (thermodynamic) posterior sampler of
//! `langevin_thermo::analog` on the user's data, simulated, with its analog time and
//! energy reported next to the digital run.
//!
//! The circuit realises overdamped Langevin dynamics `dθ = ∇ log p(θ | data) dt + √2 dW`
//! (time in units of `τ = R_u C_int = 1 µs`) with one integrator per parameter and
//! resistor crossbars for the data (Aifer et al., "Thermodynamic Bayesian inference"):
//!
//! * **linear regression** with a fixed noise sd (`--noise-sd`): the posterior is
//!   Gaussian with precision `P = I/s² + X̃ᵀX̃/σ²` (`X̃` = features and a column of ones),
//!   the circuit is linear and is simulated exactly (transition `e^{-Ph}` and its
//!   Van Loan covariance). Each chain starts at θ = 0, runs until the ideal circuit's KL
//!   to the posterior is below 0.01 nats (closed form), then is read out every `1/λ_min(P)`
//!   (one e-fold of the slowest mode).
//! * **logistic regression**: crossbars for `X̃θ` and `X̃ᵀ(y − σ(X̃θ))`, one sigmoid element
//!   per training row (ideal components), simulated by Euler-Maruyama with step
//!   `h = 0.02 / λ_max` (λ: eigenvalues of the log posterior's Hessian at the MAP, found
//!   digitally by Newton's method; the Euler-Maruyama variance bias of a mode is about
//!   `hλ/2`, at most 1%). Each chain starts at the MAP (an analog device can be set to any
//!   voltage), relaxes for `5/λ_min` and is read out every `1/λ_min`.
//!
//! The draws go to `samples.csv` as the other methods' do (`summary.json`, the plots,
//! `predict` and `diagnose` work unchanged), and `summary.json` gets `analog`: the
//! circuit's time constant, analog time per chain and in all (τ units and seconds), power
//! and energy from the circuit model of `langevin_thermo::analog` (representative
//! constants, not measurements), and the digital seconds of the whole run for comparison.
//! Components are ideal (no mismatch).

use anyhow::Result;
use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use langevin::samples::Samples;
use langevin_core::chain_rng;
use langevin_models::{ModelKind, Noise};
use langevin_thermo::analog::{
    CircuitConfig, GaussianProblem, IdealKl, LinearCircuit, LogisticCircuit, LogisticProblem,
    Moments, Nonlinearity,
};
use langevin_thermo::ou;
use serde_json::json;

use super::report::{summarize_and_report, ReportArgs};
use crate::exit::{bad_input, Diverged};

/// KL (nats) to the posterior at which the linear circuit's burn-in ends.
const BURN_KL: f64 = 0.01;
/// Euler-Maruyama step of the logistic circuit, as a fraction of `1/λ_max`.
const EM_STEP: f64 = 0.02;
/// Burn-in of the logistic circuit from the MAP, in units of `1/λ_min`.
const LOGISTIC_BURN: f64 = 5.0;
/// Largest simulation (floating-point operations) `fit --method analog` runs.
const MAX_SIMULATION_FLOPS: f64 = 5e10;
/// Newton iterations for the logistic MAP (quadratic convergence: a handful suffice).
const NEWTON_ITERS: usize = 100;

/// Draws per chain of the analog sampler: read out every relaxation time, so the draws
/// are nearly independent; fewer than the Gaussian methods' 1000 keep the logistic
/// simulation (Euler-Maruyama steps over every training row) to seconds.
pub const ANALOG_DRAWS: usize = 250;

/// Refuse the models the analog circuits do not cover (exit code 2).
pub fn check_model(kind: ModelKind, noise: Noise) -> Result<()> {
    match (kind, noise) {
        (ModelKind::Logistic, _) | (ModelKind::Linear, Noise::Fixed(_)) => Ok(()),
        (ModelKind::Linear, Noise::Learned) => crate::bail_input!(
            "--method analog realises a Gaussian posterior for linear regression, which needs a \
             fixed noise: pass --noise-sd S (in standardised target units, e.g. the residual sd \
             of a first fit)"
        ),
        (k, _) => crate::bail_input!(
            "--method analog has circuits for linear and logistic regression only, not --model {}",
            k.name()
        ),
    }
}

/// The design matrix with a column of ones (the intercept is the last parameter, as in
/// the model's layout), row-major `n × (d + 1)`.
fn design(x: &[f64], n: usize, d: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n * (d + 1));
    for row in x.chunks_exact(d) {
        out.extend_from_slice(row);
        out.push(1.0);
    }
    out
}

fn sym_eigenvalues(m: &Mat<f64>) -> Result<Vec<f64>> {
    let e = m
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| anyhow::anyhow!("eigendecomposition failed"))?;
    Ok((0..m.nrows()).map(|i| e.S().column_vector()[i]).collect())
}

/// What the analog run did, for `summary.json`.
struct AnalogRun {
    draws: Vec<Vec<Vec<f64>>>,
    info: serde_json::Map<String, serde_json::Value>,
    /// Analog time of one chain (τ units).
    chain_time: f64,
    power_watts: f64,
}

pub fn run(r: &ReportArgs<'_>) -> Result<serde_json::Value> {
    let (cfg, prep) = (r.cfg, r.prep);
    let model = &prep.model;
    let spec = model.spec();
    check_model(spec.kind, spec.noise)?;
    let d = spec.feature_names.len();
    let n = prep.train_y.len();
    let p = d + 1;
    if model.n_params() != p {
        anyhow::bail!(
            "internal error: {} parameters, expected {p}",
            model.n_params()
        );
    }
    let x = design(&prep.train_x, n, d);
    let circuit = CircuitConfig::default();
    let run = match spec.noise {
        Noise::Fixed(sigma) if spec.kind == ModelKind::Linear => {
            linear(&x, &prep.train_y, p, spec.prior_sd, sigma, cfg, &circuit)?
        }
        _ => logistic(&x, &prep.train_y, n, p, spec.prior_sd, cfg, &circuit)?,
    };

    let mut samples = Samples::new(model.param_names().to_vec(), cfg.chains);
    for (trace, chain) in samples.chains.iter_mut().zip(&run.draws) {
        for dr in chain {
            if dr.iter().any(|v| !v.is_finite()) {
                return Err(anyhow::Error::new(Diverged(
                    "--method analog: the simulated circuit produced non-finite states".into(),
                )));
            }
            trace.push(dr, f64::NAN)?;
        }
    }
    super::gaussian::write_samples(r.out_dir, &samples)?;
    let divergences = vec![0; cfg.chains];
    let mut summary = summarize_and_report(r, &samples, &divergences, None)?;
    let tau = circuit.tau();
    let total = run.chain_time * cfg.chains as f64;
    let digital = r.t0.elapsed().as_secs_f64();
    let mut a = run.info;
    a.insert("tau_seconds".into(), json!(tau));
    a.insert("analog_time_per_chain_tau".into(), json!(run.chain_time));
    a.insert("analog_time_tau".into(), json!(total));
    a.insert("analog_seconds".into(), json!(total * tau));
    a.insert(
        "analog_seconds_parallel".into(),
        json!(run.chain_time * tau),
    );
    a.insert("power_watts".into(), json!(run.power_watts));
    a.insert("energy_joules".into(), json!(run.power_watts * total * tau));
    a.insert("digital_seconds".into(), json!(digital));
    a.insert("components".into(), json!("ideal (no mismatch)"));
    a.insert(
        "energy_note".into(),
        json!(
            "circuit model of langevin_thermo::analog: representative constants, not a measurement"
        ),
    );
    if !r.quiet {
        eprintln!(
            "analog sampler: {:.3e} s of analog time in all ({:.3e} s per chain, chains in \
             parallel), {:.3e} J at {:.3e} W (circuit model), against {:.2} s of this \
             computer simulating it",
            total * tau,
            run.chain_time * tau,
            run.power_watts * total * tau,
            run.power_watts,
            digital
        );
    }
    if let Some(obj) = summary.as_object_mut() {
        obj.insert("analog".into(), serde_json::Value::Object(a));
        obj.insert("seconds".into(), json!(digital));
    }
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
fn linear(
    x: &[f64],
    y: &[f64],
    p: usize,
    prior_sd: f64,
    sigma: f64,
    cfg: &super::plan::FitConfig,
    circuit: &CircuitConfig,
) -> Result<AnalogRun> {
    let inv_var = 1.0 / (sigma * sigma);
    let mut prec = Mat::<f64>::zeros(p, p);
    let mut b = vec![0.0; p];
    for (row, &yi) in x.chunks_exact(p).zip(y) {
        for i in 0..p {
            b[i] += row[i] * yi * inv_var;
            for j in 0..p {
                prec[(i, j)] += row[i] * row[j] * inv_var;
            }
        }
    }
    for i in 0..p {
        prec[(i, i)] += 1.0 / (prior_sd * prior_sd);
    }
    let post = GaussianProblem::from_precision(prec, b).map_err(bad_input)?;
    let start = vec![0.0; p];
    let ideal = IdealKl::new(&post, &start)?;
    let lam = ideal.eigenvalues();
    let lam_min = lam.iter().cloned().fold(f64::INFINITY, f64::min);
    let burn = ideal.time_to(BURN_KL);
    let interval = 1.0 / lam_min;
    let circ = LinearCircuit::realise(&post, circuit)?;
    // The circuit as an OU process `dθ = -A (θ - m) dt + N(0, D dt)`, sampled exactly
    // (`ou::OuProcess` picks a transition formula that stays accurate for steps far
    // beyond the fastest mode's relaxation time, as the read-out interval is).
    let diffusion = Mat::from_fn(p, p, |i, j| if i == j { circ.diffusion[i] } else { 0.0 });
    let m = circ
        .drift
        .partial_piv_lu()
        .solve(Mat::from_fn(p, 1, |i, _| circ.b[i]));
    let m: Vec<f64> = (0..p).map(|i| m[(i, 0)]).collect();
    let mut process = ou::OuProcess::new(circ.drift.as_ref(), &m, diffusion.as_ref())?;
    let ts: Vec<f64> = std::iter::once(0.0)
        .chain((0..ANALOG_DRAWS).map(|k| burn + k as f64 * interval))
        .collect();
    let mut draws = Vec::with_capacity(cfg.chains);
    for ch in 0..cfg.chains {
        let mut rng = chain_rng(cfg.seed, ch as u64);
        let path = process.sample(&ts, &start, &mut rng)?;
        draws.push((1..path.len()).map(|k| path.state(k).to_vec()).collect());
    }
    let power = LinearCircuit::power(&post, circuit)?;
    let mut info = serde_json::Map::new();
    info.insert(
        "circuit".into(),
        json!("linear-Gaussian (exact simulation)"),
    );
    info.insert("noise_sd".into(), json!(sigma));
    info.insert("burn_in_tau".into(), json!(burn));
    info.insert("burn_in_kl".into(), json!(BURN_KL));
    info.insert("readout_interval_tau".into(), json!(interval));
    info.insert("lambda_min".into(), json!(lam_min));
    info.insert(
        "lambda_max".into(),
        json!(lam.iter().cloned().fold(0.0, f64::max)),
    );
    info.insert("posterior_mean".into(), json!(post.mean));
    Ok(AnalogRun {
        draws,
        info,
        chain_time: burn + interval * ANALOG_DRAWS as f64,
        power_watts: power,
    })
}

fn logistic(
    x: &[f64],
    y: &[f64],
    n: usize,
    p: usize,
    prior_sd: f64,
    cfg: &super::plan::FitConfig,
    circuit: &CircuitConfig,
) -> Result<AnalogRun> {
    let prob = LogisticProblem {
        x: x.to_vec(),
        y: y.to_vec(),
        n,
        d: p,
        prior_var: prior_sd * prior_sd,
    };
    // The MAP by Newton's method (digital set-up: the start voltage and the time scales).
    let hessian = |th: &[f64]| -> Mat<f64> {
        let mut h = Mat::<f64>::zeros(p, p);
        for i in 0..p {
            h[(i, i)] = 1.0 / prob.prior_var;
        }
        for row in x.chunks_exact(p) {
            let a: f64 = row.iter().zip(th).map(|(u, v)| u * v).sum();
            let s = 1.0 / (1.0 + (-a).exp());
            let w = s * (1.0 - s);
            for i in 0..p {
                for j in 0..p {
                    h[(i, j)] += w * row[i] * row[j];
                }
            }
        }
        h
    };
    let mut th = vec![0.0; p];
    for _ in 0..NEWTON_ITERS {
        let (_, g) = prob.logp_grad(&th);
        let h = hessian(&th);
        let llt = h
            .llt(Side::Lower)
            .map_err(|_| anyhow::anyhow!("the log posterior's Hessian is not positive definite"))?;
        let step = llt.solve(Mat::from_fn(p, 1, |i, _| g[i]));
        let mut size = 0f64;
        for i in 0..p {
            th[i] += step[(i, 0)];
            size = size.max(step[(i, 0)].abs());
        }
        if size < 1e-10 {
            break;
        }
    }
    if th.iter().any(|v| !v.is_finite()) {
        return Err(anyhow::Error::new(Diverged(
            "--method analog: Newton's method for the MAP diverged".into(),
        )));
    }
    let lam = sym_eigenvalues(&hessian(&th))?;
    let lam_min = lam.iter().cloned().fold(f64::INFINITY, f64::min);
    let lam_max = lam.iter().cloned().fold(0.0, f64::max);
    let h = EM_STEP / lam_max;
    let interval = 1.0 / lam_min;
    let thin = (interval / h).ceil() as usize;
    let burn = (LOGISTIC_BURN * interval / h).ceil() as usize;
    // Simulation cost: each Euler-Maruyama step reads both crossbars (4 n p flops).
    let flops = 4.0 * (n * p) as f64 * (burn + thin * ANALOG_DRAWS) as f64 * cfg.chains as f64;
    if flops > MAX_SIMULATION_FLOPS {
        crate::bail_input!(
            "--method analog: simulating this logistic circuit takes about {flops:.1e} \
             floating-point operations (posterior condition number {:.0}: Euler-Maruyama \
             steps of 1/{:.0} of the slowest relaxation time, over {n} training rows), more \
             than the {MAX_SIMULATION_FLOPS:.0e} this command allows (a minute or so); a \
             smaller --prior-sd, fewer --chains or fewer rows make it feasible",
            lam_max / lam_min,
            (interval / h).round()
        );
    }
    let circ = LogisticCircuit::realise(&prob, Nonlinearity::Ideal, circuit)?;
    let mut draws = Vec::with_capacity(cfg.chains);
    for ch in 0..cfg.chains {
        let mut rng = chain_rng(cfg.seed, ch as u64);
        draws.push(
            circ.trajectory(&th, h, burn, thin, ANALOG_DRAWS, &mut rng)
                .map_err(|e| anyhow::Error::new(Diverged(format!("--method analog: {e}"))))?,
        );
    }
    // Power at the draws' moments (the crossbars' dissipation depends on E[θ²]).
    let all: Vec<&Vec<f64>> = draws.iter().flatten().collect();
    let m = all.len() as f64;
    let mean: Vec<f64> = (0..p)
        .map(|j| all.iter().map(|d| d[j]).sum::<f64>() / m)
        .collect();
    let var: Vec<f64> = (0..p)
        .map(|j| all.iter().map(|d| (d[j] - mean[j]).powi(2)).sum::<f64>() / (m - 1.0))
        .collect();
    let power = circ.power(
        &Moments {
            mean,
            var,
            acceptance: f64::NAN,
        },
        circuit,
    );
    let mut info = serde_json::Map::new();
    info.insert(
        "circuit".into(),
        json!("logistic (ideal sigmoid elements, Euler-Maruyama)"),
    );
    info.insert("em_step_tau".into(), json!(h));
    info.insert("burn_in_tau".into(), json!(burn as f64 * h));
    info.insert("readout_interval_tau".into(), json!(thin as f64 * h));
    info.insert("lambda_min".into(), json!(lam_min));
    info.insert("lambda_max".into(), json!(lam_max));
    info.insert("map".into(), json!(th));
    info.insert("training_rows".into(), json!(n));
    Ok(AnalogRun {
        draws,
        info,
        chain_time: (burn + thin * ANALOG_DRAWS) as f64 * h,
        power_watts: power,
    })
}
