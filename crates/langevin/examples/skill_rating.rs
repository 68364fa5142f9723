//! Online skill rating with the diagonal EKF on a simulated league.
//!
//! 12 teams with latent skills `sₜ` that drift as a random walk
//! (`sₜ = sₜ₋₁ + N(0, 0.03²)`). Each round pairs the teams at random (6
//! matches). A match between home h and away a with `d = s_h − s_a` ends
//!
//! ```text
//! home win  with p = σ(d − m)
//! away win  with p = σ(−d − m)
//! draw      otherwise                (draw margin m = 0.5)
//! ```
//!
//! The diagonal EKF (`ekf::DiagEkf`) tracks the skills from the per-match log
//! likelihoods: transition sd 0.03 (the true drift), initial sd 1, and step
//! size 6 (the update averages over the batch, so ε = matches per round
//! absorbs each match with unit weight).
//!
//! Run: `cargo run --release --example skill_rating`; writes
//! `target/examples-out/skill_rating.png` and prints the tracking error.

use langevin::curvature::FnPerExample;
use langevin::ekf::{DiagEkf, EkfConfig};
use langevin::{chain_rng, Params, Transform};
use langevin_plot::{LineChart, Series};
use rand::seq::SliceRandom;
use rand::Rng;

const TEAMS: usize = 12;
const ROUNDS: usize = 400;
const DRIFT: f64 = 0.03;
const MARGIN: f64 = 0.5;

fn sigmoid(u: f64) -> f64 {
    1.0 / (1.0 + (-u).exp())
}

/// (home, away, outcome: 1 home win, 0 draw, −1 away win)
type Match = (usize, usize, i8);

/// log p(outcome | d) and its derivative in d.
fn loglik(d: f64, outcome: i8) -> (f64, f64) {
    let ph = sigmoid(d - MARGIN);
    let pa = sigmoid(-d - MARGIN);
    match outcome {
        1 => (ph.ln(), 1.0 - ph),
        -1 => (pa.ln(), -(1.0 - pa)),
        _ => {
            let pd = 1.0 - ph - pa;
            (pd.ln(), -(ph * (1.0 - ph) - pa * (1.0 - pa)) / pd)
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = chain_rng(2024, 0);
    let mut skills: Vec<f64> = (0..TEAMS)
        .map(|_| langevin::core::rng::standard_normal(&mut rng))
        .collect();
    let model = FnPerExample::new(|t: &[f64], b: &Vec<Match>| {
        let mut vals = Vec::with_capacity(b.len());
        let mut grads = vec![0.0; b.len() * t.len()];
        for (i, &(h, a, o)) in b.iter().enumerate() {
            let (v, dv) = loglik(t[h] - t[a], o);
            vals.push(v);
            grads[i * t.len() + h] = dv;
            grads[i * t.len() + a] = -dv;
        }
        (vals, grads)
    });
    let ekf = DiagEkf::new(
        model,
        EkfConfig {
            step_size: (TEAMS as f64 / 2.0).into(),
            transition_sd: DRIFT,
            init_sd: 1.0,
        },
    )?;
    let mut state = ekf.init(Params::from_vec(vec![0.0; TEAMS]), &mut rng)?;
    let mut true_hist = vec![Vec::new(); TEAMS];
    let mut est_hist = vec![Vec::new(); TEAMS];
    let mut sd_hist = vec![Vec::new(); TEAMS];
    let mut rmse_hist = Vec::new();
    let mut order: Vec<usize> = (0..TEAMS).collect();
    let mut covered = 0usize;
    let mut counted = 0usize;
    for round in 0..ROUNDS {
        for s in skills.iter_mut() {
            *s += DRIFT * langevin::core::rng::standard_normal(&mut rng);
        }
        order.shuffle(&mut rng);
        let batch: Vec<Match> = order
            .chunks(2)
            .map(|p| {
                let d = skills[p[0]] - skills[p[1]];
                let u: f64 = rng.random();
                let o = if u < sigmoid(d - MARGIN) {
                    1
                } else if u < sigmoid(d - MARGIN) + sigmoid(-d - MARGIN) {
                    -1
                } else {
                    0
                };
                (p[0], p[1], o)
            })
            .collect();
        ekf.step(&mut state, &batch, &mut rng)?;
        // Skills are identified up to a common shift: compare centred values.
        let est = state.params.values();
        let mt = skills.iter().sum::<f64>() / TEAMS as f64;
        let me = est.iter().sum::<f64>() / TEAMS as f64;
        let mut se = 0.0;
        for j in 0..TEAMS {
            let (t, e) = (skills[j] - mt, est[j] - me);
            se += (t - e).powi(2);
            true_hist[j].push(t);
            est_hist[j].push(e);
            sd_hist[j].push(state.sd_diag[j]);
            if round >= ROUNDS / 4 {
                counted += 1;
                if (t - e).abs() < 2.0 * state.sd_diag[j] {
                    covered += 1;
                }
            }
        }
        rmse_hist.push((se / TEAMS as f64).sqrt());
    }
    let spread = {
        let m = skills.iter().sum::<f64>() / TEAMS as f64;
        (skills.iter().map(|s| (s - m).powi(2)).sum::<f64>() / TEAMS as f64).sqrt()
    };
    let late: f64 = rmse_hist[ROUNDS / 4..].iter().sum::<f64>() / (ROUNDS - ROUNDS / 4) as f64;
    println!(
        "true skill spread (sd) {spread:.3}; tracking RMSE: round 1 {:.3}, mean over rounds {}..{ROUNDS} {late:.3}",
        rmse_hist[0],
        ROUNDS / 4
    );
    println!(
        "fraction of |true − estimate| within 2 posterior sd (rounds {}..): {:.3}",
        ROUNDS / 4,
        covered as f64 / counted as f64
    );

    let xs: Vec<f64> = (1..=ROUNDS).map(|r| r as f64).collect();
    let mut chart = LineChart::new(
        "Online skill rating (diagonal EKF): true (line) vs filtered (points), 4 teams",
        "round",
        "centred skill",
    );
    for j in 0..4 {
        chart = chart
            .series(Series::line(
                format!("team {j} true"),
                xs.clone(),
                true_hist[j].clone(),
            ))
            .series(Series::points(
                format!("team {j} EKF"),
                xs.clone(),
                est_hist[j].clone(),
            ));
    }
    let out = std::path::Path::new("target/examples-out");
    std::fs::create_dir_all(out)?;
    let path = out.join("skill_rating.png");
    chart.save_png(&path)?;
    let err_path = out.join("skill_rating_rmse.png");
    LineChart::new("Skill tracking error", "round", "RMSE (centred skills)")
        .series(Series::line("EKF", xs.clone(), rmse_hist.clone()))
        .save_png(&err_path)?;
    println!("wrote {} and {}", path.display(), err_path.display());
    Ok(())
}
