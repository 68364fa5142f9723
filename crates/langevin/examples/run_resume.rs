//! The library's run loop: 4 chains of SGHMC, draws streamed to
//! `samples.csv` with a checkpoint every round, a custom observer that
//! interrupts the run, and a resume that ends on the uninterrupted draws.
//!
//! Run: `cargo run --release -p langevin --example run_resume`

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use langevin::run::{run, Checkpoint, FullBatch, Observer, RunConfig, RunFiles, Thinning};
use langevin::sgmcmc::{Sghmc, SghmcConfig, SghmcState};
use langevin::{ChainRng, FnDensity, ParamLayout, Params};

/// Counts chain-steps and interrupts the run after `stop_at` of them.
struct StopAfter(AtomicU64, u64);

impl<S, C> Observer<S, C> for StopAfter {
    fn on_progress(&self, steps: u64) {
        self.0.fetch_add(steps, Relaxed);
    }
    fn interrupted(&self) -> bool {
        self.0.load(Relaxed) >= self.1
    }
}

fn main() -> anyhow::Result<()> {
    // A correlated 2-D Gaussian, log p(x) = -x'Px/2.
    let density = FnDensity::new(|x: &[f64], _: &(), g: &mut [f64]| {
        g[0] = -(2.0 * x[0] + 0.9 * x[1]);
        g[1] = -(0.9 * x[0] + x[1]);
        0.5 * (x[0] * g[0] + x[1] * g[1])
    });
    let config = SghmcConfig {
        step_size: 0.1.into(),
        friction: 1.0,
        ..Default::default()
    };
    let sghmc = Sghmc::new(density, config)?;
    let layout = ParamLayout::new([("x", vec![2])])?;
    let names = layout.scalar_names();
    let config = RunConfig {
        steps: 20_000,
        thinning: Thinning::new(2_000, 10)?,
        round: Some(1_000),
        ..Default::default()
    };
    let batches = FullBatch(());
    let init = |_: usize, _: &mut ChainRng| Ok(Params::zeros(layout.clone()));
    let dir = std::env::temp_dir().join(format!("langevin-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    // Reference: the whole run in memory.
    let start = Checkpoint::start(&sghmc, &batches, 7, 4, init)?;
    let whole = run(&sghmc, &batches, &config, start, None, &mut ())?;

    // The same run on disk, interrupted after 30 000 chain-steps ...
    let files = RunFiles::create(&dir, &names, Some(serde_json::json!({ "note": "example" })))?;
    let start = Checkpoint::start(&sghmc, &batches, 7, 4, init)?;
    let mut observers = (files, StopAfter(AtomicU64::new(0), 30_000));
    let cut = run(&sghmc, &batches, &config, start, None, &mut observers)?;
    println!("{:?} at step {}", cut.stop, cut.steps_done);

    // ... and resumed from its last checkpoint.
    let mut files = RunFiles::resume::<SghmcState, ()>(&dir, &config, &names, |_| true)?;
    let (ck, before) = (files.1, files.2);
    let done = run(&sghmc, &batches, &config, ck, Some(before), &mut files.0)?;
    for (a, b) in done.samples.chains.iter().zip(&whole.samples.chains) {
        assert_eq!(a.as_slice(), b.as_slice(), "resumed = uninterrupted");
    }
    for s in done.samples.summary()? {
        let t = &s.summary;
        println!(
            "{} mean {:+.3} sd {:.3} ess {:.0} rhat {:.3}",
            s.name, t.mean, t.sd, t.ess_bulk, t.rhat
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
