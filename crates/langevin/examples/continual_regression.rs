//! Continual regression: SGD forgets, sequential VI does not.
//!
//! Target `y = sin(x) + 0.5 sin(3x) + noise` on `x ∈ [0, 2π)`, seen in 5
//! episodes of 20 points, episode k covering `[2πk/5, 2π(k+1)/5)`. The model
//! is linear in 13 Fourier features `φ(x) = [1, sin(jx/2), cos(jx/2)]ⱼ₌₁..₆`,
//! a global basis: fitting one episode moves the curve everywhere.
//!
//! * SGD (momentum 0.9) fits each episode's squared error in turn, starting
//!   from the previous weights.
//! * Sequential VI (dense Gaussian, stick the landing) uses the previous
//!   episode's q as the prior of the next, `log p_k(θ) =
//!   Σᵢ log N(yᵢ | φᵢθ, σ²) + log q_{k−1}(θ)`, with q₀ = N(0, I) and T = 1. The family is exact for
//!   this linear-Gaussian model, so nothing is forgotten.
//!
//! Run: `cargo run --release --example continual_regression`; writes
//! `target/examples-out/continual_regression.png`.

use std::f64::consts::PI;
use std::sync::Arc;

use langevin::optim::{Objective, Optim, OptimConfig, Optimizer};
use langevin::vi::{DenseVi, DenseViConfig};
use langevin::{chain_rng, FnDensity, Params, Transform};
use langevin_plot::{LineChart, Series};
use rand::Rng;

const NF: usize = 13;
const NOISE_SD: f64 = 0.1;

fn phi(x: f64) -> [f64; NF] {
    let mut f = [0.0; NF];
    f[0] = 1.0;
    for j in 1..=6 {
        f[2 * j - 1] = (j as f64 * x / 2.0).sin();
        f[2 * j] = (j as f64 * x / 2.0).cos();
    }
    f
}

fn truth(x: f64) -> f64 {
    x.sin() + 0.5 * (3.0 * x).sin()
}

fn predict(theta: &[f64], x: f64) -> f64 {
    phi(x).iter().zip(theta).map(|(a, b)| a * b).sum()
}

/// A Gaussian prior `N(m, L Lᵀ)` as a log density and gradient.
#[derive(Clone)]
struct Prior {
    mean: Vec<f64>,
    chol: Vec<f64>,
}

impl Prior {
    /// `−½ |L⁻¹(θ − m)|²` and its gradient `−L⁻ᵀ L⁻¹ (θ − m)` (added to `g`).
    fn add(&self, t: &[f64], g: &mut [f64]) -> f64 {
        let n = self.mean.len();
        let l = &self.chol;
        let mut z: Vec<f64> = t.iter().zip(&self.mean).map(|(a, b)| a - b).collect();
        for i in 0..n {
            let s: f64 = (0..i).map(|j| l[i * n + j] * z[j]).sum();
            z[i] = (z[i] - s) / l[i * n + i];
        }
        let lp = -0.5 * z.iter().map(|v| v * v).sum::<f64>();
        for i in (0..n).rev() {
            let s: f64 = (i + 1..n).map(|j| l[j * n + i] * z[j]).sum();
            z[i] = (z[i] - s) / l[i * n + i];
        }
        for (gi, zi) in g.iter_mut().zip(&z) {
            *gi -= zi;
        }
        lp
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = chain_rng(11, 0);
    let episodes: Vec<Vec<(f64, f64)>> = (0..5)
        .map(|k| {
            (0..20)
                .map(|_| {
                    let x = 2.0 * PI * (k as f64 + rng.random::<f64>()) / 5.0;
                    let e: f64 = langevin::core::rng::standard_normal(&mut rng);
                    (x, truth(x) + NOISE_SD * e)
                })
                .collect()
        })
        .collect();

    // --- SGD on each episode in turn ---------------------------------------
    let mse = FnDensity::new(|t: &[f64], b: &Vec<(f64, f64)>, g: &mut [f64]| {
        g.fill(0.0);
        let mut loss = 0.0;
        for &(x, y) in b {
            let f = phi(x);
            let r = predict(t, x) - y;
            loss += r * r / b.len() as f64;
            for (gj, fj) in g.iter_mut().zip(&f) {
                *gj += 2.0 * r * fj / b.len() as f64;
            }
        }
        loss
    });
    let sgd = Optim::new(
        &mse,
        OptimConfig {
            optimizer: Optimizer::sgd_momentum(0.01, 0.9, false),
            objective: Objective::MinimiseLoss,
        },
    )?;
    let mut s = sgd.init(Params::from_vec(vec![0.0; NF]), &mut rng)?;
    let mut sgd_after = Vec::new();
    for ep in &episodes {
        for _ in 0..3000 {
            sgd.step(&mut s, ep, &mut rng)?;
        }
        sgd_after.push(s.params.values().to_vec());
    }

    // --- Sequential dense VI ---------------------------------------------------
    let mut prior = Prior {
        mean: vec![0.0; NF],
        chol: (0..NF * NF)
            .map(|i| if i % (NF + 1) == 0 { 1.0 } else { 0.0 })
            .collect(),
    };
    let mut vi_after = Vec::new();
    let mut vi_state = None;
    for (k, ep) in episodes.iter().enumerate() {
        let pr = Arc::new(prior.clone());
        let data = ep.clone();
        let log_post = FnDensity::new(move |t: &[f64], _: &(), g: &mut [f64]| {
            g.fill(0.0);
            let mut lp = pr.add(t, g);
            for &(x, y) in &data {
                let r = y - predict(t, x);
                lp -= 0.5 * r * r / (NOISE_SD * NOISE_SD);
                for (gj, fj) in g.iter_mut().zip(&phi(x)) {
                    *gj += r * fj / (NOISE_SD * NOISE_SD);
                }
            }
            lp
        });
        let vi = DenseVi::new(
            log_post,
            DenseViConfig {
                optimizer: Optimizer::adam(langevin::Schedule::from_fn(|t| {
                    if t < 6000 {
                        1e-2
                    } else {
                        1e-3
                    }
                })),
                n_samples: 4,
                ..DenseViConfig::default()
            },
        )?;
        let mut st = vi.init_with(Params::from_vec(prior.mean.clone()), prior.chol.clone())?;
        for _ in 0..8000 {
            vi.step(&mut st, &(), &mut rng)?;
        }
        println!("episode {k}: VI NELBO {:.2}", st.nelbo);
        prior = Prior {
            mean: st.params.values().to_vec(),
            chol: st.chol.clone(),
        };
        vi_after.push(st.params.values().to_vec());
        vi_state = Some(st);
    }

    // --- Evaluation: RMSE on every episode after the last one -----------------
    let rmse = |theta: &[f64], ep: &[(f64, f64)]| {
        (ep.iter()
            .map(|&(x, y)| (predict(theta, x) - y).powi(2))
            .sum::<f64>()
            / ep.len() as f64)
            .sqrt()
    };
    println!("RMSE per episode after training on all five (noise sd {NOISE_SD}):");
    println!("episode   SGD      sequential VI");
    let (mut s_tot, mut v_tot) = (0.0, 0.0);
    for (k, ep) in episodes.iter().enumerate() {
        let (a, b) = (rmse(&sgd_after[4], ep), rmse(&vi_after[4], ep));
        s_tot += a / 5.0;
        v_tot += b / 5.0;
        println!("{k}         {a:.3}    {b:.3}");
    }
    println!("mean      {s_tot:.3}    {v_tot:.3}");

    let xs: Vec<f64> = (0..400).map(|i| 2.0 * PI * i as f64 / 399.0).collect();
    let st = vi_state.expect("five episodes");
    let draws = st.sample(200, &mut rng);
    let band = |q: f64| -> Vec<f64> {
        xs.iter()
            .map(|&x| {
                let mut v: Vec<f64> = draws.iter().map(|p| predict(p.values(), x)).collect();
                v.sort_by(|a, b| a.total_cmp(b));
                v[((v.len() - 1) as f64 * q) as usize]
            })
            .collect()
    };
    let all: Vec<(f64, f64)> = episodes.concat();
    let chart = LineChart::new(
        "Continual regression after 5 episodes: SGD forgets, sequential VI does not",
        "x",
        "y",
    )
    .series(Series::points(
        "data (all episodes)",
        all.iter().map(|p| p.0).collect::<Vec<_>>(),
        all.iter().map(|p| p.1).collect::<Vec<_>>(),
    ))
    .series(Series::line(
        "truth",
        xs.clone(),
        xs.iter().map(|&x| truth(x)).collect::<Vec<_>>(),
    ))
    .series(Series::line(
        "SGD (sequential)",
        xs.clone(),
        xs.iter()
            .map(|&x| predict(&sgd_after[4], x))
            .collect::<Vec<_>>(),
    ))
    .series(Series::line(
        "sequential VI mean",
        xs.clone(),
        xs.iter()
            .map(|&x| predict(&vi_after[4], x))
            .collect::<Vec<_>>(),
    ))
    .series(Series::line("VI 5%", xs.clone(), band(0.05)))
    .series(Series::line("VI 95%", xs.clone(), band(0.95)));
    let out = std::path::Path::new("target/examples-out");
    std::fs::create_dir_all(out)?;
    let path = out.join("continual_regression.png");
    chart.save_png(&path)?;
    println!("wrote {}", path.display());
    Ok(())
}
