//! Decode speed (tokens/s) of the decoder on the GGUF model, per weight format and thread
//! count, with and without memories, and the machine's memory-read bandwidth (the bound
//! on tokens/s: weight bytes read per token / bandwidth).
//!
//! cargo run --release -p langevin-emt --example decode_speed -- THREADS [FORMAT=quantized]
//!     [TOKENS=64] [REPEATS=3] [MEMORY_TOKENS=0]
//! FORMAT: quantized (this crate's block kernels, the default), candle (candle's quantized
//! matmul), f32 (dequantized at load). Prints one JSON line per repeat.

use std::time::Instant;

use anyhow::{bail, Context};
use langevin_emt::{
    find_model, generate, EmtConfig, GenerateConfig, Llama, Memory, MemoryBank, MemoryOptions,
    WeightFormat,
};

/// Sequential read bandwidth (GB/s) over a buffer far larger than the caches, with the
/// current rayon pool (best of 5).
fn read_bandwidth(threads: usize) -> f64 {
    let n = 512 << 20 >> 3; // 512 MiB of u64
    let v: Vec<u64> = (0..n as u64).collect();
    let mut best = 0f64;
    for _ in 0..5 {
        let t0 = Instant::now();
        let s: u64 = if threads == 1 {
            v.iter().fold(0u64, |a, &b| a.wrapping_add(b))
        } else {
            use rayon::prelude::*;
            v.par_chunks(1 << 20)
                .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
                .reduce(|| 0, |a, b| a.wrapping_add(b))
        };
        let dt = t0.elapsed().as_secs_f64();
        std::hint::black_box(s);
        best = best.max((n * 8) as f64 / dt / 1e9);
    }
    best
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let threads: usize = args.first().context("THREADS")?.parse()?;
    let format = match args.get(1).map(String::as_str).unwrap_or("quantized") {
        "quantized" => WeightFormat::Quantized,
        "candle" => WeightFormat::CandleQuantized,
        "f32" => WeightFormat::Dequantized,
        f => bail!("unknown format {f:?} (quantized, candle, f32)"),
    };
    let n_gen: usize = args.get(2).map_or(Ok(64), |s| s.parse())?;
    let repeats: usize = args.get(3).map_or(Ok(3), |s| s.parse())?;
    let mem_tokens: usize = args.get(4).map_or(Ok(0), |s| s.parse())?;
    langevin_emt::set_threads(threads)?;
    let path = find_model(None)?;
    let (model, tok) = Llama::load_with(&path, format)?;
    let bw = read_bandwidth(threads);
    let weight_bytes = model.weight_bytes_per_token();
    let mut index_secs = 0.0;
    let bank = if mem_tokens > 0 {
        let filler = "The river bends past the old mill, where the town keeps its records of every harvest. ";
        let mut doc = String::new();
        while tok.encode(&doc)?.len() < mem_tokens {
            doc.push_str(filler);
        }
        let t0 = Instant::now();
        let bank = MemoryBank::from_text(&model, &tok, &doc, &MemoryOptions::default())?;
        index_secs = t0.elapsed().as_secs_f64();
        Some(bank)
    } else {
        None
    };
    let emt = EmtConfig::default();
    let prompt = tok.encode("Once upon a time, in a small village by the sea, there lived")?;
    let cfg = GenerateConfig {
        max_tokens: n_gen + 1,
        eos: None,
        // Every run generates the same number of tokens, loops or not.
        stop_on_repetition: false,
        ..Default::default()
    };
    for _ in 0..repeats {
        let memory = bank.as_ref().map(|b| Memory {
            bank: b,
            config: &emt,
        });
        let g = generate(&model, &prompt, memory, &cfg)?;
        // decode_secs covers the tokens after the first (the prompt pass makes the first).
        let n = g.tokens.len() - 1;
        let tps = n as f64 / g.decode_secs;
        println!(
            "{}",
            serde_json::json!({
                "engine": "langevin-emt",
                "format": format!("{format:?}"),
                "isa": format!("{:?}", langevin_emt::quant::Isa::detect()),
                "threads": threads,
                "memory_tokens": mem_tokens,
                "memories": bank.as_ref().map_or(0, |b| b.len()),
                "index_seconds": index_secs,
                "generated": n,
                "seconds": g.decode_secs,
                "tokens_per_second": tps,
                "weight_bytes_per_token": weight_bytes,
                "read_bandwidth_gb_s": bw,
                "bandwidth_bound_tokens_per_second": bw * 1e9 / weight_bytes as f64,
            })
        );
    }
    Ok(())
}
