//! Peak memory and time of one GGN-vector product `Σᵢ Jᵢᵀ Hᵢ (Jᵢ v)` of a
//! candle classifier with about 10⁶ parameters, by three paths:
//!
//! * `jacobian`: `curvature::ggnvp_via_jacobian` (the `n k × d` Jacobian, f64);
//! * `double-vjp`: `curvature::ggnvp` with double backward enabled
//!   (`J v = ∂/∂u [(Jᵀu) · v]`, then `Jᵀ(H J v)`: three backward passes);
//! * `rowwise`: `curvature::ggnvp` without double backward (one backward pass
//!   per output row for `J v`, each dotted with `v` and dropped).
//!
//! ```text
//! cargo run --release -p langevin --example ggnvp_memory -- MODE [n] [reps]
//! ```
//!
//! One mode per process, because the peak resident set (`VmHWM` of
//! `/proc/self/status`) is per process. Model: MLP 1000 → 1000 (tanh) → 10,
//! categorical likelihood, f32, d = 1 011 010; batch of `n` rows (default 32).
//! Prints the resident set before the product, the peak after, the median
//! time over `reps` products (default 3) and `‖G v‖` to compare the modes.

use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use langevin::curvature::{ggnvp, ggnvp_via_jacobian, CandleOutputModel, OutputLikelihood};
use langevin_core::candle_density::{double_backward_available, enable_double_backward};
use langevin_core::{ParamLayout, Params};
use rand::Rng;

fn status_kib(key: &str) -> Result<u64> {
    let s = std::fs::read_to_string("/proc/self/status")?;
    for line in s.lines() {
        if let Some(rest) = line.strip_prefix(key) {
            let kib = rest
                .trim_start_matches(':')
                .trim()
                .trim_end_matches("kB")
                .trim();
            return Ok(kib.parse()?);
        }
    }
    bail!("{key} not in /proc/self/status")
}

fn mlp(ts: &[Tensor], x: &Tensor) -> candle_core::Result<Tensor> {
    let h = x.matmul(&ts[0])?.broadcast_add(&ts[1])?.tanh()?;
    h.matmul(&ts[2])?.broadcast_add(&ts[3])
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("double-vjp");
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(32);
    let reps: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(3);
    match mode {
        "double-vjp" => anyhow::ensure!(enable_double_backward(), "no double backward"),
        "jacobian" | "rowwise" => {
            std::env::remove_var(langevin_core::candle_density::DOUBLE_BACKWARD_ENV);
            anyhow::ensure!(!double_backward_available());
        }
        other => bail!("unknown mode `{other}`: jacobian | double-vjp | rowwise"),
    }
    let (din, hidden, k) = (1000, 1000, 10);
    let layout = ParamLayout::new([
        ("w1", vec![din, hidden]),
        ("b1", vec![hidden]),
        ("w2", vec![hidden, k]),
        ("b2", vec![k]),
    ])?;
    let d = layout.len();
    let mut rng = langevin_core::chain_rng(5, 0);
    let scale = 1.0 / (din as f64).sqrt();
    let theta = Params::new(
        layout,
        (0..d)
            .map(|_| (rng.random::<f64>() - 0.5) * 2.0 * scale)
            .collect(),
    )?;
    let v: Vec<f64> = (0..d).map(|_| rng.random::<f64>() - 0.5).collect();
    let xs: Vec<f32> = (0..n * din).map(|_| rng.random::<f32>() - 0.5).collect();
    let x = Tensor::from_vec(xs, (n, din), &Device::Cpu)?;
    let model = CandleOutputModel::new(OutputLikelihood::Categorical, mlp).with_dtype(DType::F32);

    let rss_before = status_kib("VmRSS")?;
    let mut times = Vec::new();
    let mut gv = Vec::new();
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        gv = match mode {
            "jacobian" => ggnvp_via_jacobian(&model, &theta, &x, &v)?,
            _ => ggnvp(&model, &theta, &x, &v)?,
        };
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let peak = status_kib("VmHWM")?;
    let norm = gv.iter().map(|g| g * g).sum::<f64>().sqrt();
    println!(
        "mode {mode}: d = {d}, n = {n}, k = {k}; RSS before {:.0} MiB, peak {:.0} MiB \
         (+{:.0} MiB); {:.3} s per product (median of {}); |Gv| = {norm:.6e}",
        rss_before as f64 / 1024.0,
        peak as f64 / 1024.0,
        (peak.saturating_sub(rss_before)) as f64 / 1024.0,
        times[times.len() / 2],
        times.len()
    );
    Ok(())
}
