//! The README's library example: Bayesian linear regression by SGHMC with a
//! hand-written log posterior, 4 parallel chains, and a posterior summary.
//!
//! Run: `cargo run --release -p langevin --example quickstart`

use langevin::ensemble::run_chains;
use langevin::samples::Thinning;
use langevin::sgmcmc::{Sghmc, SghmcConfig};
use langevin::{FnDensity, ParamLayout, Params};
use rand::Rng;

fn main() -> anyhow::Result<()> {
    // Data: y = 2 x - 1 + noise(sd 0.5), N = 200 points.
    let mut rng = langevin::chain_rng(0, 0);
    let n = 200;
    let xs: Vec<f64> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
    let ys: Vec<f64> = xs
        .iter()
        .map(|x| 2.0 * x - 1.0 + 0.5 * langevin::core::rng::standard_normal(&mut rng))
        .collect();

    // Batch-averaged log posterior: mean log-likelihood + log prior / N,
    // so that temperature T = 1/N targets the posterior.
    let log_posterior = FnDensity::new(move |theta: &[f64], _batch: &(), grad: &mut [f64]| {
        let (w, b) = (theta[0], theta[1]);
        let (mut lp, mut gw, mut gb) = (0.0, 0.0, 0.0);
        for (x, y) in xs.iter().zip(&ys) {
            let r = y - (w * x + b);
            lp += -0.5 * r * r / 0.25;
            gw += r * x / 0.25;
            gb += r / 0.25;
        }
        let nf = n as f64;
        // N(0, 10^2) prior on both parameters.
        lp = lp / nf - 0.5 * (w * w + b * b) / 100.0 / nf;
        grad[0] = gw / nf - w / 100.0 / nf;
        grad[1] = gb / nf - b / 100.0 / nf;
        lp
    });

    let sghmc = Sghmc::new(
        log_posterior,
        SghmcConfig {
            step_size: 0.05.into(),
            temperature: (1.0 / n as f64).into(),
            friction: 1.0,
            ..Default::default()
        },
    )?;
    let layout = ParamLayout::new([("w", vec![]), ("b", vec![])])?;
    let inits = vec![Params::zeros(layout); 4];
    let out = run_chains(
        &sghmc,
        inits,
        42,
        20_000,
        Thinning::new(2_000, 5)?,
        |_, _| (),
    )?;

    println!(
        "{:>6} {:>8} {:>8} {:>9} {:>9} {:>7}",
        "param", "mean", "sd", "ess_bulk", "ess_tail", "rhat"
    );
    for s in out.samples.summary()? {
        let t = &s.summary;
        println!(
            "{:>6} {:>8.4} {:>8.4} {:>9.0} {:>9.0} {:>7.4}",
            s.name, t.mean, t.sd, t.ess_bulk, t.ess_tail, t.rhat
        );
    }
    Ok(())
}
