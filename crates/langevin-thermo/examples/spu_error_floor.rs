//! SPU: error versus run time for each non-ideality on its own, on 4x4 and 8x8
//! sampling and inversion problems; shows the floors mismatch and quantisation cause.
//!
//! ```text
//! cargo run --release -p langevin-thermo --example spu_error_floor -- [OUT_DIR] [MAX_SECONDS]
//! ```
//! Writes `spu_floor.csv` and one PNG per (task, size) into OUT_DIR (default `target/spu_error_floor`).

use langevin_plot::{LineChart, Series};
use langevin_thermo::spu::{self, SpuConfig, SpuTask};
use std::io::Write;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = std::path::PathBuf::from(
        args.get(1)
            .cloned()
            .unwrap_or_else(|| "target/spu_error_floor".into()),
    );
    let tmax: f64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1.0);
    std::fs::create_dir_all(&out)?;
    let mut times = vec![];
    let mut t = 1e-4;
    while t <= tmax * 1.0001 {
        times.push(t);
        t *= 10f64.sqrt();
    }
    let ideal = SpuConfig::ideal();
    let configs = [
        ("ideal", ideal.clone()),
        (
            "mismatch 1%",
            SpuConfig {
                tolerance_pct: 1.0,
                ..ideal.clone()
            },
        ),
        (
            "mismatch 5%",
            SpuConfig {
                tolerance_pct: 5.0,
                ..ideal.clone()
            },
        ),
        (
            "bank 4 bit",
            SpuConfig {
                bank_bits: Some(4),
                ..ideal.clone()
            },
        ),
        (
            "bank 8 bit",
            SpuConfig {
                bank_bits: Some(8),
                ..ideal.clone()
            },
        ),
        (
            "ADC 6 bit",
            SpuConfig {
                adc_bits: Some(6),
                ..ideal.clone()
            },
        ),
        ("default (1%, 8-bit bank, 12-bit ADC)", SpuConfig::default()),
    ];
    let mut f = std::fs::File::create(out.join("spu_floor.csv"))?;
    writeln!(
        f,
        "n,task,device,run_seconds,mean_rel_error,se,floor,energy_j_longest"
    )?;
    for (n, seed) in [(4usize, 1u64), (8, 2)] {
        let a = spu::random_dd_matrix(n, seed);
        for task in [SpuTask::Sample, SpuTask::Invert] {
            let mut chart = LineChart::new(
                format!("SPU {task:?} {n}x{n}"),
                "run time (s)",
                "relative Frobenius error",
            )
            .log_x(true)
            .log_y(true);
            for (label, cfg) in &configs {
                let c = spu::error_vs_time(cfg, task, &a, &times, 1e-4, 4, label)?;
                for (k, t) in times.iter().enumerate() {
                    writeln!(
                        f,
                        "{n},{task:?},{label},{},{},{},{},{}",
                        t, c.mean_error[k], c.se_error[k], c.floor, c.energy_joules
                    )?;
                }
                println!(
                    "{n}x{n} {task:?} {label:<38} error at {:.0e} s: {:.4} ± {:.4}; at {:.0e} s: {:.4} ± {:.4}; floor {:.2e}; energy {:.2e} J",
                    times[0], c.mean_error[0], c.se_error[0], tmax, c.mean_error.last().unwrap(), c.se_error.last().unwrap(), c.floor, c.energy_joules
                );
                chart = chart.series(Series::line_points(
                    label.to_string(),
                    times.clone(),
                    c.mean_error.clone(),
                ));
            }
            chart.save_png(out.join(format!(
                "spu_{}_{n}x{n}.png",
                format!("{task:?}").to_lowercase()
            )))?;
        }
    }
    println!("wrote {}", out.display());
    Ok(())
}
