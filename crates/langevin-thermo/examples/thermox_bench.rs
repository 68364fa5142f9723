//! Timing of the exact OU sampler and thermodynamic `solve`, for the comparison
//! with thermox (bench/thermox/run.sh runs this and the Python timing alternately).
//!
//! ```text
//! cargo run --release -p langevin-thermo --example thermox_bench -- INPUT_DIR REPS
//! ```
//!
//! Writes the inputs (CSV) to INPUT_DIR on first use, so that thermox reads exactly
//! the same matrices, then prints one JSON line with per-repetition timings and errors.
//!
//! * `sample`: d = 100, `A` = Wishart(100, dof 200) + 0.5 I, `D` = 2 I, `b` = 0, x0 = 0,
//!   10 000 steps of 0.1 (set-up included in each timing).
//! * `solve`: d = 50, `A` = Wishart(50, dof 100) + 0.5 I, `b` = ones, 10 000 readouts at
//!   interval 1 with no burn-in and noise `D = I` (β = 2), as thermox's defaults.

use std::fs;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use faer::{Mat, Par};
use langevin_core::rng::chain_rng;
use langevin_thermo::linalg::{self, ThermoConfig};
use langevin_thermo::ou::OuProcess;

fn write_mat(path: &Path, m: &Mat<f64>) -> anyhow::Result<()> {
    let mut s = String::new();
    for i in 0..m.nrows() {
        let row: Vec<String> = (0..m.ncols())
            .map(|j| format!("{:.17e}", m[(i, j)]))
            .collect();
        s.push_str(&row.join(","));
        s.push('\n');
    }
    fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

fn chol_solve(a: &Mat<f64>, b: &[f64]) -> Vec<f64> {
    use faer::prelude::*;
    let rhs = Mat::from_fn(b.len(), 1, |i, _| b[i]);
    let x = a.llt(faer::Side::Lower).expect("SPD").solve(&rhs);
    (0..b.len()).map(|i| x[(i, 0)]).collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Seeds of the untimed accuracy comparison of `solve`.
const ERROR_SEEDS: usize = 40;

fn main() -> anyhow::Result<()> {
    faer::set_global_parallelism(Par::Seq);
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(args.get(1).map(String::as_str).unwrap_or("runs/thermox"));
    let reps: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(5);
    fs::create_dir_all(dir)?;

    let eye = |n: usize, s: f64| Mat::from_fn(n, n, |i, j| if i == j { s } else { 0.0 });
    let a_sample = linalg::wishart(100, 200, &mut chain_rng(100, 0)) + eye(100, 0.5);
    let a_solve = linalg::wishart(50, 100, &mut chain_rng(50, 0)) + eye(50, 0.5);
    let b_solve = vec![1.0; 50];
    if !dir.join("A_sample.csv").exists() {
        write_mat(&dir.join("A_sample.csv"), &a_sample)?;
        write_mat(&dir.join("A_solve.csv"), &a_solve)?;
    }

    // Exact sampler: d = 100, 10 000 steps of 0.1.
    let ts: Vec<f64> = (0..=10_000).map(|k| k as f64 * 0.1).collect();
    let d2 = eye(100, 2.0);
    let mut sample_s = Vec::new();
    let mut checksum = 0.0;
    for rep in 0..reps + 1 {
        let t0 = Instant::now();
        let mut p = OuProcess::new(a_sample.as_ref(), &[0.0; 100], d2.as_ref())?;
        let path = p.sample(&ts, &[0.0; 100], &mut chain_rng(rep as u64, 0))?;
        let dt = t0.elapsed().as_secs_f64();
        checksum += path.states[path.states.len() - 1];
        if rep > 0 {
            sample_s.push(dt); // rep 0 is a warm-up
        }
    }

    // Thermodynamic solve: d = 50, 10 000 readouts.
    let exact = chol_solve(&a_solve, &b_solve);
    let exact_norm = exact.iter().map(|x| x * x).sum::<f64>().sqrt();
    // One solve with `seed`: (seconds, relative error of the solution).
    let solve_once = |seed: u64| -> anyhow::Result<(f64, f64)> {
        let cfg = ThermoConfig {
            analog_time: 10_000.0,
            sampling_interval: 1.0,
            burn_in: 0.0,
            beta: 2.0,
            batches: 20,
            seed,
        };
        let t0 = Instant::now();
        let est = linalg::solve(a_solve.as_ref(), &b_solve, &cfg)?;
        let dt = t0.elapsed().as_secs_f64();
        let err = est
            .value
            .iter()
            .zip(&exact)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt();
        Ok((dt, err / exact_norm))
    };
    let mut solve_s = Vec::new();
    let mut rel_errs = Vec::new();
    for rep in 0..reps + 1 {
        let (dt, err) = solve_once(rep as u64)?;
        if rep > 0 {
            solve_s.push(dt);
            rel_errs.push(err);
        }
    }
    let mean_err = rel_errs.iter().sum::<f64>() / rel_errs.len() as f64;
    // Accuracy over more seeds (untimed): the timed reps are too few to
    // compare two Monte Carlo errors. Seeds 1000.. (thermox: PRNGKey(1000 + i)).
    let err_seeds: Vec<f64> = (0..ERROR_SEEDS)
        .map(|i| Ok(solve_once(1000 + i as u64)?.1))
        .collect::<anyhow::Result<_>>()?;
    println!(
        "{}",
        serde_json::json!({
            "impl": "langevin",
            "sample_d100_T10000_s": median(&mut sample_s.clone()),
            "solve_d50_N10000_s": median(&mut solve_s.clone()),
            "sample_times": sample_s,
            "solve_times": solve_s,
            "solve_rel_errors": rel_errs,
            "solve_mean_rel_error": mean_err,
            "solve_rel_errors_seeds": err_seeds,
            "checksum": checksum,
        })
    );
    Ok(())
}
