//! Issue 19 (thermox parity) tables: error against analog time of
//! (1) the thermodynamic `expnegm` on non-symmetric matrices and
//! (2) log-determinants by the Jarzynski protocol against the time-average
//! estimator `linalg::logdet` at equal analog time.
//!
//! `cargo run --release -p langevin-thermo --example thermox_parity`
//! (markdown tables on stdout; about a minute).

use faer::{Mat, MatRef, Side};
use langevin_core::rng::chain_rng;
use langevin_thermo::linalg::{self, JarzynskiConfig, ThermoConfig};
use langevin_thermo::ou;
use rand::Rng;

fn nonsym(n: usize, seed: u64) -> Mat<f64> {
    let w = linalg::wishart(n, 3 * n, &mut chain_rng(seed, 0));
    let mut rng = chain_rng(seed, 1);
    let r = Mat::from_fn(n, n, |_, _| 2.0 * rng.random::<f64>() - 1.0);
    Mat::from_fn(n, n, |i, j| {
        w[(i, j)] + if i == j { 0.5 } else { 0.0 } + 0.8 * (r[(i, j)] - r[(j, i)])
    })
}

fn spd(n: usize, seed: u64) -> Mat<f64> {
    linalg::wishart(n, 2 * n, &mut chain_rng(seed, 0))
        + Mat::<f64>::identity(n, n) * faer::Scale(0.5)
}

fn exact_logdet(a: MatRef<'_, f64>) -> f64 {
    let llt = a.llt(Side::Lower).unwrap();
    2.0 * (0..a.nrows()).map(|i| llt.L()[(i, i)].ln()).sum::<f64>()
}

fn rms(v: &[f64]) -> f64 {
    (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt()
}

fn main() -> anyhow::Result<()> {
    let seeds: Vec<u64> = (1..=8).collect();
    println!("### expnegm of non-symmetric A (A + Aᵀ positive definite), 8 seeds\n");
    println!("| d | analog time (RC) | readouts | RMS ‖error‖_F | RMS relative error | mean error estimate |");
    println!("|---|---|---|---|---|---|");
    for n in [3usize, 6] {
        let a = nonsym(n, 100 + n as u64);
        let exact = ou::expm((-&a).as_ref());
        let norm = exact.norm_l2();
        for t in [250.0, 1000.0, 4000.0, 16000.0] {
            let mut errs = Vec::new();
            let mut ests = Vec::new();
            let mut readouts = 0;
            for &seed in &seeds {
                let cfg = ThermoConfig {
                    analog_time: t,
                    sampling_interval: 0.25,
                    burn_in: 20.0,
                    seed,
                    ..Default::default()
                };
                let e = linalg::expnegm(a.as_ref(), &cfg)?;
                errs.push((&e.value - &exact).norm_l2());
                ests.push(e.error_estimate);
                readouts = e.readouts;
            }
            let r = rms(&errs);
            println!(
                "| {n} | {t} | {readouts} | {r:.2e} | {:.2e} | {:.2e} |",
                r / norm,
                ests.iter().sum::<f64>() / ests.len() as f64
            );
        }
    }

    println!("\n### log det A: Jarzynski protocol vs time-average second moment, 8 seeds\n");
    println!("Jarzynski: switching time 4, 40 steps, equilibration 5 (9 RC per run), reference α = tr(A)/d.");
    println!("Time average: `linalg::logdet` (sampling interval 0.25, burn-in 20, 20 batches) at the same analog time.\n");
    println!("| d | analog time (RC) | Jarzynski runs | Jarzynski RMS error | Jarzynski mean se | time-average RMS error | time-average mean se |");
    println!("|---|---|---|---|---|---|---|");
    for n in [4usize, 8] {
        let a = spd(n, 200 + n as u64);
        let exact = exact_logdet(a.as_ref());
        for runs in [100usize, 400, 1600, 6400] {
            let (mut ej, mut sj, mut et, mut st) = (vec![], vec![], vec![], vec![]);
            let mut t = 0.0;
            for &seed in &seeds {
                let jc = JarzynskiConfig {
                    runs,
                    switching_time: 4.0,
                    steps: 40,
                    equilibration_time: 5.0,
                    seed,
                    ..Default::default()
                };
                let j = linalg::logdet_jarzynski(a.as_ref(), &jc)?;
                t = j.analog_time;
                ej.push(j.value - exact);
                sj.push(j.std_error);
                let tc = ThermoConfig {
                    analog_time: t,
                    sampling_interval: 0.25,
                    burn_in: 20.0,
                    seed,
                    ..Default::default()
                };
                let l = linalg::logdet(a.as_ref(), &tc)?;
                et.push(l.value - exact);
                st.push(l.std_error);
            }
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            println!(
                "| {n} | {t} | {runs} | {:.2e} | {:.2e} | {:.2e} | {:.2e} |",
                rms(&ej),
                mean(&sj),
                rms(&et),
                mean(&st)
            );
        }
    }
    Ok(())
}
