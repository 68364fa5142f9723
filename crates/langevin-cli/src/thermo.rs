//! `langevin thermo`: thermodynamic computing.
//!
//! * `sample`: exact OU sampling (`langevin_thermo::ou`).
//! * `solve`, `inv`, `expm`, `logdet`: thermodynamic linear algebra
//!   (`langevin_thermo::linalg`).
//!
//! Inputs are headerless numeric CSV files; every subcommand runs a built-in
//! example when no matrix is given. Outputs (CSV, PNG, `summary.json`) go to `--out`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use langevin_thermo::linalg::{self, Estimate, HardwareModel, ThermoConfig};
use langevin_thermo::ou::{self, Mat, MatRef, OuProcess};
use serde_json::json;

use crate::exit::bad_input;

#[derive(Subcommand)]
pub enum ThermoCommand {
    /// Exact OU sample path of dx = -A (x - b) dt + N(0, D dt) (built-in example: non-normal A = [[1, 5], [0, 2]]).
    Sample(SampleArgs),
    /// Solve A x = b (A symmetric positive definite) by the time average of an OU process.
    Solve(LinalgArgs),
    /// Invert A (symmetric positive definite) from the stationary covariance of an OU process.
    Inv(LinalgArgs),
    /// Matrix exponential e^{A} (or e^{-A} with --negative) from the lag autocovariance of an OU process.
    Expm(ExpmArgs),
    /// log det A (symmetric positive definite) from the stationary covariance, with jackknife error.
    Logdet(LinalgArgs),
    /// SPU circuit model: Gaussian sampling and matrix inversion on simulated RLC cells, error vs run time, classifier uncertainty.
    Spu(SpuArgs),
    /// Analog posterior samplers: time/energy to a KL threshold vs d (Gaussian and logistic circuits).
    Tbi(TbiArgs),
    /// Thermodynamic natural gradient descent on digits vs SGD, Adam, NGD, NGD-CG.
    Tngd(TngdArgs),
}

pub fn run(cmd: ThermoCommand) -> anyhow::Result<()> {
    match cmd {
        ThermoCommand::Sample(a) => run_sample(a),
        ThermoCommand::Solve(a) => run_linalg(a, Op::Solve),
        ThermoCommand::Inv(a) => run_linalg(a, Op::Inv),
        ThermoCommand::Expm(a) => {
            let op = if a.negative { Op::ExpNeg } else { Op::Exp };
            run_linalg(a.common, op)
        }
        ThermoCommand::Logdet(a) => run_linalg(a, Op::Logdet),
        ThermoCommand::Spu(a) => run_spu(a),
        ThermoCommand::Tbi(a) => run_tbi(a),
        ThermoCommand::Tngd(a) => run_tngd(a),
    }
}

// ---------------------------------------------------------------------------
// CSV input
// ---------------------------------------------------------------------------

/// Reads a headerless numeric CSV matrix (the one reader of every thermo
/// subcommand); a UTF-8 byte-order mark at the start of the file is skipped, and
/// errors name the file and the 1-based line.
fn read_matrix(path: &Path) -> anyhow::Result<Mat<f64>> {
    let text = fs::read_to_string(path)
        .map_err(|e| bad_input(format!("{}: cannot read: {e}", path.display())))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut row = Vec::new();
        for (col, field) in line.split(',').enumerate() {
            let f = field.trim();
            let shown = langevin_core::error::shown_cell(f);
            let v: f64 = f.parse().map_err(|_| {
                bad_input(format!(
                    "{}:{}: column {}: `{shown}` is not a number",
                    path.display(),
                    ln + 1,
                    col + 1
                ))
            })?;
            if !v.is_finite() {
                return Err(bad_input(format!(
                    "{}:{}: column {}: non-finite value `{shown}`",
                    path.display(),
                    ln + 1,
                    col + 1
                )));
            }
            if v != 0.0 && !(1e-150..=1e150).contains(&v.abs()) {
                return Err(bad_input(format!(
                    "{}:{}: column {}: `{shown}` is outside [1e-150, 1e150] in magnitude \
                     (products of such entries overflow or underflow f64); rescale the \
                     matrix, or write 0",
                    path.display(),
                    ln + 1,
                    col + 1
                )));
            }
            row.push(v);
        }
        if let Some(first) = rows.first() {
            if row.len() != first.len() {
                return Err(bad_input(format!(
                    "{}:{}: ragged row: {} values, but the first row has {}",
                    path.display(),
                    ln + 1,
                    row.len(),
                    first.len()
                )));
            }
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(bad_input(format!("{}: no data", path.display())));
    }
    Ok(Mat::from_fn(rows.len(), rows[0].len(), |i, j| rows[i][j]))
}

fn read_square(path: &Path) -> anyhow::Result<Mat<f64>> {
    let m = read_matrix(path)?;
    if m.nrows() != m.ncols() {
        return Err(bad_input(format!(
            "{}: matrix must be square, got {} rows of {} values",
            path.display(),
            m.nrows(),
            m.ncols()
        )));
    }
    Ok(m)
}

/// A vector: one column or one row.
fn read_vector(path: &Path) -> anyhow::Result<Vec<f64>> {
    let m = read_matrix(path)?;
    if m.ncols() == 1 {
        Ok((0..m.nrows()).map(|i| m[(i, 0)]).collect())
    } else if m.nrows() == 1 {
        Ok((0..m.ncols()).map(|j| m[(0, j)]).collect())
    } else {
        Err(bad_input(format!(
            "{}: a vector must be one row or one column, got {}x{}",
            path.display(),
            m.nrows(),
            m.ncols()
        )))
    }
}

fn write_matrix(path: &Path, m: MatRef<'_, f64>) -> anyhow::Result<()> {
    let mut s = String::new();
    for i in 0..m.nrows() {
        let row: Vec<String> = (0..m.ncols()).map(|j| format!("{}", m[(i, j)])).collect();
        s.push_str(&row.join(","));
        s.push('\n');
    }
    fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

fn write_vector(path: &Path, v: &[f64]) -> anyhow::Result<()> {
    let s: String = v.iter().map(|x| format!("{x}\n")).collect();
    fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

fn mat_json(m: MatRef<'_, f64>) -> serde_json::Value {
    json!((0..m.nrows())
        .map(|i| (0..m.ncols()).map(|j| m[(i, j)]).collect::<Vec<f64>>())
        .collect::<Vec<_>>())
}

/// Creates the output folder; failing to is bad input (exit 2), e.g. a path
/// under a regular file.
fn prepare_out(out: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(out).map_err(|e| {
        bad_input(format!(
            "--out {}: cannot create the output folder: {e}",
            out.display()
        ))
    })
}

fn write_json(out: &Path, v: &serde_json::Value) -> anyhow::Result<()> {
    let p = out.join("summary.json");
    fs::write(&p, serde_json::to_string_pretty(v)?)
        .with_context(|| format!("writing {}", p.display()))
}

/// Library errors on user-given matrices are bad input (exit 2), named by file.
fn input_err(source: &str) -> impl Fn(langevin_thermo::error::ThermoError) -> anyhow::Error + '_ {
    move |e| bad_input(format!("{source}: {e}"))
}

// ---------------------------------------------------------------------------
// sample
// ---------------------------------------------------------------------------

#[derive(Args)]
pub struct SampleArgs {
    /// Drift matrix A (CSV, square; eigenvalues of positive real part). Default: [[1, 5], [0, 2]].
    #[arg(long)]
    matrix: Option<PathBuf>,
    /// Stationary mean b (CSV vector). Default: zeros.
    #[arg(long)]
    vector: Option<PathBuf>,
    /// Diffusion matrix D (CSV, symmetric positive semi-definite). Default: 2 I.
    #[arg(long)]
    diffusion: Option<PathBuf>,
    /// Initial state x0 (CSV vector). Default: b + 3 in every coordinate.
    #[arg(long)]
    x0: Option<PathBuf>,
    /// Time grid (CSV vector, strictly increasing). Default: a regular grid from --t-end and --steps.
    #[arg(long)]
    times: Option<PathBuf>,
    /// End time of the regular grid.
    #[arg(long, default_value_t = 50.0)]
    t_end: f64,
    /// Steps of the regular grid.
    #[arg(long, default_value_t = 5000)]
    steps: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder.
    #[arg(long, default_value = "runs/thermo-sample")]
    out: PathBuf,
}

/// Most memory a `thermo` command may hold for one result (bytes).
const MAX_BYTES: f64 = 4e9;
/// Most multiply-adds of the simulated device in one `thermo` linear-algebra
/// command (about ten minutes on one core).
const MAX_WORK: f64 = 1e12;

/// The sampled path is held in memory: `points` x `n` numbers.
fn check_path_size(points: f64, n: usize) -> anyhow::Result<()> {
    let bytes = points * n as f64 * 8.0;
    if bytes > MAX_BYTES {
        crate::bail_input!(
            "the path would hold {points:.3e} grid points x {n} coordinates ({:.1} GB): at \
             most {:.0} GB; use fewer --steps or a shorter --times file",
            bytes / 1e9,
            MAX_BYTES / 1e9
        );
    }
    Ok(())
}

fn run_sample(args: SampleArgs) -> anyhow::Result<()> {
    let a = match &args.matrix {
        Some(p) => read_square(p)?,
        None => Mat::from_fn(2, 2, |i, j| [[1.0, 5.0], [0.0, 2.0]][i][j]),
    };
    let src = args
        .matrix
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "built-in A".into());
    let n = a.nrows();
    let b = match &args.vector {
        Some(p) => read_vector(p)?,
        None => vec![0.0; n],
    };
    let d = match &args.diffusion {
        Some(p) => read_square(p)?,
        None => Mat::from_fn(n, n, |i, j| if i == j { 2.0 } else { 0.0 }),
    };
    let x0 = match &args.x0 {
        Some(p) => read_vector(p)?,
        None => b.iter().map(|v| v + 3.0).collect(),
    };
    let ts: Vec<f64> = match &args.times {
        Some(p) => read_vector(p)?,
        None => {
            if args.steps == 0 || !(args.t_end > 0.0 && args.t_end.is_finite()) {
                crate::bail_input!("--steps must be positive and --t-end positive and finite");
            }
            check_path_size(args.steps as f64 + 1.0, n)?;
            (0..=args.steps)
                .map(|k| args.t_end * k as f64 / args.steps as f64)
                .collect()
        }
    };
    check_path_size(ts.len() as f64, n)?;
    let mut proc = OuProcess::new(a.as_ref(), &b, d.as_ref()).map_err(input_err(&src))?;
    let mut rng = langevin_core::rng::chain_rng(args.seed, 0);
    let start = std::time::Instant::now();
    let path = proc
        .sample(&ts, &x0, &mut rng)
        .map_err(input_err("sample"))?;
    let seconds = start.elapsed().as_secs_f64();
    let s = proc
        .stationary_covariance()
        .map_err(input_err(&src))?
        .to_owned();

    prepare_out(&args.out)?;
    let mut csv = String::from("t");
    for i in 0..n {
        csv.push_str(&format!(",x{}", i + 1));
    }
    csv.push('\n');
    for k in 0..path.len() {
        csv.push_str(&format!("{}", path.times[k]));
        for v in path.state(k) {
            csv.push_str(&format!(",{v}"));
        }
        csv.push('\n');
    }
    fs::write(args.out.join("path.csv"), csv)?;
    write_matrix(&args.out.join("stationary_covariance.csv"), s.as_ref())?;

    // Empirical covariance over the second half of the path (for comparison).
    let half = path.len() / 2;
    let m = path.len() - half;
    let mut emp = Mat::<f64>::zeros(n, n);
    if m > 1 {
        for k in half..path.len() {
            let x = path.state(k);
            for i in 0..n {
                for j in 0..n {
                    emp[(i, j)] += (x[i] - b[i]) * (x[j] - b[j]) / m as f64;
                }
            }
        }
    }
    let shown = n.min(4);
    let mut chart = langevin_plot::LineChart::new("Exact OU sample path", "t", "x");
    for i in 0..shown {
        let y: Vec<f64> = (0..path.len()).map(|k| path.state(k)[i]).collect();
        chart = chart.series(langevin_plot::Series::line(
            format!("x{}", i + 1),
            path.times.clone(),
            y,
        ));
    }
    chart.save_png(args.out.join("path.png"))?;
    let groups: Vec<(String, Vec<f64>)> = (0..shown)
        .map(|i| {
            (
                format!("x{} (second half)", i + 1),
                (half..path.len()).map(|k| path.state(k)[i]).collect(),
            )
        })
        .collect();
    langevin_plot::histograms_png(
        args.out.join("marginals.png"),
        "Marginals over the second half",
        "x",
        &groups,
        40,
    )?;

    let summary = json!({
        "command": "thermo sample",
        "dim": n,
        "grid_points": path.len(),
        "t_start": ts.first(),
        "t_end": ts.last(),
        "seed": args.seed,
        "stationary_covariance": mat_json(s.as_ref()),
        "empirical_covariance_second_half": mat_json(emp.as_ref()),
        "sample_seconds": seconds,
        "analog_time": ts.last().copied().unwrap_or(0.0) - ts.first().copied().unwrap_or(0.0),
    });
    write_json(&args.out, &summary)?;
    println!(
        "sampled {} points in dimension {n} ({seconds:.3} s); outputs in {}",
        path.len(),
        args.out.display()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// solve / inv / expm / logdet
// ---------------------------------------------------------------------------

#[derive(Args)]
pub struct LinalgArgs {
    /// Matrix A (CSV, symmetric positive definite). Default: a built-in 8x8 Wishart matrix.
    #[arg(long)]
    matrix: Option<PathBuf>,
    /// Right-hand side b for `solve` (CSV vector). Default: ones.
    #[arg(long)]
    vector: Option<PathBuf>,
    /// Analog run time in device time constants (RC).
    #[arg(long, default_value_t = 1000.0)]
    analog_time: f64,
    /// Time between readouts.
    #[arg(long, default_value_t = 0.1)]
    sampling_interval: f64,
    /// Readouts up to this time are discarded.
    #[arg(long, default_value_t = 20.0)]
    burn_in: f64,
    /// Inverse temperature of the device noise.
    #[arg(long, default_value_t = 1.0)]
    beta: f64,
    /// Batches for the batch-means error estimate.
    #[arg(long, default_value_t = 20)]
    batches: usize,
    /// Seed of the device noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Device time constant RC in seconds (hardware model).
    #[arg(long, default_value_t = 1e-6)]
    rc: f64,
    /// Output folder.
    #[arg(long, default_value = "runs/thermo-linalg")]
    out: PathBuf,
    /// No work estimate and no progress bar on stderr (warnings still go there).
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
pub struct ExpmArgs {
    #[command(flatten)]
    common: LinalgArgs,
    /// Compute e^{-A} (direct; A symmetric positive definite) instead of e^{A}.
    #[arg(long)]
    negative: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Solve,
    Inv,
    Exp,
    ExpNeg,
    Logdet,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Solve => "solve",
            Op::Inv => "inv",
            Op::Exp => "expm",
            Op::ExpNeg => "expnegm",
            Op::Logdet => "logdet",
        }
    }
}

/// One estimate flattened to a vector, with its error estimate.
struct Flat {
    value: Vec<f64>,
    error_estimate: f64,
    readouts: usize,
}

fn flat_mat(e: Estimate<Mat<f64>>) -> Flat {
    let n = e.value.nrows();
    Flat {
        value: (0..n * n).map(|k| e.value[(k / n, k % n)]).collect(),
        error_estimate: e.error_estimate,
        readouts: e.readouts,
    }
}

fn estimate(
    op: Op,
    a: MatRef<'_, f64>,
    b: &[f64],
    cfg: &ThermoConfig,
) -> Result<Flat, langevin_thermo::error::ThermoError> {
    Ok(match op {
        Op::Solve => {
            let e = linalg::solve(a, b, cfg)?;
            Flat {
                value: e.value,
                error_estimate: e.error_estimate,
                readouts: e.readouts,
            }
        }
        Op::Inv => flat_mat(linalg::inv(a, cfg)?),
        Op::Exp => flat_mat(linalg::expm(a, cfg)?),
        Op::ExpNeg => flat_mat(linalg::expnegm(a, cfg)?),
        Op::Logdet => {
            let e = linalg::logdet(a, cfg)?;
            Flat {
                value: vec![e.value],
                error_estimate: e.error_estimate,
                readouts: e.readouts,
            }
        }
    })
}

/// The digital reference answer (Cholesky / Padé), flattened like [`Flat`].
fn exact(op: Op, a: MatRef<'_, f64>, b: &[f64]) -> Vec<f64> {
    use faer_ops::*;
    let n = a.nrows();
    match op {
        Op::Solve => chol_solve(a, b),
        Op::Inv => {
            let cols: Vec<Vec<f64>> = (0..n)
                .map(|j| {
                    chol_solve(
                        a,
                        &(0..n)
                            .map(|i| if i == j { 1.0 } else { 0.0 })
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            (0..n * n).map(|k| cols[k % n][k / n]).collect()
        }
        Op::Exp | Op::ExpNeg => {
            let s = if op == Op::Exp { 1.0 } else { -1.0 };
            let e = ou::expm(Mat::from_fn(n, n, |i, j| s * a[(i, j)]).as_ref());
            (0..n * n).map(|k| e[(k / n, k % n)]).collect()
        }
        Op::Logdet => vec![chol_logdet(a)],
    }
}

mod faer_ops {
    //! Digital reference answers via faer's Cholesky (inputs were validated
    //! positive definite before they reach here).
    //! A matrix that fails the factorisation gives NaN, never a panic.
    use super::{Mat, MatRef};
    use faer::prelude::*;
    use faer::Side;

    pub fn chol_solve(a: MatRef<'_, f64>, b: &[f64]) -> Vec<f64> {
        match a.llt(Side::Lower) {
            Ok(llt) => {
                let x = llt.solve(Mat::from_fn(b.len(), 1, |i, _| b[i]));
                (0..b.len()).map(|i| x[(i, 0)]).collect()
            }
            Err(_) => vec![f64::NAN; b.len()],
        }
    }

    pub fn chol_logdet(a: MatRef<'_, f64>) -> f64 {
        match a.llt(Side::Lower) {
            Ok(llt) => 2.0 * (0..a.nrows()).map(|i| llt.L()[(i, i)].ln()).sum::<f64>(),
            Err(_) => f64::NAN,
        }
    }
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Set-up cost of one run (the transition matrix, a Van Loan exponential of a
/// 2n x 2n matrix through faer, and the noise factor) in units of n³ multiply-adds
/// of the readout loop's speed: measured in a debug build, 1.4 n³ at n = 400 (0.15 s
/// per run) and 4 n³ at n = 1000 (7 s per run); taken as 5.
const SETUP_WORK: f64 = 5.0;
/// Work above which the up-front estimate is printed (a second or more).
const ANNOUNCE_WORK: f64 = 1e9;
/// Rough speed of the device simulation in multiply-adds per second, for the up-front
/// time estimate only (measured: 6e8/s in a debug build at n = 400, 10 000 readouts;
/// a release build is faster).
const WORK_RATE: f64 = 6e8;

/// Up-front work estimate and a progress bar (in multiply-adds) for `thermo
/// solve/inv/expm/logdet`, on stderr; hidden with `--quiet`, and the bar draws only on a
/// terminal (indicatif's rule).
struct LinalgProgress {
    bar: indicatif::ProgressBar,
}

impl LinalgProgress {
    fn new(name: &str, n: usize, work: f64, quiet: bool) -> Self {
        use indicatif::{ProgressBar, ProgressStyle};
        if quiet || work < ANNOUNCE_WORK {
            return Self {
                bar: ProgressBar::hidden(),
            };
        }
        let secs = work / WORK_RATE;
        eprintln!(
            "thermo {name} (d = {n}): about {work:.1e} multiply-adds (the run and the five \
             shorter runs of the error-vs-time curve): roughly {} at {WORK_RATE:.0e} per second \
             (a debug build; a release build is faster); --quiet hides this",
            human_seconds(secs)
        );
        let bar = ProgressBar::new(work.max(1.0) as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "thermo {msg} {bar:30} {percent}%, {elapsed} elapsed, eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(name.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(500));
        Self { bar }
    }

    fn advance(&self, work: f64) {
        self.bar.inc(work.max(0.0) as u64);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn human_seconds(s: f64) -> String {
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 5400.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

fn run_linalg(args: LinalgArgs, op: Op) -> anyhow::Result<()> {
    let (a, src) = match &args.matrix {
        Some(p) => (read_square(p)?, p.display().to_string()),
        None => {
            let w = linalg::wishart(8, 16, &mut langevin_core::rng::chain_rng(2023, 0));
            let a = Mat::from_fn(8, 8, |i, j| w[(i, j)] + if i == j { 0.5 } else { 0.0 });
            (
                a,
                "built-in 8x8 Wishart matrix (dof 16) + 0.5 I".to_string(),
            )
        }
    };
    let n = a.nrows();
    if op == Op::Exp {
        // expm only needs symmetry; checked by the library.
    } else {
        linalg::check_spd("matrix", a.as_ref()).map_err(input_err(&src))?;
    }
    let b = match (&args.vector, op) {
        (Some(p), Op::Solve) => {
            let v = read_vector(p)?;
            if v.len() != n {
                crate::bail_input!(
                    "{}: vector has {} entries, matrix is {n}x{n}",
                    p.display(),
                    v.len()
                );
            }
            v
        }
        (Some(_), _) => crate::bail_input!("--vector is only used by `thermo solve`"),
        (None, _) => vec![1.0; n],
    };
    let cfg = ThermoConfig {
        analog_time: args.analog_time,
        sampling_interval: args.sampling_interval,
        burn_in: args.burn_in,
        beta: args.beta,
        batches: args.batches,
        seed: args.seed,
    };
    cfg.validate().map_err(bad_input)?;
    if !(args.rc.is_finite() && args.rc > 0.0) {
        crate::bail_input!(
            "--rc must be a finite number > 0 (seconds), got {}",
            args.rc
        );
    }
    // Work guard: every readout integrates the n-dimensional device over one
    // sampling interval (about n² multiply-adds per step, several steps).
    let readouts = args.analog_time / args.sampling_interval;
    let work = readouts * (n as f64) * (n as f64);
    if work.is_nan() || work > MAX_WORK {
        crate::bail_input!(
            "--analog-time {} / --sampling-interval {} is {readouts:.3e} readouts of a {n}x{n} \
             device (about {work:.1e} multiply-adds): more than the {MAX_WORK:.0e} this command \
             allows; raise --sampling-interval or lower --analog-time",
            args.analog_time,
            args.sampling_interval
        );
    }
    // Mixing: is every batch long enough for the error estimate to mean something?
    // (expm runs on cI - A, whose eigenvalues are >= 1: relaxation time <= 1.)
    let mixing = if op == Op::Exp {
        linalg::Mixing::from_lambda_min(1.0, &cfg)
    } else {
        linalg::Mixing::of(a.as_ref(), &cfg).map_err(input_err(&src))?
    };

    // The main run and the error-vs-time curve (T/32 ... T/2): about 1.97 T of analog
    // time, each run with an O(n³) set-up (transition matrix and noise factor).
    let curve_times: Vec<f64> = (1..=5)
        .rev()
        .map(|k| args.analog_time / 2f64.powi(k))
        .collect();
    let run_work = |t: f64| {
        (t / args.sampling_interval) * 2.0 * (n * n) as f64 + SETUP_WORK * (n as f64).powi(3)
    };
    let total_work =
        run_work(args.analog_time) + curve_times.iter().map(|&t| run_work(t)).sum::<f64>();
    let progress = LinalgProgress::new(op.name(), n, total_work, args.quiet);

    let start = std::time::Instant::now();
    let est = estimate(op, a.as_ref(), &b, &cfg).map_err(input_err(&src))?;
    let seconds = start.elapsed().as_secs_f64();
    progress.advance(run_work(args.analog_time));
    let reference = exact(op, a.as_ref(), &b);
    // A result that is not representable is no result: refuse before any
    // output (no NaN/inf files, no `null` in summary.json).
    if let Some(v) = est
        .value
        .iter()
        .chain(&reference)
        .chain(std::iter::once(&est.error_estimate))
        .find(|v| !v.is_finite())
    {
        crate::bail_input!(
            "{src}: thermo {} gives a non-finite result ({v}): the matrix is too badly scaled \
             for f64 (entries near overflow, subnormal entries, or a result such as e^A that \
             overflows); rescale it",
            op.name()
        );
    }
    let ref_norm = norm(&reference).max(f64::MIN_POSITIVE);
    let diff: Vec<f64> = est
        .value
        .iter()
        .zip(&reference)
        .map(|(x, y)| x - y)
        .collect();
    let actual_error = norm(&diff);

    // Error versus analog time: the same estimator at T/32 ... T (geometric).
    let mut times = Vec::new();
    let mut errs = Vec::new();
    let mut ests = Vec::new();
    for k in (0..=5).rev() {
        let t = args.analog_time / 2f64.powi(k);
        let c = ThermoConfig {
            analog_time: t,
            ..cfg.clone()
        };
        if c.validate().is_err()
            || (op == Op::ExpNeg || op == Op::Exp)
                && c.readouts() < (1.0 / c.sampling_interval) as usize + 2 * c.batches
        {
            continue;
        }
        let e = if k == 0 {
            Flat {
                value: est.value.clone(),
                error_estimate: est.error_estimate,
                readouts: est.readouts,
            }
        } else {
            let e = estimate(op, a.as_ref(), &b, &c);
            progress.advance(run_work(t));
            match e {
                Ok(e) => e,
                Err(_) => continue,
            }
        };
        let d: Vec<f64> = e.value.iter().zip(&reference).map(|(x, y)| x - y).collect();
        times.push(t);
        errs.push(norm(&d) / ref_norm);
        ests.push(e.error_estimate / ref_norm);
    }

    progress.finish();

    let hw = HardwareModel {
        rc: args.rc,
        ..Default::default()
    };
    let cost = hw.cost(n, cfg.analog_time, est.readouts);

    prepare_out(&args.out)?;
    let name = op.name();
    match op {
        Op::Solve => {
            write_vector(&args.out.join("solution.csv"), &est.value)?;
            write_vector(&args.out.join("exact.csv"), &reference)?;
        }
        Op::Logdet => {
            write_vector(&args.out.join("logdet.csv"), &est.value)?;
        }
        _ => {
            let m = Mat::from_fn(n, n, |i, j| est.value[i * n + j]);
            write_matrix(&args.out.join(format!("{name}.csv")), m.as_ref())?;
            let r = Mat::from_fn(n, n, |i, j| reference[i * n + j]);
            write_matrix(&args.out.join("exact.csv"), r.as_ref())?;
        }
    }
    let mut curve = String::from("analog_time,relative_error,relative_error_estimate\n");
    for i in 0..times.len() {
        curve.push_str(&format!("{},{},{}\n", times[i], errs[i], ests[i]));
    }
    fs::write(args.out.join("error_vs_time.csv"), curve)?;
    if times.len() >= 2 {
        langevin_plot::LineChart::new(
            format!("thermo {name}: relative error vs analog time (d = {n})"),
            "analog time (RC units)",
            "relative error",
        )
        .log_x(true)
        .log_y(true)
        .series(langevin_plot::Series::line_points(
            "actual error (vs digital)",
            times.clone(),
            errs.clone(),
        ))
        .series(langevin_plot::Series::line_points(
            "error estimate",
            times.clone(),
            ests.clone(),
        ))
        .save_png(args.out.join("error_vs_time.png"))?;
    }
    let mut summary = json!({
        "command": format!("thermo {name}"),
        "input": src,
        "dim": n,
        "estimate": if op == Op::Logdet { json!(est.value[0]) } else if op == Op::Solve { json!(est.value) } else {
            json!((0..n).map(|i| est.value[i * n..(i + 1) * n].to_vec()).collect::<Vec<_>>())
        },
        "error_estimate": est.error_estimate,
        "relative_error_estimate": est.error_estimate / ref_norm,
        "actual_error_vs_digital": actual_error,
        "relative_actual_error": actual_error / ref_norm,
        "error_estimate_trusted": mixing.trusted(),
        "batch_relaxation_times": mixing.batch_relaxations(),
        "analog_time": cfg.analog_time,
        "readouts": est.readouts,
        "config": cfg,
        "hardware_model": hw,
        "modelled_seconds": cost.total_seconds,
        "modelled_energy_joules": cost.energy_joules,
        "modelled_cost": cost,
        "simulation_seconds": seconds,
    });
    if mixing.relaxation_time.is_finite() {
        summary["relaxation_time"] = json!(mixing.relaxation_time);
    }
    write_json(&args.out, &summary)?;
    if !mixing.trusted() {
        let need = mixing.min_analog_time(&cfg);
        eprintln!(
            "warning: thermo {name}: the error estimate cannot be trusted: the slowest mode of \
             the matrix relaxes in {:.3e} time constants (1/smallest eigenvalue) but each of the \
             {} batches covers only {:.3e} ({:.2e} relaxation times; at least {} are needed), so \
             the batches are not independent and the estimate can be far too small; {}",
            mixing.relaxation_time,
            cfg.batches,
            mixing.batch_time,
            mixing.batch_relaxations(),
            linalg::MIN_BATCH_RELAXATIONS,
            if need.is_finite() && need / args.sampling_interval * (n * n) as f64 <= MAX_WORK {
                format!("raise --analog-time to at least {need:.3e} or use fewer --batches")
            } else {
                "no run within this command's work limit is long enough: the matrix is too \
                 ill-conditioned for this device (rescale or precondition it)"
                    .to_string()
            }
        );
    }
    println!(
        "thermo {name} (d = {n}): error estimate {:.3e} (relative {:.3e}){}, actual relative error {:.3e}; \
         modelled device time {:.3e} s, energy {:.3e} J; outputs in {}",
        est.error_estimate,
        est.error_estimate / ref_norm,
        if mixing.trusted() { "" } else { " (NOT trustworthy, see the warning)" },
        actual_error / ref_norm,
        cost.total_seconds,
        cost.energy_joules,
        args.out.display()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// SPU circuit model, analog posterior samplers (tbi) and TNGD
// ---------------------------------------------------------------------------

/// Options of `langevin thermo spu`.
#[derive(Args)]
pub struct SpuArgs {
    /// Symmetric positive definite H-matrix (headerless CSV, at most 8x8). Default: built-in random diagonally dominant 4x4 and 8x8.
    #[arg(long)]
    matrix: Option<PathBuf>,
    /// Component mismatch of the non-ideal device, uniform +-percent.
    #[arg(long, default_value_t = 1.0)]
    tolerance: f64,
    /// Capacitor bank bits of the non-ideal device (0: continuous values).
    #[arg(long, default_value_t = 8)]
    bank_bits: u32,
    /// ADC bits of the non-ideal device (0: ideal readout).
    #[arg(long, default_value_t = 12)]
    adc_bits: u32,
    /// Longest run time in seconds (ADC at 1 MS/s).
    #[arg(long, default_value_t = 0.1)]
    max_time: f64,
    /// Independent noise seeds per curve.
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Skip the classifier predictive-uncertainty demo.
    #[arg(long)]
    no_classifier: bool,
    /// Output directory.
    #[arg(long, default_value = "thermo-spu-out")]
    out: PathBuf,
}

fn run_spu(args: SpuArgs) -> anyhow::Result<()> {
    use langevin_plot::{LineChart, Series};
    use langevin_thermo::spu::{self, SpuConfig, SpuTask};
    if !(args.max_time.is_finite() && args.max_time >= 1e-4 && args.max_time <= 10.0) {
        crate::bail_input!(
            "--max-time must be in [1e-4, 10] seconds, got {}",
            args.max_time
        );
    }
    if args.seeds == 0 || args.seeds > 100 {
        crate::bail_input!("--seeds must be in 1..=100");
    }
    let problems: Vec<(String, langevin_thermo::ou::Mat<f64>)> = match &args.matrix {
        Some(p) => vec![(p.display().to_string(), read_square(p)?)],
        None => vec![
            ("dd4".into(), spu::random_dd_matrix(4, 1)),
            ("dd8".into(), spu::random_dd_matrix(8, 2)),
        ],
    };
    let nonideal = SpuConfig {
        tolerance_pct: args.tolerance,
        bank_bits: (args.bank_bits > 0).then_some(args.bank_bits),
        adc_bits: (args.adc_bits > 0).then_some(args.adc_bits),
        ..SpuConfig::default()
    };
    nonideal.validate().map_err(bad_input)?;
    prepare_out(&args.out)?;
    let mut times = Vec::new();
    let mut t = 1e-4;
    while t <= args.max_time * 1.0001 {
        times.push(t);
        t *= 10f64.sqrt();
    }
    let mut csv = String::from("problem,task,device,run_seconds,mean_rel_error,se,floor\n");
    let mut summary = Vec::new();
    for (name, a) in &problems {
        for task in [SpuTask::Sample, SpuTask::Invert] {
            let mut chart = LineChart::new(
                format!("SPU {task:?} {name}: relative Frobenius error"),
                "run time (s)",
                "relative error",
            )
            .log_x(true)
            .log_y(true);
            for (dev, cfg) in [
                ("ideal", SpuConfig::ideal()),
                ("nonideal", nonideal.clone()),
            ] {
                let c = spu::error_vs_time(&cfg, task, a, &times, 1e-4, args.seeds, dev)
                    .map_err(bad_input)?;
                for (k, t) in times.iter().enumerate() {
                    csv.push_str(&format!(
                        "{name},{task:?},{dev},{},{},{},{}\n",
                        t, c.mean_error[k], c.se_error[k], c.floor
                    ));
                }
                chart = chart.series(Series::line_points(
                    dev,
                    c.run_seconds.clone(),
                    c.mean_error.clone(),
                ));
                if c.floor > 1e-12 {
                    chart = chart.series(Series::line(
                        format!("{dev} floor"),
                        vec![times[0], *times.last().unwrap()],
                        vec![c.floor, c.floor],
                    ));
                }
                // Estimate from the longest run of seed 0 (for the JSON).
                let m = spu::program_for(&cfg, task, a).map_err(bad_input)?;
                let run = m.run(
                    args.max_time,
                    1e-4,
                    &mut langevin_core::rng::chain_rng(0, 100),
                )?;
                let est = m.estimate_inverse(&run, run.voltages.len());
                summary.push(json!({
                    "problem": name, "task": format!("{task:?}"), "device": dev,
                    "estimate": (0..est.nrows()).map(|i| (0..est.ncols()).map(|j| est[(i, j)]).collect::<Vec<_>>()).collect::<Vec<_>>(),
                    "rel_error": c.mean_error.last(), "rel_error_se": c.se_error.last(), "error_floor": c.floor,
                    "analog_seconds": run.analog_seconds, "energy_joules": run.energy_joules, "power_watts": run.power_watts,
                }));
            }
            let file = args.out.join(format!(
                "spu_{}_{}.png",
                format!("{task:?}").to_lowercase(),
                name.replace(['/', '.'], "_")
            ));
            chart.save_png(&file)?;
        }
    }
    fs::write(args.out.join("spu_error_vs_time.csv"), csv)?;
    let classifier = if args.no_classifier {
        serde_json::Value::Null
    } else {
        let r = spu::classifier_demo(&nonideal, 0.02, 0).map_err(bad_input)?;
        let mut s = String::from("x,y,label,p_spu\n");
        for (p, q) in r.test_points.iter().zip(&r.p_spu) {
            s.push_str(&format!("{},{},{},{}\n", p.0, p.1, p.2, q));
        }
        fs::write(args.out.join("spu_classifier_predictions.csv"), s)?;
        let groups: Vec<(String, Vec<(f64, f64)>)> = (0..3)
            .map(|b| {
                let lab = [
                    "confident class 0 (p<0.2)",
                    "uncertain (0.2..0.8)",
                    "confident class 1 (p>0.8)",
                ][b];
                (
                    lab.to_string(),
                    r.test_points
                        .iter()
                        .zip(&r.p_spu)
                        .filter(|(_, &q)| {
                            (if q < 0.2 {
                                0
                            } else if q > 0.8 {
                                2
                            } else {
                                1
                            }) == b
                        })
                        .map(|(p, _)| (p.0, p.1))
                        .collect(),
                )
            })
            .collect();
        langevin_plot::scatter2d_png(
            args.out.join("spu_classifier.png"),
            "SPU last-layer posterior: predictive confidence",
            &groups,
        )?;
        println!(
            "classifier: acc MAP {:.3} / SPU {:.3}; NLL MAP {:.3} / SPU {:.3} / exact Laplace {:.3}; entropy far away: SPU {:.3} vs MAP {:.3}; max |p_spu - p_exact| {:.3}",
            r.test_accuracy_map, r.test_accuracy_spu, r.test_nll_map, r.test_nll_spu, r.test_nll_exact, r.entropy_far_spu, r.entropy_far_map, r.max_abs_prob_diff
        );
        let mut v = serde_json::to_value(&r)?;
        if let Some(o) = v.as_object_mut() {
            o.remove("test_points");
            o.remove("p_spu");
        }
        v
    };
    let out = json!({ "device": serde_json::to_value(&nonideal)?, "runs": summary, "classifier": classifier });
    fs::write(
        args.out.join("summary.json"),
        serde_json::to_string_pretty(&out)?,
    )?;
    for s in &summary {
        println!(
            "{} {} {}: rel error {:.4} (floor {:.2e}), analog {:.3} s, energy {:.3e} J",
            s["problem"],
            s["task"],
            s["device"],
            s["rel_error"].as_f64().unwrap_or(f64::NAN),
            s["error_floor"].as_f64().unwrap_or(f64::NAN),
            s["analog_seconds"].as_f64().unwrap_or(f64::NAN),
            s["energy_joules"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!("wrote {}", args.out.display());
    Ok(())
}

/// Options of `langevin thermo tbi`.
#[derive(Args)]
pub struct TbiArgs {
    /// Which posterior: gaussian, logistic or both.
    #[arg(long, default_value = "both")]
    case: String,
    /// Dimensions of the Gaussian case (comma-separated).
    #[arg(long, default_value = "2,4,8,16,32,64,128,256,512,1024")]
    dims: String,
    /// Dimensions of the logistic case.
    #[arg(long, default_value = "2,4,8,16")]
    logistic_dims: String,
    /// KL threshold (nats): full KL for the Gaussian case, sum of marginal KLs for the logistic case.
    #[arg(long, default_value_t = 0.05)]
    threshold: f64,
    /// Component mismatch (uniform +-percent) of the non-ideal circuits.
    #[arg(long, default_value_t = 1.0)]
    tolerance: f64,
    /// Largest d for which the mismatched Gaussian circuit is propagated exactly.
    #[arg(long, default_value_t = 64)]
    mismatch_max_d: usize,
    /// Parallel chains of the logistic circuit.
    #[arg(long, default_value_t = 1000)]
    chains: usize,
    /// Euler-Maruyama step of the logistic circuit (units of tau).
    #[arg(long, default_value_t = 0.01)]
    step: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "thermo-tbi-out")]
    out: PathBuf,
}

fn parse_dims(s: &str) -> anyhow::Result<Vec<usize>> {
    let v: Vec<usize> = s
        .split(',')
        .map(|x| x.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad_input(format!("bad dimension list `{s}`")))?;
    if v.is_empty() || v.iter().any(|&d| d == 0 || d > 4096) {
        crate::bail_input!("dimensions must be in 1..=4096, got `{s}`");
    }
    Ok(v)
}

fn run_tbi(args: TbiArgs) -> anyhow::Result<()> {
    use langevin_plot::{LineChart, Series};
    use langevin_thermo::analog::{self, CircuitConfig, Nonlinearity};
    let (do_g, do_l) = match args.case.as_str() {
        "gaussian" => (true, false),
        "logistic" => (false, true),
        "both" => (true, true),
        other => crate::bail_input!("--case must be gaussian, logistic or both, got `{other}`"),
    };
    if !(args.threshold.is_finite() && args.threshold > 0.0) {
        crate::bail_input!("--threshold must be > 0");
    }
    if args.chains < 2 || !(args.step > 0.0 && args.step <= 0.1) {
        crate::bail_input!("need --chains >= 2 and 0 < --step <= 0.1");
    }
    let ideal = CircuitConfig::default();
    let mism = CircuitConfig {
        tolerance_pct: args.tolerance,
        ..CircuitConfig::default()
    };
    mism.validate().map_err(bad_input)?;
    // Every option is checked before the output folder is created.
    let g_dims = if do_g {
        parse_dims(&args.dims)?
    } else {
        Vec::new()
    };
    let l_dims = if do_l {
        parse_dims(&args.logistic_dims)?
    } else {
        Vec::new()
    };
    prepare_out(&args.out)?;
    let mut summary = json!({ "tau_seconds": ideal.tau(), "threshold": args.threshold, "circuit": serde_json::to_value(&mism)? });
    if do_g {
        let dims = g_dims;
        let rows =
            analog::gaussian_scaling(&dims, args.threshold, &mism, args.mismatch_max_d, args.seed)
                .map_err(bad_input)?;
        let mut csv = String::from("d,lambda_min,lambda_max,t_ideal_tau,t_mismatch_tau,kl_floor_mismatch,power_w,static_power_w,energy_j,energy_over_dlnd\n");
        println!(
            "Gaussian-Gaussian (blur family), KL threshold {} nats, tau = {:.1e} s",
            args.threshold,
            ideal.tau()
        );
        println!(
            "{:>6} {:>10} {:>12} {:>12} {:>12} {:>12}",
            "d", "t/tau", "t_mism/tau", "KL floor", "power W", "energy J"
        );
        for r in &rows {
            let dl = r.d as f64 * (r.d as f64).ln().max(1.0);
            csv.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{}\n",
                r.d,
                r.lambda_min,
                r.lambda_max,
                r.t_ideal_tau,
                r.t_mismatch_tau.map_or("".into(), |v| v.to_string()),
                r.kl_floor_mismatch.map_or("".into(), |v| v.to_string()),
                r.power_watts,
                r.static_power_watts,
                r.energy_joules,
                r.energy_joules / dl
            ));
            println!(
                "{:>6} {:>10.3} {:>12} {:>12} {:>12.3e} {:>12.3e}",
                r.d,
                r.t_ideal_tau,
                r.t_mismatch_tau.map_or("-".into(), |v| format!("{v:.2}")),
                r.kl_floor_mismatch
                    .map_or("-".into(), |v| format!("{v:.2e}")),
                r.power_watts,
                r.energy_joules
            );
        }
        fs::write(args.out.join("tbi_gaussian_scaling.csv"), csv)?;
        let d: Vec<f64> = rows.iter().map(|r| r.d as f64).collect();
        let t0 =
            rows[0].t_ideal_tau - (rows[0].d as f64).ln() / (2.0 * rows[0].lambda_min.max(1e-12));
        LineChart::new("Gaussian circuit: time to KL threshold", "d", "t / tau")
            .log_x(true)
            .series(Series::line_points(
                "ideal circuit",
                d.clone(),
                rows.iter().map(|r| r.t_ideal_tau).collect::<Vec<_>>(),
            ))
            .series(Series::line(
                "c + ln(d)/(2 lambda_min)",
                d.clone(),
                rows.iter()
                    .map(|r| t0 + (r.d as f64).ln() / (2.0 * r.lambda_min))
                    .collect::<Vec<_>>(),
            ))
            .series(Series::points(
                format!("{}% mismatch", args.tolerance),
                rows.iter()
                    .filter(|r| r.t_mismatch_tau.is_some())
                    .map(|r| r.d as f64)
                    .collect::<Vec<_>>(),
                rows.iter()
                    .filter_map(|r| r.t_mismatch_tau)
                    .collect::<Vec<_>>(),
            ))
            .save_png(args.out.join("tbi_gaussian_time.png"))?;
        let e0 = rows
            .last()
            .map_or(1.0, |r| r.energy_joules / (r.d as f64 * (r.d as f64).ln()));
        LineChart::new(
            "Gaussian circuit: energy to KL threshold",
            "d",
            "energy (J)",
        )
        .log_x(true)
        .log_y(true)
        .series(Series::line_points(
            "modelled energy",
            d.clone(),
            rows.iter().map(|r| r.energy_joules).collect::<Vec<_>>(),
        ))
        .series(Series::line(
            "c d ln d",
            d.clone(),
            d.iter()
                .map(|&x| e0 * x * x.ln().max(0.3))
                .collect::<Vec<_>>(),
        ))
        .save_png(args.out.join("tbi_gaussian_energy.png"))?;
        summary["gaussian"] = serde_json::to_value(&rows)?;
    }
    if do_l {
        let dims = l_dims;
        let nls = [
            Nonlinearity::Ideal,
            Nonlinearity::Bipolar { offset_sd: 0.05 },
            Nonlinearity::MosSquareLaw,
        ];
        let mut rows = analog::logistic_scaling(
            &dims,
            &nls[..1],
            args.threshold,
            &ideal,
            args.step,
            10.0,
            args.chains,
            args.seed,
        )
        .map_err(bad_input)?;
        rows.extend(
            analog::logistic_scaling(
                &dims,
                &nls[1..],
                args.threshold,
                &mism,
                args.step,
                10.0,
                args.chains,
                args.seed,
            )
            .map_err(bad_input)?,
        );
        let mut csv = String::from(
            "d,n,element,t_tau,kl_floor,max_mean_z,max_var_rel,power_w,energy_j,mala_acceptance\n",
        );
        println!("Bayesian logistic regression circuit (EM step {} tau, {} chains; ideal element without mismatch, others with {}% mismatch)", args.step, args.chains, args.tolerance);
        println!(
            "{:>5} {:>5} {:>28} {:>8} {:>10} {:>10} {:>10} {:>12}",
            "d", "n", "element", "t/tau", "KL floor", "max|dm|/sd", "max|dv|/v", "energy J"
        );
        for r in &rows {
            csv.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{}\n",
                r.d,
                r.n,
                r.nonlinearity.replace(',', ";"),
                r.t_tau.map_or("".into(), |v| v.to_string()),
                r.kl_floor,
                r.max_mean_z,
                r.max_var_rel,
                r.power_watts,
                r.energy_joules.map_or("".into(), |v| v.to_string()),
                r.mala_acceptance
            ));
            println!(
                "{:>5} {:>5} {:>28} {:>8} {:>10.3e} {:>10.3} {:>10.3} {:>12}",
                r.d,
                r.n,
                r.nonlinearity,
                r.t_tau.map_or("-".into(), |v| format!("{v:.2}")),
                r.kl_floor,
                r.max_mean_z,
                r.max_var_rel,
                r.energy_joules.map_or("-".into(), |v| format!("{v:.3e}"))
            );
        }
        fs::write(args.out.join("tbi_logistic_scaling.csv"), csv)?;
        let mut chart = LineChart::new(
            "Logistic circuit: time to marginal-KL threshold",
            "d",
            "t / tau",
        )
        .log_x(true);
        for nl in &nls {
            let lab = format!("{nl:?}");
            let sel: Vec<_> = rows
                .iter()
                .filter(|r| r.nonlinearity == lab && r.t_tau.is_some())
                .collect();
            if !sel.is_empty() {
                chart = chart.series(Series::line_points(
                    lab,
                    sel.iter().map(|r| r.d as f64).collect::<Vec<_>>(),
                    sel.iter().filter_map(|r| r.t_tau).collect::<Vec<_>>(),
                ));
            }
        }
        chart.save_png(args.out.join("tbi_logistic_time.png"))?;
        summary["logistic"] = serde_json::to_value(&rows)?;
    }
    fs::write(
        args.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!("wrote {}", args.out.display());
    Ok(())
}

/// Options of `langevin thermo tngd`.
#[derive(Args)]
pub struct TngdArgs {
    /// Classification CSV with header, label in the last column, or the name of a bundled classification set (digits, iris, wine, breast_cancer, iris_virginica). Default: the bundled digits (compiled in, any folder), pixels scaled by 1/16.
    #[arg(long)]
    data: Option<String>,
    /// Multiply features by this (default 1/16 for digits, 1 otherwise).
    #[arg(long)]
    scale: Option<f64>,
    #[arg(long, default_value_t = 100)]
    iters: usize,
    #[arg(long, default_value_t = 8)]
    hidden: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Analog time per step (units of tau = RC).
    #[arg(long, default_value_t = 20.0)]
    time: f64,
    /// Delay (units of tau) during which the device runs on the previous (F, g).
    #[arg(long, default_value_t = 0.0)]
    delay: f64,
    /// Noise kappa_0 of the device.
    #[arg(long, default_value_t = 0.0)]
    kappa: f64,
    /// GGN damping lambda.
    #[arg(long, default_value_t = 0.1)]
    damping: f64,
    /// Euler-Maruyama step (units of tau) instead of the exact OU transition.
    #[arg(long)]
    em_step: Option<f64>,
    /// Learning rates tried for the SGD update rule of SGD, NGD, NGD-CG and TNGD (comma-separated); each method's is chosen by validation loss.
    #[arg(long, value_delimiter = ',', default_values_t = [0.0316, 0.1, 0.316, 1.0, 3.16])]
    lr_grid: Vec<f64>,
    /// Learning rates tried for Adam (comma-separated), chosen by validation loss.
    #[arg(long, value_delimiter = ',', default_values_t = [1e-3, 3.16e-3, 1e-2, 3.16e-2, 0.1])]
    adam_lr_grid: Vec<f64>,
    /// Fraction of the training rows held out as the validation set of the learning-rate search.
    #[arg(long, default_value_t = 0.2)]
    val_fraction: f64,
    /// tau = RC in seconds (modelled analog time).
    #[arg(long, default_value_t = 1e-6)]
    tau_seconds: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "thermo-tngd-out")]
    out: PathBuf,
}

/// Largest curvature matrix `thermo tngd` builds (bytes).
const MAX_TNGD_BYTES: f64 = 4e9;

/// `--data` of `thermo tngd`: a file, else a bundled set (by default digits).
/// Returns the data set and where it came from.
fn tngd_data(
    data: Option<&str>,
    scale: Option<f64>,
) -> anyhow::Result<(langevin_thermo::tngd::Dataset, String)> {
    use langevin_thermo::tngd::Dataset;
    let name = data.unwrap_or("digits");
    let path = Path::new(name);
    if path.is_file() {
        let ds = Dataset::from_csv(path, scale.unwrap_or(1.0)).map_err(bad_input)?;
        return Ok((ds, name.to_string()));
    }
    if path.exists() {
        crate::bail_input!(
            "--data {name}: not a regular file (a CSV file with a header row, or a bundled name)"
        );
    }
    if langevin_models::bundled::find(name).is_some() {
        let default_scale = if name == "digits" { 1.0 / 16.0 } else { 1.0 };
        let ds = Dataset::bundled(name, scale.unwrap_or(default_scale))
            .map_err(|e| bad_input(format!("--data {name}: {e}")))?;
        return Ok((ds, format!("bundled:{name}")));
    }
    let names: Vec<&str> = langevin_models::bundled::BUNDLED
        .iter()
        .filter(|b| b.task != "regression")
        .map(|b| b.name)
        .collect();
    crate::bail_input!(
        "--data {name}: no such file, and no bundled data set of that name (bundled classification sets: {})",
        names.join(", ")
    )
}

fn run_tngd(args: TngdArgs) -> anyhow::Result<()> {
    use langevin_plot::{LineChart, Series};
    use langevin_thermo::tngd::{self, Integrator, Method, Optimizer, OuConfig, TrainConfig};
    let started = std::time::Instant::now();
    if let Some(s) = args.scale {
        if !(s.is_finite() && s != 0.0) {
            crate::bail_input!("--scale must be a finite non-zero number, got {s}");
        }
    }
    if args.iters == 0 {
        crate::bail_input!("--iters must be at least 1");
    }
    for (flag, grid) in [
        ("--lr-grid", &args.lr_grid),
        ("--adam-lr-grid", &args.adam_lr_grid),
    ] {
        if grid.is_empty() || grid.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            crate::bail_input!(
                "{flag} must list learning rates that are finite and > 0, got {grid:?}"
            );
        }
    }
    if !(args.val_fraction > 0.0 && args.val_fraction < 1.0) {
        crate::bail_input!(
            "--val-fraction must be in (0, 1), got {}",
            args.val_fraction
        );
    }
    let (data, source) = tngd_data(args.data.as_deref(), args.scale)?;
    // Size guard: NGD and TNGD hold the p x p curvature matrix of the p network
    // parameters (and factor it every iteration).
    let p = (data.d as f64 + 1.0) * args.hidden as f64 + (args.hidden as f64 + 1.0) * data.k as f64;
    if 8.0 * p * p > MAX_TNGD_BYTES {
        crate::bail_input!(
            "--hidden {}: the network has {p:.3e} parameters, and natural-gradient methods hold \
             a {p:.1e} x {p:.1e} curvature matrix ({:.1e} bytes, more than the {MAX_TNGD_BYTES:.0e} \
             this command allows); lower --hidden",
            args.hidden,
            8.0 * p * p
        );
    }
    let (train, test) = data.split(0.2, args.seed).map_err(bad_input)?;
    // The learning-rate search never sees the test set: it trains on `fit`
    // and scores on `val`, both carved from `train`.
    let (fit, val) = train
        .split(args.val_fraction, args.seed.wrapping_add(1))
        .map_err(bad_input)?;
    if fit.n == 0 || val.n == 0 {
        crate::bail_input!(
            "--val-fraction {}: {} training rows leave {} for fitting and {} for validation; both need at least one",
            args.val_fraction, train.n, fit.n, val.n
        );
    }
    println!(
        "data: {source}, {} rows, {} features, {} classes; train {} (of which validation {}), test {}",
        data.n, data.d, data.k, train.n, val.n, test.n
    );
    let integrator = match args.em_step {
        Some(dt) => Integrator::EulerMaruyama { dt },
        None => Integrator::Exact,
    };
    let ou = OuConfig {
        time: args.time,
        delay: args.delay,
        kappa: args.kappa,
        integrator,
    };
    let base = TrainConfig {
        hidden: args.hidden,
        batch: args.batch,
        iters: args.iters,
        eval_every: (args.iters / 20).max(1),
        damping: args.damping,
        seed: args.seed,
        tau_seconds: args.tau_seconds,
        ..TrainConfig::default()
    };
    let sgd = Optimizer::Sgd {
        lr: args.lr_grid[0],
    };
    let runs = [
        (Method::Gradient, sgd, &args.lr_grid),
        (
            Method::Gradient,
            Optimizer::adam(args.adam_lr_grid[0]),
            &args.adam_lr_grid,
        ),
        (Method::Ngd, sgd, &args.lr_grid),
        (Method::NgdCg { iters: 10 }, sgd, &args.lr_grid),
        (Method::Tngd(ou), sgd, &args.lr_grid),
    ];
    let configs = runs
        .iter()
        .map(|&(m, o, grid)| {
            let cfg = TrainConfig {
                method: m,
                optimizer: o,
                ..base.clone()
            };
            cfg.validate().map_err(bad_input)?;
            Ok((cfg, grid))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let lib_err = |e: langevin_thermo::error::ThermoError| {
        if e.is_bad_input() {
            bad_input(e)
        } else {
            anyhow::Error::new(e)
        }
    };
    let mut searches = Vec::new();
    let mut results = Vec::new();
    for (cfg, grid) in configs {
        let search = tngd::tune_lr(&fit, &val, &cfg, grid).map_err(lib_err)?;
        let tried: Vec<String> = search
            .candidates
            .iter()
            .map(|c| match c.val_loss {
                Some(l) => format!("{}: {l:.4}", c.lr),
                None => format!("{}: failed", c.lr),
            })
            .collect();
        println!(
            "{:<28} validation loss by lr [{}] -> lr {}{}",
            search.label,
            tried.join(", "),
            search.chosen,
            if search.at_edge {
                " (at the edge of the grid)"
            } else {
                ""
            }
        );
        let cfg = TrainConfig {
            optimizer: cfg.optimizer.with_lr(search.chosen),
            ..cfg
        };
        results.push(tngd::train(&train, &test, &cfg).map_err(lib_err)?);
        searches.push(search);
    }
    prepare_out(&args.out)?;
    let mut csv =
        String::from("method,iter,train_loss,test_accuracy,wall_seconds,analog_seconds\n");
    for r in &results {
        for p in &r.trace {
            csv.push_str(&format!(
                "{},{},{},{},{},{}\n",
                r.label, p.iter, p.train_loss, p.test_accuracy, p.wall_seconds, p.analog_seconds
            ));
        }
    }
    fs::write(args.out.join("tngd_trace.csv"), csv)?;
    let plot = |name: &str,
                title: &str,
                xl: &str,
                yl: &str,
                logy: bool,
                fx: &dyn Fn(&tngd::TracePoint) -> f64,
                fy: &dyn Fn(&tngd::TracePoint) -> f64|
     -> anyhow::Result<()> {
        let mut c = LineChart::new(title, xl, yl).log_y(logy);
        for r in &results {
            c = c.series(Series::line(
                r.label.clone(),
                r.trace.iter().map(fx).collect::<Vec<_>>(),
                r.trace.iter().map(fy).collect::<Vec<_>>(),
            ));
        }
        c.save_png(args.out.join(name))?;
        Ok(())
    };
    plot(
        "tngd_loss_vs_iter.png",
        "training loss",
        "iteration",
        "train loss",
        true,
        &|p| p.iter as f64,
        &|p| p.train_loss,
    )?;
    plot(
        "tngd_acc_vs_iter.png",
        "test accuracy",
        "iteration",
        "test accuracy",
        false,
        &|p| p.iter as f64,
        &|p| p.test_accuracy,
    )?;
    plot(
        "tngd_loss_vs_time.png",
        "training loss vs modelled wall time",
        "modelled wall time (s)",
        "train loss",
        true,
        &|p| p.wall_seconds,
        &|p| p.train_loss,
    )?;
    let ngd = &results[2];
    let tn = &results[4];
    // TNGD -> NGD as t grows: compared at the same learning rate (NGD's), so a
    // TNGD run at NGD's rate is added when the two searches chose differently.
    let tn_at_ngd_lr = if searches[4].chosen == searches[2].chosen {
        None
    } else {
        let cfg = TrainConfig {
            method: Method::Tngd(ou),
            optimizer: sgd.with_lr(searches[2].chosen),
            ..base.clone()
        };
        Some(tngd::train(&train, &test, &cfg).map_err(lib_err)?)
    };
    let tn_cmp = tn_at_ngd_lr.as_ref().unwrap_or(tn);
    let dist = tn_cmp
        .params
        .iter()
        .zip(&ngd.params)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt()
        / ngd.params.iter().map(|b| b * b).sum::<f64>().sqrt();
    let mlp = tngd::Mlp {
        d_in: train.d,
        hidden: args.hidden,
        k: train.k.max(test.k),
    };
    let fin: Vec<_> = results
        .iter()
        .zip(&searches)
        .map(|(r, s)| {
            let l = r.trace.last().unwrap();
            let test_loss = mlp.loss(&r.params, &test);
            println!(
                "{:<28} lr {:<7} train loss {:.4}  test loss {:.4}  test acc {:.4}  modelled wall {:.3} s (analog {:.2e} s)",
                r.label, s.chosen, l.train_loss, test_loss, l.test_accuracy, l.wall_seconds, l.analog_seconds
            );
            json!({"method": r.label, "lr": s.chosen, "lr_at_grid_edge": s.at_edge,
                   "train_loss": l.train_loss, "test_loss": test_loss, "test_accuracy": l.test_accuracy,
                   "wall_seconds": l.wall_seconds, "analog_seconds": l.analog_seconds})
        })
        .collect();
    println!(
        "TNGD final parameters vs exact NGD (both at lr {}): relative distance {dist:.3e}",
        searches[2].chosen
    );
    let seconds = started.elapsed().as_secs_f64();
    println!("{seconds:.1} s in all (learning-rate search and final runs)");
    let summary = json!({
        "data": source, "n": data.n, "n_train": train.n, "n_validation": val.n, "n_fit": fit.n,
        "n_test": test.n, "features": train.d, "classes": data.k,
        "estimate": fin, "error_estimate": {"tngd_vs_ngd_rel_param_distance": dist, "tngd_vs_ngd_lr": searches[2].chosen},
        "lr_search": {
            "selection": "each method's learning rate minimises the mean cross-entropy on the validation rows (carved from the training set) after the same number of iterations; the test set is used only for the final runs, trained on the whole training set",
            "methods": serde_json::to_value(&searches)?,
        },
        "analog_seconds": tn.trace.last().map(|l| l.analog_seconds),
        "seconds": seconds,
        "energy_note": "energy is not modelled for TNGD; analog time = iters x (t + t_d) x tau",
        "config": {"time": args.time, "delay": args.delay, "kappa": args.kappa, "damping": args.damping, "em_step": args.em_step, "lr_grid": args.lr_grid, "adam_lr_grid": args.adam_lr_grid, "val_fraction": args.val_fraction, "iters": args.iters, "hidden": args.hidden, "batch": args.batch, "tau_seconds": args.tau_seconds},
    });
    fs::write(
        args.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!("wrote {}", args.out.display());
    Ok(())
}
