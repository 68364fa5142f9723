//! Throughput of the block kernels alone on SmolLM2-135M's weight shapes (30 layers of
//! Q4_1 q/k/v/o/gate/up/down and the Q8_0 output head: 96 MB), one activation vector,
//! per instruction set and thread count, against the machine's read bandwidth.
//!
//! cargo run --release -p langevin-emt --example quant_throughput -- [THREADS=1] [TOKENS=50]

use std::time::Instant;

use langevin_emt::quant::{BlockFormat, Isa, QMatrix, QuantizedActs};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let threads: usize = args.first().map_or(Ok(1), |s| s.parse())?;
    let tokens: usize = args.get(1).map_or(Ok(50), |s| s.parse())?;
    langevin_emt::set_threads(threads)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut mats = Vec::new();
    let (h, i, kv) = (576, 1536, 192);
    let shapes = [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)];
    for _ in 0..30 {
        for &(r, c) in &shapes {
            let w: Vec<f32> = (0..r * c).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            mats.push(QMatrix::quantize(BlockFormat::Q4_1, r, c, &w)?);
        }
    }
    let w: Vec<f32> = (0..49152 * h)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    mats.push(QMatrix::quantize(BlockFormat::Q8_0, 49152, h, &w)?);
    let bytes: usize = mats.iter().map(|m| m.bytes()).sum();
    let x: Vec<f32> = (0..i).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let a_h = QuantizedActs::new(&x[..h], h);
    let a_i = QuantizedActs::new(&x, i);
    for isa in Isa::available() {
        let mut best = f64::INFINITY;
        for _ in 0..tokens {
            let t0 = Instant::now();
            for m in &mats {
                let a = if m.cols() == h { &a_h } else { &a_i };
                std::hint::black_box(m.matmul_with(a, isa, threads)?);
            }
            best = best.min(t0.elapsed().as_secs_f64());
        }
        println!(
            "{}",
            serde_json::json!({
                "isa": format!("{isa:?}"), "threads": threads, "weight_bytes": bytes,
                "best_ms_per_token": best * 1e3, "gb_per_s": bytes as f64 / best / 1e9,
            })
        );
    }
    Ok(())
}
