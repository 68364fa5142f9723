//! TNGD on a user-defined candle model: a tanh MLP built from `candle_nn::Linear`
//! layers on the bundled 8x8 digits, wrapped as a `langevin_core::CandleDensity`
//! (gradients) and a `langevin::curvature::CandleOutputModel` (Jacobian-free
//! GGN-vector products by `langevin::curvature::ggnvp`), trained with
//! `langevin_thermo::tngd::Tngd` against Adam (the library's `langevin::optim`)
//! at each rate of the CLI's grid (1e-3 ... 0.1; every rate is shown, so the best
//! Adam is picked on the training loss itself, which favours Adam), over the
//! same minibatches from the same start.
//!
//! ```text
//! cargo run --release -p langevin-thermo --example tngd_candle -- [STEPS] [HIDDEN]
//! ```
//! Defaults: 60 steps, 16 hidden units (1 210 parameters), minibatches of 64,
//! learning rate 0.5, damping 0.1, 10 τ of analog time per step (simulated by
//! Euler-Maruyama). Prints the training loss every 10 steps, then the final
//! training loss and test accuracy of each method.
//!
//! Measured (dev profile, dependencies at opt-level 3, shared 2-core machine):
//! TNGD train loss 0.167, test accuracy 0.975 (2 118 candle GGN-vector
//! products, 1.7 s); Adam's best rate (0.03) 0.215, 0.950; Adam at 1e-3 1.93,
//! 0.579.

#[path = "../tests/support/candle_mlp.rs"]
mod candle_mlp;

use candle_mlp::{accuracy, density, loss, train_adam, train_tngd, CandleBatch, Net, TngdRun};
use langevin_thermo::tngd::Dataset;
use rand::seq::SliceRandom;

fn main() -> anyhow::Result<()> {
    // Before any backward pass: `J v` by double backward (else one backward
    // pass per output row).
    let double_backward = langevin_core::candle_density::enable_double_backward();
    let args: Vec<String> = std::env::args().collect();
    let steps: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(60);
    let hidden: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(16);
    let data = Dataset::bundled("digits", 1.0 / 16.0)?;
    let (train, test) = data.split(0.2, 0)?;
    let net = Net {
        d: train.d,
        hidden,
        k: train.k,
    };
    let mut order: Vec<usize> = (0..train.n).collect();
    order.shuffle(&mut langevin_core::chain_rng(0, 7));
    let cfg = TngdRun {
        steps,
        batch: 64,
        lr: 0.5,
        damping: 0.1,
        time: 10.0,
        prior_sd: 1.0,
        seed: 0,
    };
    let all: Vec<usize> = (0..train.n).collect();
    let full = CandleBatch::new(&train, &all)?;
    let test_b = CandleBatch::new(&test, &(0..test.n).collect::<Vec<_>>())?;
    let dens = density(cfg.prior_sd, train.n);
    println!(
        "digits: {} training rows, {} test rows; candle MLP {}-{}-{} ({} parameters); double backward: {double_backward}",
        train.n,
        test.n,
        net.d,
        hidden,
        net.k,
        net.layout().len()
    );
    let t0 = std::time::Instant::now();
    let tngd = train_tngd(&train, net, &order, cfg)?;
    let secs_t = t0.elapsed().as_secs_f64();
    let mut runs = vec![(
        "tngd (lr 0.5)".to_string(),
        tngd.losses.clone(),
        tngd.theta.clone(),
        secs_t,
    )];
    for lr in [1e-3, 3e-3, 1e-2, 3e-2, 0.1] {
        let t0 = std::time::Instant::now();
        let a = train_adam(&train, net, &order, cfg, lr)?;
        runs.push((
            format!("adam (lr {lr})"),
            a.losses,
            a.theta,
            t0.elapsed().as_secs_f64(),
        ));
    }
    println!("minibatch loss every 10 steps:");
    for (name, losses, _, _) in &runs {
        let pts: Vec<String> = losses
            .iter()
            .step_by(10)
            .map(|l| format!("{l:.3}"))
            .collect();
        println!("  {name:<16} {}", pts.join(" "));
    }
    println!("final (every training row / the test rows):");
    for (name, _, theta, secs) in &runs {
        println!(
            "  {name:<16} train loss {:.4}, test accuracy {:.4}, {secs:.2} s",
            loss(&dens, theta, &full),
            accuracy(theta, &test_b)
        );
    }
    println!(
        "TNGD: {} GGN-vector products (candle), analog time {:.3e} s (tau = 1 us)",
        tngd.products, tngd.analog_seconds
    );
    Ok(())
}
