//! TNGD on the bundled 8x8 digits with a tanh MLP, against Adam, SGD, exact NGD and NGD-CG.
//!
//! ```text
//! cargo run --release -p langevin-thermo --example tngd_digits -- [DIGITS_CSV] [OUT_DIR] [ITERS] [HIDDEN]
//! ```
//! Defaults: `data/digits.csv`, `target/tngd_digits`, 300 iterations, 16 hidden units.
//! Writes `trace.csv` (method, iter, train_loss, test_accuracy, wall_seconds),
//! `loss_vs_iter.png`, `acc_vs_iter.png`, `loss_vs_time.png`, `t_sweep.png`
//! (final loss vs analog time t) and `summary.json`.

use anyhow::Context;
use langevin_plot::{LineChart, Series};
use langevin_thermo::tngd::{
    self, Dataset, Integrator, Method, Optimizer, OuConfig, TrainConfig, TrainResult,
};
use std::io::Write;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let csv = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "data/digits.csv".into());
    let out = std::path::PathBuf::from(
        args.get(2)
            .cloned()
            .unwrap_or_else(|| "target/tngd_digits".into()),
    );
    let iters: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(300);
    let hidden: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(16);
    std::fs::create_dir_all(&out)?;
    let data = Dataset::from_csv(std::path::Path::new(&csv), 1.0 / 16.0)
        .with_context(|| format!("reading {csv}"))?;
    let (train, test) = data.split(0.2, 0)?;
    let base = TrainConfig {
        hidden,
        batch: 32,
        iters,
        eval_every: 10,
        damping: 0.1,
        seed: 0,
        ..Default::default()
    };
    let lr_adam = 3e-3;
    let ou = |time: f64, kappa: f64| {
        Method::Tngd(OuConfig {
            time,
            delay: 0.0,
            kappa,
            integrator: Integrator::Exact,
        })
    };
    let lr_sgd = 0.2;
    let sgd = Optimizer::Sgd { lr: lr_sgd };
    let runs: Vec<(Method, Optimizer)> = vec![
        (Method::Gradient, Optimizer::Sgd { lr: 0.5 }),
        (Method::Gradient, Optimizer::adam(lr_adam)),
        (Method::Ngd, sgd),
        (Method::NgdCg { iters: 10 }, sgd),
        (ou(1.0, 0.0), sgd),
        (ou(5.0, 0.0), sgd),
        (ou(20.0, 0.0), sgd),
        (ou(50.0, 0.0), sgd),
        (ou(50.0, 1e-3), sgd),
        (ou(50.0, 1e-2), sgd),
        (Method::Ngd, Optimizer::adam(lr_adam)),
        (ou(50.0, 0.0), Optimizer::adam(lr_adam)),
    ];
    let mut results: Vec<TrainResult> = Vec::new();
    for (m, o) in &runs {
        let t0 = std::time::Instant::now();
        let r = tngd::train(
            &train,
            &test,
            &TrainConfig {
                method: *m,
                optimizer: *o,
                ..base.clone()
            },
        )?;
        let last = r.trace.last().unwrap();
        println!(
            "{:<28} loss {:.4} acc {:.4} modelled wall {:.3} s (analog {:.2e} s) [host {:.1} s]",
            r.label,
            last.train_loss,
            last.test_accuracy,
            last.wall_seconds,
            last.analog_seconds,
            t0.elapsed().as_secs_f64()
        );
        results.push(r);
    }
    let mut f = std::fs::File::create(out.join("trace.csv"))?;
    writeln!(
        f,
        "method,iter,train_loss,test_accuracy,wall_seconds,analog_seconds"
    )?;
    for r in &results {
        for p in &r.trace {
            writeln!(
                f,
                "{},{},{},{},{},{}",
                r.label, p.iter, p.train_loss, p.test_accuracy, p.wall_seconds, p.analog_seconds
            )?;
        }
    }
    let chart = |title: &str,
                 x: &str,
                 y: &str,
                 logy: bool,
                 fx: &dyn Fn(&tngd::TracePoint) -> f64,
                 fy: &dyn Fn(&tngd::TracePoint) -> f64| {
        let mut c = LineChart::new(title, x, y).log_y(logy);
        for r in &results {
            c = c.series(Series::line(
                r.label.clone(),
                r.trace.iter().map(fx).collect::<Vec<_>>(),
                r.trace.iter().map(fy).collect::<Vec<_>>(),
            ));
        }
        c
    };
    chart(
        "digits MLP: training loss",
        "iteration",
        "train loss",
        true,
        &|p| p.iter as f64,
        &|p| p.train_loss,
    )
    .save_png(out.join("loss_vs_iter.png"))?;
    chart(
        "digits MLP: test accuracy",
        "iteration",
        "test accuracy",
        false,
        &|p| p.iter as f64,
        &|p| p.test_accuracy,
    )
    .save_png(out.join("acc_vs_iter.png"))?;
    chart(
        "digits MLP: training loss vs modelled wall time",
        "modelled wall time (s)",
        "train loss",
        true,
        &|p| p.wall_seconds,
        &|p| p.train_loss,
    )
    .save_png(out.join("loss_vs_time.png"))?;
    // t sweep: final loss vs t, against NGD's.
    let ngd_loss = results[2].trace.last().unwrap().train_loss;
    let ts = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0];
    let mut sweep = Vec::new();
    for &t in &ts {
        let r = tngd::train(
            &train,
            &test,
            &TrainConfig {
                method: ou(t, 0.0),
                optimizer: sgd,
                ..base.clone()
            },
        )?;
        let diff = r
            .params
            .iter()
            .zip(&results[2].params)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt()
            / results[2].params.iter().map(|b| b * b).sum::<f64>().sqrt();
        sweep.push((t, r.trace.last().unwrap().train_loss, diff));
        println!(
            "t = {t:>5}: final loss {:.4} (NGD {ngd_loss:.4}), ‖θ - θ_NGD‖/‖θ_NGD‖ = {diff:.3e}",
            r.trace.last().unwrap().train_loss
        );
    }
    LineChart::new(
        "TNGD -> NGD as the analog time grows",
        "t (units of tau)",
        "relative distance of final params to NGD's",
    )
    .log_x(true)
    .log_y(true)
    .series(Series::line_points(
        "TNGD vs NGD",
        sweep.iter().map(|s| s.0).collect::<Vec<_>>(),
        sweep.iter().map(|s| s.2.max(1e-16)).collect::<Vec<_>>(),
    ))
    .save_png(out.join("t_sweep.png"))?;
    let summary = serde_json::json!({
        "n_train": train.n, "n_test": test.n, "hidden": hidden, "iters": iters,
        "final": results.iter().map(|r| { let l = r.trace.last().unwrap(); serde_json::json!({"method": r.label, "train_loss": l.train_loss, "test_accuracy": l.test_accuracy, "wall_seconds": l.wall_seconds, "analog_seconds": l.analog_seconds}) }).collect::<Vec<_>>(),
        "t_sweep": sweep.iter().map(|s| serde_json::json!({"t": s.0, "final_loss": s.1, "rel_param_distance_to_ngd": s.2})).collect::<Vec<_>>(),
    });
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!("wrote {}", out.display());
    Ok(())
}
