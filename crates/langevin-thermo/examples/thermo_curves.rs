//! Error versus analog time of thermodynamic `solve` and `inv` on Wishart matrices,
//! and the modelled device time next to measured digital Cholesky / CG times.
//!
//! ```text
//! cargo run --release -p langevin-thermo --example thermo_curves -- [OUT_DIR] [MAX_D]
//! ```
//!
//! For d = 16, 32, ... MAX_D (default 256; 512 takes a few minutes), `A` =
//! Wishart(d, dof 2d) + 0.5 I (condition number about 6 at every d), `b` = ones:
//! * `error_vs_time.csv/png`: relative error (vs Cholesky) and the estimator's own error
//!   estimate for analog times 100 ... 3200 (readout interval 1, burn-in 20);
//! * `crossover.csv/png`: fitting `err ≈ c / √T`, the analog time to reach 1% relative
//!   error, converted to seconds with the default [`HardwareModel`] (RC = 1 µs, DAC
//!   load of the d² entries, ADC readout), against the measured single-thread time of a
//!   faer Cholesky solve and of conjugate gradients to a 1e-6 residual.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use faer::linalg::solvers::DenseSolveCore;
use faer::prelude::*;
use faer::{Mat, Par, Side};
use langevin_core::rng::chain_rng;
use langevin_plot::{LineChart, Series};
use langevin_thermo::linalg::{self, HardwareModel, ThermoConfig};

fn rel_err(x: &[f64], y: &[f64]) -> f64 {
    let num: f64 = x.iter().zip(y).map(|(a, b)| (a - b).powi(2)).sum();
    let den: f64 = y.iter().map(|b| b * b).sum();
    (num / den).sqrt()
}

fn median_time(mut f: impl FnMut(), reps: usize) -> f64 {
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t[reps / 2]
}

fn cg(a: &Mat<f64>, b: &[f64], tol: f64) -> Vec<f64> {
    let n = b.len();
    let mut x = vec![0.0; n];
    let mut r = b.to_vec();
    let mut p = r.clone();
    let mut rr: f64 = r.iter().map(|v| v * v).sum();
    let bb = rr;
    let mut ap = vec![0.0; n];
    for _ in 0..10 * n {
        if rr <= tol * tol * bb {
            break;
        }
        ap.iter_mut().for_each(|v| *v = 0.0);
        for (j, &pj) in p.iter().enumerate() {
            for (o, c) in ap.iter_mut().zip(a.col_as_slice(j)) {
                *o += c * pj;
            }
        }
        let alpha = rr / p.iter().zip(&ap).map(|(a, b)| a * b).sum::<f64>();
        for i in 0..n {
            x[i] += alpha * p[i];
            r[i] -= alpha * ap[i];
        }
        let rr_new: f64 = r.iter().map(|v| v * v).sum();
        let beta = rr_new / rr;
        rr = rr_new;
        for i in 0..n {
            p[i] = r[i] + beta * p[i];
        }
    }
    x
}

fn main() -> anyhow::Result<()> {
    faer::set_global_parallelism(Par::Seq);
    let args: Vec<String> = std::env::args().collect();
    let out = PathBuf::from(
        args.get(1)
            .map(String::as_str)
            .unwrap_or("runs/thermo-curves"),
    );
    let max_d: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(256);
    fs::create_dir_all(&out)?;
    let times = [100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0];
    let hw = HardwareModel::default();
    let target = 0.01;

    let mut curves = String::from("d,analog_time,solve_rel_error,solve_rel_error_estimate,inv_rel_error,inv_rel_error_estimate\n");
    let mut cross = String::from(
        "d,analog_time_for_1pct,device_seconds,device_energy_j,cholesky_seconds,cg_seconds\n",
    );
    let mut err_chart = LineChart::new(
        "Thermodynamic solve: relative error vs analog time (Wishart, dof 2d)",
        "analog time (RC units)",
        "relative error",
    )
    .log_x(true)
    .log_y(true);
    let (mut ds, mut dev_s, mut chol_s, mut cg_s) = (vec![], vec![], vec![], vec![]);
    let mut d = 16;
    while d <= max_d {
        let a = linalg::wishart(d, 2 * d, &mut chain_rng(d as u64, 0))
            + Mat::from_fn(d, d, |i, j| if i == j { 0.5 } else { 0.0 });
        let b = vec![1.0; d];
        let rhs = Mat::from_fn(d, 1, |i, _| b[i]);
        let llt = a.llt(Side::Lower).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let xs = llt.solve(&rhs);
        let exact: Vec<f64> = (0..d).map(|i| xs[(i, 0)]).collect();
        let inv_exact = llt.inverse();
        let inv_flat: Vec<f64> = (0..d * d).map(|k| inv_exact[(k % d, k / d)]).collect();
        let inv_norm = inv_flat.iter().map(|v| v * v).sum::<f64>().sqrt();
        let exact_norm = exact.iter().map(|v| v * v).sum::<f64>().sqrt();
        let (mut ts, mut es, mut ests) = (vec![], vec![], vec![]);
        let mut fit_num = 0.0;
        for &t in &times {
            let cfg = ThermoConfig {
                analog_time: t,
                sampling_interval: 1.0,
                burn_in: 20.0,
                seed: 1,
                ..Default::default()
            };
            let s = linalg::solve(a.as_ref(), &b, &cfg)?;
            let e = rel_err(&s.value, &exact);
            let iv = if d <= 128 {
                let iv = linalg::inv(a.as_ref(), &cfg)?;
                let f: Vec<f64> = (0..d * d).map(|k| iv.value[(k % d, k / d)]).collect();
                (rel_err(&f, &inv_flat), iv.error_estimate / inv_norm)
            } else {
                (f64::NAN, f64::NAN)
            };
            writeln!(
                curves,
                "{d},{t},{e},{},{},{}",
                s.error_estimate / exact_norm,
                iv.0,
                iv.1
            )?;
            fit_num += e * t.sqrt();
            ts.push(t);
            es.push(e);
            ests.push(s.error_estimate / exact_norm);
        }
        err_chart = err_chart.series(Series::line_points(
            format!("d = {d}"),
            ts.clone(),
            es.clone(),
        ));
        err_chart = err_chart.series(Series::line(format!("d = {d} (estimate)"), ts, ests));
        let c = fit_num / times.len() as f64;
        let t_needed = (c / target).powi(2);
        let cost = hw.cost(d, t_needed, t_needed as usize);
        let ch = median_time(
            || {
                let l = a.llt(Side::Lower).unwrap();
                std::hint::black_box(l.solve(&rhs));
            },
            7,
        );
        let cgt = median_time(
            || {
                std::hint::black_box(cg(&a, &b, 1e-6));
            },
            7,
        );
        writeln!(
            cross,
            "{d},{t_needed},{},{},{ch},{cgt}",
            cost.total_seconds, cost.energy_joules
        )?;
        println!(
            "d = {d}: T(1%) = {t_needed:.0}, device {:.3e} s, Cholesky {ch:.3e} s, CG {cgt:.3e} s",
            cost.total_seconds
        );
        ds.push(d as f64);
        dev_s.push(cost.total_seconds);
        chol_s.push(ch);
        cg_s.push(cgt);
        d *= 2;
    }
    fs::write(out.join("error_vs_time.csv"), curves)?;
    fs::write(out.join("crossover.csv"), cross)?;
    err_chart.save_png(out.join("error_vs_time.png"))?;
    LineChart::new(
        "Time to solve A x = b (1% error for the device model)",
        "dimension d",
        "seconds",
    )
    .log_x(true)
    .log_y(true)
    .series(Series::line_points(
        "thermodynamic device (model: RC = 1 us, DAC/ADC)",
        ds.clone(),
        dev_s,
    ))
    .series(Series::line_points(
        "digital Cholesky (faer, 1 thread, measured)",
        ds.clone(),
        chol_s,
    ))
    .series(Series::line_points(
        "digital CG to 1e-6 (1 thread, measured)",
        ds,
        cg_s,
    ))
    .save_png(out.join("crossover.png"))?;
    println!("wrote {}", out.display());
    Ok(())
}
